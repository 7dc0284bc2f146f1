package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/tern-mail/tern/mta/transport"
)

// Deliverer limits (tern-queue(8), --local-delivery lmtp). Why a
// deliverer lives for many messages: a process per message costs more CPU
// than the delivery itself (issue #17); Postfix's local(8) lives for
// max_use messages or max_idle seconds for the same reason.
const (
	// DelivererIdle is how long a deliverer waits for its next message
	// before tern-queue lets it go.
	DelivererIdle = time.Minute
	// DelivererMaxMessages is how many messages one deliverer takes
	// before it is let go and a fresh one started.
	DelivererMaxMessages = 1000
	// DeliverersPerUID bounds the deliverers kept for one uid: each takes
	// one message at a time, so this is how many of that uid's messages
	// are delivered at once.
	DeliverersPerUID = 4
	// quitTimeout bounds a deliverer's goodbye (QUIT and its exit).
	quitTimeout = 10 * time.Second
)

// deliverer is one tern-lmtpd process, as one uid, that tern-queue feeds
// over a socket pair on its standard input and output.
type deliverer struct {
	key    string
	cmd    *exec.Cmd
	conn   net.Conn
	client *smtp.Client
	used   int           // messages handed to it
	idle   *time.Timer   // lets it go when it waits too long
	exited chan struct{} // closed when the process is reaped
}

// kill ends the deliverer's process group and its connection at once.
func (d *deliverer) kill() {
	syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	d.conn.Close()
}

// quit says QUIT and waits a while for the process to end; then kills it.
func (d *deliverer) quit() {
	t := time.AfterFunc(quitTimeout, d.kill)
	d.client.Quit()
	d.conn.Close()
	<-d.exited
	t.Stop()
}

// pool is the deliverers per uid, busy and idle.
type pool struct {
	mu     sync.Mutex
	slots  map[string]chan struct{} // per key: one token per busy deliverer
	idle   map[string][]*deliverer
	closed bool
}

// slot returns key's semaphore.
func (p *pool) slot(key string) chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.slots == nil {
		p.slots, p.idle = map[string]chan struct{}{}, map[string][]*deliverer{}
	}
	s := p.slots[key]
	if s == nil {
		s = make(chan struct{}, DeliverersPerUID)
		p.slots[key] = s
	}
	return s
}

// takeIdle returns an idle deliverer for key, or nil. One that exited
// while it waited (killed by someone) is dropped rather than handed a
// message it would only defer.
func (p *pool) takeIdle(key string) *deliverer {
	p.mu.Lock()
	defer p.mu.Unlock()
	for list := p.idle[key]; len(list) > 0; list = p.idle[key] {
		d := list[len(list)-1]
		p.idle[key] = list[:len(list)-1]
		d.idle.Stop()
		select {
		case <-d.exited:
			d.conn.Close()
			continue
		default:
		}
		return d
	}
	return nil
}

// putIdle keeps d for key's next message, or lets it go when it has done
// its share or the pool is closed.
func (p *pool) putIdle(d *deliverer) {
	p.mu.Lock()
	if p.closed || d.used >= DelivererMaxMessages {
		p.mu.Unlock()
		d.quit()
		return
	}
	p.idle[d.key] = append(p.idle[d.key], d)
	if d.idle == nil {
		d.idle = time.AfterFunc(DelivererIdle, func() { p.retire(d) })
	} else {
		d.idle.Reset(DelivererIdle)
	}
	p.mu.Unlock()
}

// retire lets d go if it is still idle.
func (p *pool) retire(d *deliverer) {
	p.mu.Lock()
	list := p.idle[d.key]
	i := -1
	for j, x := range list {
		if x == d {
			i = j
		}
	}
	if i < 0 {
		p.mu.Unlock()
		return
	}
	p.idle[d.key] = append(list[:i], list[i+1:]...)
	p.mu.Unlock()
	d.quit()
}

// close lets every idle deliverer go, and the busy ones when they finish.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	var all []*deliverer
	for k, list := range p.idle {
		for _, d := range list {
			d.idle.Stop()
		}
		all = append(all, list...)
		delete(p.idle, k)
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, d := range all {
		wg.Add(1)
		go func() { defer wg.Done(); d.quit() }()
	}
	wg.Wait()
}

// Close lets the deliverers go: each is told QUIT and waited for.
func (l *Local) Close() { l.pool.close() }

