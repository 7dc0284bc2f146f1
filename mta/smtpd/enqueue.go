package smtpd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tern-mail/tern/internal/sysexit"
	"github.com/tern-mail/tern/mta/enqueue"
	"github.com/tern-mail/tern/mta/queue"
)

// Envelope is what the queue is told besides the message.
type Envelope struct {
	ID         string              // the queue ID, when the Enqueuer made one (IDMaker)
	Sender     string              // "" is the null sender
	Recipients []enqueue.Recipient // with their DSN parameters
	// MAIL FROM's parameters: SMTPUTF8, BODY, ENVID, RET, REQUIRETLS.
	enqueue.Conversation
	// EightBit: the text, as handed to the queue, has an octet over 127;
	// the checker found it on its way through.
	EightBit bool
	Env      []string // "K=V" for the enqueue command: TERN_CID, TCPREMOTEIP, TERN_AUTH_USER
}

// Enqueuer puts a message into the queue. It returns the queue id, or an
// error; an *EnqueueError that is not Temporary refuses the message for
// good, anything else asks the client to try again.
type Enqueuer interface {
	Enqueue(ctx context.Context, env Envelope, msg io.Reader) (qid string, err error)
}

// IDMaker is an Enqueuer that names the queue entry before the message is
// read, so that the Received line carries the queue ID (RFC 5321 §4.4's
// "id"), as it does with Postfix and qmail. A pipe to a program cannot:
// the program makes the ID.
type IDMaker interface {
	NewID() (string, error)
}

// EnqueueError is the verdict of the enqueue command.
type EnqueueError struct {
	Status    int  // exit status; -1 if it did not exit (killed, or not started)
	Temporary bool // 75, a signal, or no start at all
	Err       error
}

func (e *EnqueueError) Error() string { return e.Err.Error() }
func (e *EnqueueError) Unwrap() error { return e.Err }

// Pipe runs the enqueue command for each message, qmail-queue style:
// message on stdin, "-v -f SENDER -- RCPT..." as arguments, the verdict in
// the exit status (0 queued, 75 try again, anything else refused), the
// queue id printed as "qid=ID" on stdout. Any program keeping that
// contract can stand in front of tern-enqueue: a spam or virus filter that
// adds a header and runs tern-enqueue "$@".
type Pipe struct {
	Command string   // program path
	Env     []string // its environment, before the envelope's additions
	// Timeout bounds one run; zero means 10 minutes, the time RFC 5321
	// §4.5.3.2.6 gives the client to wait for the reply to the final
	// dot.
	Timeout time.Duration
}

// Enqueue implements Enqueuer.
func (p *Pipe) Enqueue(ctx context.Context, env Envelope, msg io.Reader) (string, error) {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.Command, pipeArgs(env)...)
	cmd.Env = append(withoutEnvelopeVars(p.Env), env.Env...)
	cmd.Stdin = msg
	var stdout capped
	stdout.max = 4096
	// What failed is said last (a filter's chatter comes first): the end
	// of standard error is kept.
	stderr := tail{max: 4096}
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// A filter may start helpers of its own: on timeout the whole group
	// goes, so nothing is left holding the message.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	why := failureLine(stderr.String())
	if why != "" {
		why = ": " + why
	}
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			status := exit.ExitCode()
			if status < 0 {
				// Killed (a timeout, the OOM killer): nothing says
				// the message is bad.
				return "", &EnqueueError{Status: -1, Temporary: true, Err: fmt.Errorf("%s: %v%s", p.Command, err, why)}
			}
			return "", &EnqueueError{Status: status, Temporary: status == sysexit.TempFail, Err: fmt.Errorf("%s exited %d%s", p.Command, status, why)}
		}
		// Not started: our configuration, not the message.
		return "", &EnqueueError{Status: -1, Temporary: true, Err: fmt.Errorf("run %s: %w", p.Command, err)}
	}
	if qid := qidLine(stdout.String()); qid != "" {
		return qid, nil
	}
	// Queued, as the status says, but nameless: a filter that swallowed
	// the output. The message is safe; say so.
	return "unknown", nil
}

// pipeArgs is the enqueue command's command line for env: tern-enqueue's
// flags for MAIL FROM's parameters, and a recipient with its RCPT
// parameters in one argument (see enqueue.ParseRecipient). Values go in
// the --flag=value form, which no value can be mistaken out of.
func pipeArgs(env Envelope) []string {
	args := []string{"-v", "-f", env.Sender}
	c := env.Conversation
	if c.SMTPUTF8 {
		args = append(args, "--smtputf8")
	}
	if c.Body != "" {
		args = append(args, "--body="+c.Body)
	}
	if c.EnvID != "" {
		args = append(args, "--envid="+c.EnvID)
	}
	if c.Ret != "" {
		args = append(args, "--ret="+c.Ret)
	}
	if c.RequireTLS {
		args = append(args, "--requiretls")
	}
	args = append(args, "--")
	for _, r := range env.Recipients {
		args = append(args, r.Arg())
	}
	return args
}

// withoutEnvelopeVars is env without the variables that would set
// tern-enqueue's flags about one message (TERN_FROM, TERN_ENVID, ...):
// the envelope comes from the SMTP conversation alone, whatever the
// server's own environment holds.
func withoutEnvelopeVars(env []string) []string {
	drop := map[string]bool{}
	for _, v := range enqueue.EnvelopeVars() {
		drop[v] = true
	}
	out := make([]string, 0, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if !drop[k] {
			out = append(out, kv)
		}
	}
	return out
}

