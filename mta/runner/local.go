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

	"github.com/tern-mail/tern/internal/address"
	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/internal/privdrop"
	"github.com/tern-mail/tern/mda"
	"github.com/tern-mail/tern/mta/transport"
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

// Local is the local transport: each recipient is handed to a program as
// the account that owns it. An account's mail goes to tern-deliver
// --forward, with the environment qmail-local gives its programs; an
// alias's "|command" and "/path/to/Maildir/" targets run as the owner of
// the aliases file (nobody when that is root), as Postfix does for its
// alias database.
type Local struct {
	Conf    func() *conf.Conf // the control directory as last read
	Program string            // tern-deliver's path
	Enqueue string            // tern-enqueue's path, for .forward (TERN_ENQUEUE_PATH)
	Queue   string            // the queue directory, passed on (TERN_QUEUE)
	ConfDir string            // passed on (TERN_CONF)
	Timeout time.Duration     // one delivery's limit
	Euid    int               // tern-queue's: as root, deliveries run as the account
	// LMTP hands an account's mail to a deliverer kept per uid
	// (tern-deliver --lmtp, lmtp.go) instead of a tern-deliver per
	// recipient. Alias targets run per message either way.
	LMTP   bool
	Stderr io.Writer // the deliverers' log lines; nil is os.Stderr

	pool pool
}

// Deliver runs one delivery program per recipient, one after another.
func (l *Local) Deliver(ctx context.Context, m *transport.Message, _ transport.Hop, rcpts []transport.Recipient) []transport.Result {
	c := l.Conf()
	out := make([]transport.Result, len(rcpts))
	type lmtpBatch struct {
		cred  *syscall.Credential
		rcpts []lmtpRcpt
	}
	var batches []*lmtpBatch // per deliverer uid, in the order first met
	for i, rc := range rcpts {
		var res result
		switch {
		case ctx.Err() != nil:
			res = result{code: 75, status: "4.3.0", answer: "tern-queue is stopping"}
		case strings.HasPrefix(rc.Addr, "|"), strings.HasPrefix(rc.Addr, "/"):
			res = l.runTarget(ctx, c, m, rc)
		default:
			// Routing looked the address up already; the control
			// directory may have changed since.
			rcpt, err := c.LookupUser(rc.Addr)
			switch {
			case errors.Is(err, conf.ErrNoUser):
				res = result{code: 67, status: "5.1.1", answer: "no such user here"}
			case err == nil && rcpt.Account != nil && l.LMTP && (l.Euid != 0 || rcpt.Account.UID > 0):
				// As root, an account without a uid of its own is
				// delivered by tern-deliver as tern-queue runs today:
				// tern-lmtpd never delivers as root.
				cred, bad := l.credential(rcpt.Account.UID, rcpt.Account.GID, rcpt.Account.Name)
				if bad != nil {
					res = *bad
					break
				}
				var b *lmtpBatch
				for _, x := range batches {
					if (x.cred == nil && cred == nil) || (x.cred != nil && cred != nil && x.cred.Uid == cred.Uid && x.cred.Gid == cred.Gid) {
						b = x
					}
				}
				if b == nil {
					b = &lmtpBatch{cred: cred}
					batches = append(batches, b)
				}
				b.rcpts = append(b.rcpts, lmtpRcpt{i: i, addr: rc.Addr})
				continue
			case err == nil && rcpt.Account != nil:
				res = l.runDeliver(ctx, c, m, rc, rcpt)
			case err == nil:
				res = result{code: 75, status: "4.3.0", answer: "the address became an alias during delivery"}
			default:
				res = result{code: 75, status: "4.3.0", answer: err.Error()}
			}
		}
		out[i] = transport.Result{Status: res.status, Temporary: res.code == 75, Answer: res.answer, DiagType: "X-Unix"}
		if res.code == 0 {
			out[i].Status = "2.0.0"
		}
	}
	for _, b := range batches {
		l.deliverLMTP(ctx, c.Hostname, m, b.cred, b.rcpts, out)
	}
	return out
}

// runDeliver runs tern-deliver for an account, as the account, with the
// environment qmail-local gives its programs (HOME, USER, LOCAL, DOMAIN,
// EXT, SENDER, RECIPIENT), and --forward so that ~/.forward is read.
func (l *Local) runDeliver(ctx context.Context, c *conf.Conf, m *transport.Message, rc transport.Recipient, rcpt *conf.Recipient) result {
	acct := rcpt.Account
	cred, res := l.credential(acct.UID, acct.GID, acct.Name)
	if res != nil {
		return *res
	}
	local, domain := address.Split(rc.Addr)
	if domain == "" {
		domain = c.Hostname
	}
	user, _ := address.Split(acct.Name)
	env := []string{
		"HOME=" + acct.Home, "USER=" + user, "LOGNAME=" + user,
		"LOCAL=" + local, "DOMAIN=" + domain, "EXT=" + rcpt.Detail,
		"RECIPIENT=" + rc.Addr,
	}
	args := []string{"--forward", "-r", rc.Addr, "-f", queuedSender(m), acct.Maildir}
	return l.run(ctx, m, l.Program, args, env, cred, acct.Home, nil)
}

