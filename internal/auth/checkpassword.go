package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Checkpassword authenticates through an external program with the
// checkpassword interface of qmail-pop3d's world
// (https://cr.yp.to/checkpwd/interface.html), so an installation can keep
// the password program it has (checkpassword, checkpassword-pam, vchkpw).
//
// The program is run as "PROG SUBPROGRAM..." with "user\0password\0
// timestamp\0" on fd 3. On success it sets USER and HOME (and, run as root,
// changes to the user's uid and gid) and runs the subprogram; it exits 1
// for a wrong password and 111 for a temporary failure. tern's subprogram
// is a /bin/sh one-liner that prints $USER, $HOME and its uid and gid, NUL
// separated, which is how tern learns what the program decided: run as
// root, a program that drops privileges yields the user's uid and gid; run
// as anyone else, the uid and gid are the server's own.
type Checkpassword struct {
	Prog    string        // the program's path
	Args    []string      // arguments before the subprogram, if any
	Timeout time.Duration // 0 means 30 s
	Shell   string        // the shell for the subprogram; "" means /bin/sh
	// Now gives the timestamp sent on fd 3 (APOP's, for POP3; here only
	// a unique string); nil means time.Now.
	Now func() time.Time
}

// reportScript prints what the checkpassword program left for its child.
const reportScript = `printf '%s\0%s\0%s\0%s\0' "$USER" "$HOME" "$(id -u)" "$(id -g)"`

// Authenticate implements Authenticator.
func (c *Checkpassword) Authenticate(ctx context.Context, user, pass string, remote netip.Addr) (*Account, error) {
	// djb's checkpassword reads at most 512 bytes from fd 3; a longer
	// name or password cannot be right, and NUL would shift the fields.
	if user == "" || pass == "" || len(user)+len(pass) > 400 || strings.ContainsRune(user+pass, 0) {
		return nil, ErrAuthFailed
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	r, w, err := os.Pipe()
	if err != nil {
		return nil, temporary("checkpassword %s: pipe: %w", c.Prog, err)
	}
	defer r.Close()
	defer w.Close()
	shell := c.Shell
	if shell == "" {
		shell = "/bin/sh"
	}
	args := append(append([]string(nil), c.Args...), shell, "-c", reportScript)
	cmd := exec.CommandContext(ctx, c.Prog, args...)
	cmd.ExtraFiles = []*os.File{r} // fd 3
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "PROTO=TCP"}
	if remote.IsValid() {
		env = append(env, "TCPREMOTEIP="+remote.Unmap().String())
	}
	cmd.Env = env
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	// Its own process group, so a timeout kills whatever it started too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return nil, temporary("start checkpassword %s: %w", c.Prog, err)
	}
	r.Close()
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	ts := fmt.Sprintf("<%d.%d@tern>", os.Getpid(), now().UnixNano())
	_, werr := w.Write([]byte(user + "\x00" + pass + "\x00" + ts + "\x00"))
	w.Close()
	err = cmd.Wait()
	if ctx.Err() != nil {
		return nil, temporary("checkpassword %s: no answer within %v", c.Prog, timeout)
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && exit.ExitCode() == 1:
		return nil, ErrAuthFailed
	case errors.As(err, &exit) && exit.ExitCode() == 111:
		return nil, temporary("checkpassword %s exited 111: %s", c.Prog, firstLine(errOut.String()))
	case errors.As(err, &exit):
		// Anything else (2 is "misused", a signal a crash) is not the
		// client's fault: never call it a wrong password.
		return nil, temporary("checkpassword %s: %v: %s", c.Prog, err, firstLine(errOut.String()))
	default:
		return nil, temporary("run checkpassword %s: %w", c.Prog, err)
	}
	if werr != nil {
		return nil, temporary("checkpassword %s: write fd 3: %w", c.Prog, werr)
	}
	f := strings.Split(out.String(), "\x00")
	if len(f) != 5 || f[4] != "" {
		return nil, temporary("checkpassword %s: its subprogram did not run as expected (output %q)", c.Prog, firstLine(out.String()))
	}
	uid, err1 := strconv.Atoi(strings.TrimSpace(f[2]))
	gid, err2 := strconv.Atoi(strings.TrimSpace(f[3]))
	if err1 != nil || err2 != nil {
		return nil, temporary("checkpassword %s: uid %q gid %q", c.Prog, f[2], f[3])
	}
	name, home := f[0], f[1]
	if name == "" {
		name = user
	}
	if home == "" || home[0] != '/' {
		return nil, temporary("checkpassword %s: no absolute HOME for %s", c.Prog, name)
	}
	return &Account{Name: name, UID: uid, GID: gid, Home: home, Maildir: MaildirOf(home)}, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