// lmtpRcpt is one account recipient of a message for a deliverer.
type lmtpRcpt struct {
	i    int    // its index in Deliver's recipients
	addr string // the address as queued: the account's, +detail kept
}

// deliverLMTP hands m to a deliverer running as cred, for rcpts, and
// writes each recipient's answer into out.
func (l *Local) deliverLMTP(ctx context.Context, hostname string, m *transport.Message, cred *syscall.Credential, rcpts []lmtpRcpt, out []transport.Result) {
	key := "self"
	if cred != nil {
		key = fmt.Sprintf("%d:%d", cred.Uid, cred.Gid)
	}
	fail := func(res transport.Result) {
		for _, r := range rcpts {
			if out[r.i].Status == "" {
				out[r.i] = res
			}
		}
	}
	slot := l.pool.slot(key)
	select {
	case slot <- struct{}{}:
	case <-ctx.Done():
		fail(transport.Result{Status: "4.3.0", Temporary: true, Answer: "tern-queue is stopping", DiagType: "X-Unix"})
		return
	}
	defer func() { <-slot }()
	d := l.pool.takeIdle(key)
	if d == nil {
		var err error
		if d, err = l.startDeliverer(ctx, key, hostname, cred); err != nil {
			fail(transport.Result{Status: "4.3.0", Temporary: true, Answer: err.Error(), DiagType: "X-Unix"})
			return
		}
	}
	d.used++
	ok := l.transact(ctx, d, m, rcpts, out)
	if !ok {
		d.kill()
		<-d.exited
		return
	}
	l.pool.putIdle(d)
}

// transact is one LMTP transaction (RFC 2033 §4.2): MAIL, a RCPT per
// recipient, DATA, and an answer per accepted recipient. It reports
// whether d can take another message; when not, every recipient left
// without an answer is deferred, so that delivery stays at least once.
func (l *Local) transact(ctx context.Context, d *deliverer, m *transport.Message, rcpts []lmtpRcpt, out []transport.Result) bool {
	ctx, cancel := context.WithTimeout(ctx, l.Timeout)
	defer cancel()
	stop := context.AfterFunc(ctx, d.kill)
	lost := func(err error) bool {
		stop()
		res := transport.Result{Status: "4.3.0", Temporary: true, DiagType: "X-Unix",
			Answer: fmt.Sprintf("the deliverer (pid %d) went away: %v", d.cmd.Process.Pid, err)}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
			res.Status, res.Answer = "4.4.7", fmt.Sprintf("the deliverer (pid %d) did not answer within %s", d.cmd.Process.Pid, l.Timeout)
		}
		for _, r := range rcpts {
			if out[r.i].Status == "" {
				out[r.i] = res
			}
		}
		return false
	}
	msg, err := m.Open()
	if err != nil {
		stop()
		for _, r := range rcpts {
			out[r.i] = transport.Result{Status: "4.3.0", Temporary: true, Answer: "open queued message: " + err.Error(), DiagType: "X-Unix"}
		}
		return true
	}
	defer msg.Close()
	var opts *smtp.MailOptions
	if m.SMTPUTF8 {
		opts = &smtp.MailOptions{UTF8: true}
	}
	if err := d.client.Mail(m.Sender, opts); err != nil {
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			return lost(err)
		}
		for _, r := range rcpts {
			out[r.i] = lmtpResult(se.Code, se.EnhancedCode, se.Message)
		}
		return stop() && d.client.Reset() == nil
	}
	// One RCPT per address: the answers after DATA are told apart by
	// address (RFC 2033 §4.2), so a recipient queued twice is delivered
	// once and both get its answer.
	first := map[string]int{}
	var accepted []string
	for _, r := range rcpts {
		if _, dup := first[r.addr]; dup {
			continue
		}
		first[r.addr] = r.i
		if err := d.client.Rcpt(r.addr, nil); err != nil {
			var se *smtp.SMTPError
			if !errors.As(err, &se) {
				return lost(err)
			}
			out[r.i] = lmtpResult(se.Code, se.EnhancedCode, se.Message)
			continue
		}
		accepted = append(accepted, r.addr)
	}
	copyDup := func() {
		for _, r := range rcpts {
			if j := first[r.addr]; j != r.i {
				out[r.i] = out[j]
			}
		}
	}
	if len(accepted) == 0 {
		copyDup()
		return stop() && d.client.Reset() == nil
	}
	w, err := d.client.Data()
	if err != nil {
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			return lost(err)
		}
		for _, a := range accepted {
			out[first[a]] = lmtpResult(se.Code, se.EnhancedCode, se.Message)
		}
		copyDup()
		return stop() && d.client.Reset() == nil
	}
	// The writer turns the queue's LF into CRLF and dot-stuffs
	// (RFC 5321 §4.5.2).
	if _, err := io.Copy(w, msg); err != nil {
		return lost(err)
	}
	answers, err := w.CloseWithLMTPResponse()
	for addr, a := range answers {
		enh, text := smtp.EnhancedCode{2, 0, 0}, a.StatusText
		// go-smtp leaves the enhanced code in a success's text.
		if code, rest, ok := strings.Cut(text, " "); ok && successCodeRe.MatchString(code) {
			fmt.Sscanf(code, "%d.%d.%d", &enh[0], &enh[1], &enh[2])
			text = rest
		}
		out[first[addr]] = lmtpResult(250, enh, text)
	}
	var perRcpt smtp.LMTPDataError
	if errors.As(err, &perRcpt) {
		for addr, se := range perRcpt {
			out[first[addr]] = lmtpResult(se.Code, se.EnhancedCode, se.Message)
		}
	}
	copyDup()
	if _, only := err.(smtp.LMTPDataError); err != nil && !only {
		return lost(err)
	}
	return stop()
}

