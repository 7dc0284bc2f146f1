package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/internal/privdrop"
	"github.com/tern-mail/tern/mda"
	"github.com/tern-mail/tern/mta"
	"github.com/tern-mail/tern/mta/queue"
)

// result is what one delivery program answered.
type result struct {
	code   int    // its exit status, sysexits
	status string // enhanced status code (RFC 3463)
	answer string // its last line of output
}

// enhancedRe finds a status code written qmail's way, "(#5.1.1)", at the
// end of a tern-deliver message.
var enhancedRe = regexp.MustCompile(`#([245]\.[0-9]{1,3}\.[0-9]{1,3})`)

// statusOf maps an exit status to an RFC 3463 code when the program did
// not name one.
func statusOf(code int) string {
	switch code {
	case 0:
		return "2.0.0"
	case 75:
		return "4.3.0"
	case 67:
		return "5.1.1" // bad destination mailbox address
	case 65:
		return "5.6.0" // other media error: a loop, a bad message
	case 64, 78:
		return "5.3.5" // system incorrectly configured
	case 73, 74, 77:
		return "5.2.0" // other mailbox status: cannot write it
	}
	return "5.3.0" // other mail system status
}

// runDeliver runs tern-deliver for an account, as the account, with the
// environment qmail-local gives its programs (HOME, USER, LOCAL, DOMAIN,
// EXT, SENDER, RECIPIENT), and --forward so that ~/.forward is read.
func (r *Runner) runDeliver(ctx context.Context, c *conf.Conf, e *queue.Envelope, rc *queue.Recipient, rcpt *conf.Recipient) result {
	acct := rcpt.Account
	cred, res := r.credential(acct.UID, acct.GID, acct.Name)
	if res != nil {
		return *res
	}
	local, domain := mta.SplitAddress(rc.Addr)
	if domain == "" {
		domain = c.Hostname
	}
	user, _ := mta.SplitAddress(acct.Name)
	env := []string{
		"HOME=" + acct.Home, "USER=" + user, "LOGNAME=" + user,
		"LOCAL=" + local, "DOMAIN=" + domain, "EXT=" + rcpt.Detail,
		"RECIPIENT=" + rc.Addr,
	}
	args := []string{"--forward", "-r", rc.Addr, "-f", e.Sender, acct.Maildir}
	return r.run(ctx, e, rc, r.o.Deliver, args, env, cred, acct.Home, nil)
}

// runTarget delivers to an alias's "|command" or "/path/to/Maildir/", as
// the owner of the aliases file (nobody when that is root), as Postfix
// does for its alias database.
func (r *Runner) runTarget(ctx context.Context, c *conf.Conf, e *queue.Envelope, rc *queue.Recipient) result {
	uid, gid, name := -1, -1, ""
	if r.env.Euid == 0 {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(c.Dir, "aliases"), &st); err == nil && st.Uid != 0 {
			uid, gid = int(st.Uid), int(st.Gid)
		} else {
			u, g, err := privdrop.Lookup("nobody")
			if err != nil {
				return result{code: 75, status: "4.3.5", answer: "no user nobody to run alias targets as: " + err.Error()}
			}
			uid, gid, name = u, g, "nobody"
		}
	}
	cred, res := r.credential(uid, gid, name)
	if res != nil {
		return *res
	}
	local, domain := mta.SplitAddress(rc.Parent)
	if domain == "" {
		domain = c.Hostname
	}
	env := []string{"HOME=/", "LOCAL=" + local, "DOMAIN=" + domain, "EXT=", "RECIPIENT=" + rc.Parent}
	if name != "" {
		env = append(env, "USER="+name, "LOGNAME="+name)
	}
	if cmd, ok := strings.CutPrefix(rc.Addr, "|"); ok {
		prep := func(msg io.Reader) (io.Reader, error) {
			return mda.Prepare(msg, mda.Envelope{Sender: e.Sender, Recipient: rc.Parent})
		}
		return r.run(ctx, e, rc, "/bin/sh", []string{"-c", cmd}, env, cred, "/", prep)
	}
	return r.run(ctx, e, rc, r.o.Deliver, []string{"-r", rc.Parent, "-f", e.Sender, rc.Addr}, env, cred, "/", nil)
}