// runTarget delivers to an alias's "|command" or "/path/to/Maildir/", as
// the owner of the aliases file (nobody when that is root).
func (l *Local) runTarget(ctx context.Context, c *conf.Conf, m *transport.Message, rc transport.Recipient) result {
	uid, gid, name := -1, -1, ""
	if l.Euid == 0 {
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
	cred, res := l.credential(uid, gid, name)
	if res != nil {
		return *res
	}
	local, domain := address.Split(rc.Parent)
	if domain == "" {
		domain = c.Hostname
	}
	env := []string{"HOME=/", "LOCAL=" + local, "DOMAIN=" + domain, "EXT=", "RECIPIENT=" + rc.Parent}
	if name != "" {
		env = append(env, "USER="+name, "LOGNAME="+name)
	}
	if cmd, ok := strings.CutPrefix(rc.Addr, "|"); ok {
		prep := func(msg io.Reader) (io.Reader, error) {
			return mda.Prepare(msg, mda.Envelope{Sender: queuedSender(m), Recipient: rc.Parent})
		}
		return l.run(ctx, m, "/bin/sh", []string{"-c", cmd}, env, cred, "/", prep)
	}
	return l.run(ctx, m, l.Program, []string{"-r", rc.Parent, "-f", queuedSender(m), rc.Addr}, env, cred, "/", nil)
}

// queuedSender is the sender as the queue and tern-deliver's -f write it:
// "<>" for the null sender.
func queuedSender(m *transport.Message) string {
	if m.Sender == "" {
		return address.NullSender
	}
	return m.Sender
}

// credential says whom to run a delivery as: the account when tern-queue
// is root, itself otherwise (a queue run by a user for themselves, and the
// tests). A uid of 0 is refused, as qmail-lspawn does: mail is not
// delivered with root's rights.
func (l *Local) credential(uid, gid int, name string) (*syscall.Credential, *result) {
	if l.Euid != 0 || uid < 0 {
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
func (l *Local) run(ctx context.Context, m *transport.Message, prog string, args, env []string, cred *syscall.Credential, dir string, prep func(io.Reader) (io.Reader, error)) result {
	msg, err := m.Open()
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
	sender := m.Sender // "" for the null sender, as qmail-local's SENDER has it
	ctx, cancel := context.WithTimeout(ctx, l.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = append([]string{
		// tern-deliver's own directory first: a filter calls it by name,
		// and /usr/local/sbin is not on a user's usual path.
		"PATH=" + filepath.Dir(l.Program) + ":/usr/local/bin:/usr/bin:/bin",
		"SENDER=" + sender,
		"TERN_QUEUE=" + l.Queue, "TERN_CONF=" + l.ConfDir, EnqueuePathEnv + "=" + l.Enqueue,
		"TERN_QID=" + m.ID,
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
	answer := out.failureLine()
	var exit *exec.ExitError
	code := 0
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return result{code: 75, status: "4.4.7", answer: fmt.Sprintf("%s did not finish within %s", filepath.Base(prog), l.Timeout)}
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

// failureLine is the line of a program's output that says what failed
// (issue #19): the last "prog: fatal: ..." or "prog: error: ..." line, as
// tern's programs and s6's write them, not a "hint:" after it; else the
// last line that is not a hint; else the last line.
func (t *tailBuffer) failureLine() string {
	lines := bytes.Split(bytes.TrimSpace(t.b), []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		if l := string(lines[i]); strings.Contains(l, ": fatal: ") || strings.Contains(l, ": error: ") {
			return strings.TrimSpace(l)
		}
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if l := string(lines[i]); !strings.Contains(l, ": hint: ") && strings.TrimSpace(l) != "" {
			return strings.TrimSpace(l)
		}
	}
	return strings.TrimSpace(string(lines[len(lines)-1]))
}

// EnqueuePathEnv names tern-enqueue's path in the environment of
// tern-queue and of the programs it runs. TERN_ENQUEUE is tern-smtpd's
// filter (a program to pipe each message to): one name for one meaning
// (issue #19).
const EnqueuePathEnv = "TERN_ENQUEUE_PATH"