// successCodeRe is an enhanced status code of success (RFC 3463 §2).
var successCodeRe = regexp.MustCompile(`^2\.[0-9]{1,3}\.[0-9]{1,3}$`)

// lmtpResult turns one LMTP reply into a recipient's result: 2xx
// delivered, 4xx deferred, 5xx failed (RFC 5321 §4.2.1).
func lmtpResult(code int, enh smtp.EnhancedCode, text string) transport.Result {
	class := code / 100
	status := fmt.Sprintf("%d.0.0", class)
	if enh[0] == class {
		status = fmt.Sprintf("%d.%d.%d", enh[0], enh[1], enh[2])
	}
	res := transport.Result{Status: status, Reply: code, DiagType: "smtp", Answer: fmt.Sprintf("%d %s %s", code, status, text)}
	switch class {
	case 2, 5:
	default:
		// 4xx, and a reply nobody classified, is tried again.
		res.Temporary = true
		if class != 4 {
			res.Status = "4.3.0"
		}
	}
	return res
}

// startDeliverer starts tern-lmtpd (through tern-deliver --lmtp, so that
// --deliver names the one program) as cred, with a socket pair on its
// standard input and output, and says LHLO.
func (l *Local) startDeliverer(ctx context.Context, key, hostname string, cred *syscall.Credential) (*deliverer, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("start a deliverer: socketpair: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "lmtp"), os.NewFile(uintptr(fds[1]), "lmtp")
	defer theirs.Close()
	conn, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		theirs.Close()
		return nil, fmt.Errorf("start a deliverer: %w", err)
	}
	cmd := exec.Command(l.Program, "--lmtp", "--conf", l.ConfDir, "--session-timeout", "0")
	cmd.Env = []string{
		"PATH=" + filepath.Dir(l.Program) + ":/usr/local/bin:/usr/bin:/bin",
		"TERN_QUEUE=" + l.Queue, "TERN_CONF=" + l.ConfDir, EnqueuePathEnv + "=" + l.Enqueue,
	}
	cmd.Dir = "/"
	cmd.Stdin, cmd.Stdout = theirs, theirs
	cmd.Stderr = l.Stderr
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	// Its own process group, so that a kill reaches what a ~/.forward
	// started too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	cmd.WaitDelay = quitTimeout
	if err := cmd.Start(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("start a deliverer: %w", err)
	}
	d := &deliverer{key: key, cmd: cmd, conn: conn, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(d.exited) }()
	d.client = smtp.NewClientLMTP(conn)
	// The per-message deadline in transact bounds every command; the
	// client's own timeouts, renewed per command, are only a backstop
	// behind it.
	d.client.CommandTimeout, d.client.SubmissionTimeout = l.Timeout+quitTimeout, l.Timeout+quitTimeout
	ctx, cancel := context.WithTimeout(ctx, l.Timeout)
	defer cancel()
	stop := context.AfterFunc(ctx, d.kill)
	err = d.client.Hello(hostname)
	if !stop() || err != nil {
		d.kill()
		<-d.exited
		return nil, fmt.Errorf("start a deliverer (%s --lmtp): LHLO: %v", l.Program, err)
	}
	return d, nil
}