// credential says whom to run a delivery as: the account when tern-queue
// is root, itself otherwise (a queue run by a user for themselves, and the
// tests). A uid of 0 is refused, as qmail-lspawn does: mail is not
// delivered with root's rights.
func (r *Runner) credential(uid, gid int, name string) (*syscall.Credential, *result) {
	if r.env.Euid != 0 || uid < 0 {
		return nil, nil
	}
	if uid == 0 {
		return nil, &result{code: 75, status: "4.3.5", answer: fmt.Sprintf("will not deliver as root for %s: give the account its own uid in the users file", name)}
	}
	if gid < 0 {
		gid = uid
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// run runs one delivery program with the message on stdin and turns its
// exit status into a result.
func (r *Runner) run(ctx context.Context, e *queue.Envelope, rc *queue.Recipient, prog string, args, env []string, cred *syscall.Credential, dir string, prep func(io.Reader) (io.Reader, error)) result {
	msg, err := r.q.Message(e)
	if err != nil {
		return result{code: 75, status: "4.3.0", answer: "open queued message: " + err.Error()}
	}
	defer msg.Close()
	var stdin io.Reader = msg
	if prep != nil {
		if stdin, err = prep(msg); err != nil {
			if errors.Is(err, mda.ErrLoop) {
				return result{code: 65, status: "5.4.6", answer: err.Error()}
			}
			return result{code: 75, status: "4.3.0", answer: err.Error()}
		}
	}
	sender := e.Sender
	if sender == mta.NullSender {
		sender = "" // qmail-local's SENDER for the null sender
	}
	ctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = append([]string{
		// tern-deliver's own directory first: a filter calls it by name,
		// and /usr/local/sbin is not on a user's usual path.
		"PATH=" + filepath.Dir(r.o.Deliver) + ":/usr/local/bin:/usr/bin:/bin",
		"SENDER=" + sender,
		"TERN_QUEUE=" + r.q.Dir, "TERN_CONF=" + r.o.Conf, "TERN_ENQUEUE=" + r.o.Enqueue,
		"TERN_QID=" + e.ID,
	}, env...)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		dir = "/"
	}
	cmd.Dir = dir
	cmd.Stdin = stdin
	out := &tailBuffer{max: 2048}
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so that a timeout kills the whole pipeline a
	// .forward may have started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	answer := out.lastLine()
	var exit *exec.ExitError
	code := 0
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return result{code: 75, status: "4.4.7", answer: fmt.Sprintf("%s did not finish within %s", filepath.Base(prog), r.o.Timeout)}
	case errors.As(err, &exit):
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			// A crash is not the message's fault: try again (qmail does).
			return result{code: 75, status: "4.3.0", answer: fmt.Sprintf("%s killed by signal %s; %s", filepath.Base(prog), ws.Signal(), answer)}
		}
		code = exit.ExitCode()
	default:
		return result{code: 75, status: "4.3.0", answer: fmt.Sprintf("run %s: %v", prog, err)}
	}
	if code != 0 && code != 75 && prog == "/bin/sh" {
		// A command's status other than 75 is a permanent failure, however
		// it is numbered.
		code = 69
	}
	status := statusOf(code)
	if m := enhancedRe.FindAllStringSubmatch(answer, -1); m != nil && code != 0 {
		s := m[len(m)-1][1]
		if (code == 75) == (s[0] == '4') {
			status = s
		}
	}
	if answer == "" {
		answer = fmt.Sprintf("%s exited %d", filepath.Base(prog), code)
		if code == 0 {
			answer = "delivered"
		}
	}
	return result{code: code, status: status, answer: answer}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) lastLine() string {
	lines := bytes.Split(bytes.TrimSpace(t.b), []byte("\n"))
	return strings.TrimSpace(string(lines[len(lines)-1]))
}