// qidLine finds the first line "qid=ID" in out, ID being 1 to 64
// printable ASCII characters; "" when there is none.
func qidLine(out string) string {
	for _, line := range strings.Split(out, "\n") {
		id, ok := strings.CutPrefix(strings.TrimSuffix(line, "\r"), "qid=")
		if !ok || len(id) < 1 || len(id) > 64 {
			continue
		}
		if strings.IndexFunc(id, func(r rune) bool { return r < '!' || r > '~' }) < 0 {
			return id
		}
	}
	return ""
}

// failureLine picks from a child's standard error the line that says
// what failed: the last "prog: fatal: ..." or "prog: error: ..." line, as
// tern's programs (and s6's and age's) write it, else the last line that
// is not a hint or a note. A usage error ends in "prog: hint: see 'prog
// --help'", which names no cause, and the fatal line before it does.
func failureLine(stderr string) string {
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if level := logLevel(lines[i]); level == "fatal" || level == "error" {
			return strings.TrimSpace(lines[i])
		}
	}
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if level := logLevel(l); l != "" && level != "hint" && level != "note" {
			return l
		}
	}
	return ""
}

// logLevel is the word after the program's name in a "prog: level: ..."
// line, or "".
func logLevel(line string) string {
	prog, rest, ok := strings.Cut(line, ": ")
	if !ok || prog == "" || strings.ContainsAny(prog, " \t") {
		return ""
	}
	level, _, ok := strings.Cut(rest, ": ")
	if !ok || strings.ContainsAny(level, " \t") {
		return ""
	}
	return level
}

// tail keeps the last max bytes written to it.
type tail struct {
	buf []byte
	max int
}

func (t *tail) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	if len(t.buf) > t.max {
		return string(t.buf[len(t.buf)-t.max:])
	}
	return string(t.buf)
}

// capped keeps the first max bytes written to it.
type capped struct {
	bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.Len(); room > 0 {
		c.Buffer.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// Direct queues each message in this process with tern-enqueue's own code
// (enqueue.Submit): the same header additions, the same checks, the same
// fsyncs before the answer, and the same verdicts as the program's exit
// status would give — without starting a process per message, which costs
// more than the queue write itself. It is what tern-smtpd uses unless
// --enqueue names a program to pipe to (a filter, or tern-enqueue itself).
type Direct struct {
	Queue string           // queue directory
	Now   func() time.Time //
	// Host is this host's name, as the control directory (already loaded,
	// and watched) gives it: not read again for every message.
	Host func() string

	mu sync.Mutex
	q  *queue.Queue // opened at the first message, and again after a failure
}

// Enqueue implements Enqueuer. The envelope's Env is for a program's
// environment and has no use here.
func (d *Direct) Enqueue(_ context.Context, env Envelope, msg io.Reader) (string, error) {
	q, err := d.open()
	if err != nil {
		return "", &EnqueueError{Status: sysexit.TempFail, Temporary: true, Err: err}
	}
	qid, err := enqueue.Submit(q, enqueue.Options{
		ID:           env.ID,
		Host:         d.Host(),
		Sender:       env.Sender,
		SenderSet:    true,
		Recipients:   env.Recipients,
		Conversation: env.Conversation,
		Scanned:      true,
		EightBit:     env.EightBit,
	}, enqueue.Env{Stdin: msg, Now: d.Now})
	if err != nil {
		status := sysexit.Code(err)
		return "", &EnqueueError{Status: status, Temporary: status == sysexit.TempFail, Err: fmt.Errorf("queue: %w", err)}
	}
	return qid, nil
}

// NewID implements IDMaker.
func (d *Direct) NewID() (string, error) {
	q, err := d.open()
	if err != nil {
		return "", err
	}
	return q.NewID(d.Now()), nil
}

// Open opens the queue now: tern-smtpd does before it drops privileges,
// so it keeps a descriptor of incoming/ to fsync (see queue.Open). Without
// it, the first message opens the queue.
func (d *Direct) Open() error {
	_, err := d.open()
	return err
}

// KeepReady makes the queue keep n prepared entries (queue.KeepReady):
// for a process that serves every connection itself, once it runs as the
// user it serves as.
func (d *Direct) KeepReady(n int) error {
	q, err := d.open()
	if err != nil {
		return err
	}
	q.KeepReady(n)
	return nil
}

// Reserve implements Reserver: the queue's free space (queue.Reserve).
func (d *Direct) Reserve(maxSize int64) error {
	q, err := d.open()
	if err != nil {
		return err
	}
	return q.Reserve(maxSize)
}

// Close removes the prepared entries not used.
func (d *Direct) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.q == nil {
		return nil
	}
	return d.q.Close()
}

// open opens the queue once: one Queue gives IDs that differ even when two
// connections queue in the same nanosecond. A queue that cannot be opened
// (not mounted yet) is a temporary failure of that message, not of the
// server.
func (d *Direct) open() (*queue.Queue, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.q == nil {
		q, err := queue.Open(d.Queue)
		if err != nil {
			return nil, err
		}
		d.q = q
	}
	return d.q, nil
}
