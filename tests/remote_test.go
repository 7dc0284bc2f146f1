package tests

import (
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/tern-mail/tern/internal/testdns"
)

// sink is a go-smtp server on a 127.0.0.x address acting as the MX host
// of a remote domain: it keeps what it received, byte for byte, and
// answers as the test says.
type sink struct {
	t    *testing.T
	ip   string
	port int
	srv  *smtp.Server

	// rcpt and data decide answers; nil accepts. gate, when set, holds
	// each DATA until it is closed.
	rcpt func(to string) error
	data func(n int) error // n counts DATA commands, from 1
	gate chan struct{}

	mu    sync.Mutex
	msgs  []sunk
	datas int
	conns int
}

// sunk is one message a sink took.
type sunk struct {
	from  string
	rcpts []string
	data  []byte
}

// newSink starts an MX host on a random 127.x.y.z (never 127.0.0.1,
// which is one of this host's own addresses: a loop), on a free port.
func newSink(t *testing.T) *sink { return newSinkAt(t, 0) }

// newSinkAt is newSink on a given port (0: a free one), for several MX
// hosts that tern-queue reaches on one --smtp-port.
func newSinkAt(t *testing.T, port int) *sink {
	t.Helper()
	s := &sink{t: t}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		s.mu.Lock()
		s.conns++
		s.mu.Unlock()
		return &sinkSession{s: s}, nil
	}))
	s.srv.Domain = "mx.remote.example"
	s.srv.ReadTimeout = 30 * time.Second
	s.srv.WriteTimeout = 30 * time.Second
	var l net.Listener
	var err error
	for try := 0; try < 20; try++ {
		s.ip = fmt.Sprintf("127.%d.%d.%d", rand.Intn(250), rand.Intn(250)+1, rand.Intn(250)+2)
		if l, err = net.Listen("tcp", net.JoinHostPort(s.ip, strconv.Itoa(port))); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("listen on loopback: %v", err)
	}
	s.port = l.Addr().(*net.TCPAddr).Port
	go s.srv.Serve(l)
	t.Cleanup(func() {
		if s.gate != nil {
			select {
			case <-s.gate:
			default:
				close(s.gate)
			}
		}
		s.srv.Close()
	})
	return s
}

func (s *sink) received() []sunk {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sunk(nil), s.msgs...)
}

type sinkSession struct {
	s   *sink
	msg sunk
}

func (ss *sinkSession) Reset()        { ss.msg = sunk{} }
func (ss *sinkSession) Logout() error { return nil }
func (ss *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	ss.msg = sunk{from: from}
	return nil
}

func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if ss.s.rcpt != nil {
		if err := ss.s.rcpt(to); err != nil {
			return err
		}
	}
	ss.msg.rcpts = append(ss.msg.rcpts, to)
	return nil
}

func (ss *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.s.mu.Lock()
	ss.s.datas++
	n := ss.s.datas
	ss.s.mu.Unlock()
	if ss.s.gate != nil {
		<-ss.s.gate
	}
	if ss.s.data != nil {
		if err := ss.s.data(n); err != nil {
			return err
		}
	}
	ss.msg.data = b
	ss.s.mu.Lock()
	ss.s.msgs = append(ss.s.msgs, ss.msg)
	ss.s.mu.Unlock()
	return nil
}

// remoteWorld is a queue root whose DNS (a testdns server) gives the
// domain remote.example one MX host, a sink; tern-queue is pointed at
// both with --dns and --smtp-port.
type remoteWorld struct {
	*Root
	dns  *testdns.Server
	mx   *sink
	args []string
}

func newRemoteWorld(t *testing.T) *remoteWorld {
	r := newQueueRoot(t)
	w := &remoteWorld{Root: r, dns: testdns.Start(t), mx: newSink(t)}
	w.dns.MX("remote.example", 10, "mx.remote.example")
	w.dns.A("mx.remote.example", w.mx.ip)
	w.args = []string{"--dns", w.dns.Addr, "--smtp-port", strconv.Itoa(w.mx.port)}
	return w
}

func (w *remoteWorld) runQueue(args ...string) Result {
	return w.Root.runQueue(append(append([]string{}, w.args...), args...)...)
}

// queuedText is the message of a submission as the queue keeps it: what
// follows the envelope in incoming/ID.
func (w *remoteWorld) queuedText(id string) []byte {
	b, err := os.ReadFile(filepath.Join(w.Queue, "incoming", id))
	if err != nil {
		w.T.Fatal(err)
	}
	i := bytes.Index(b, []byte("\n\n"))
	return b[i+2:]
}

func crlf(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")) }

func qidOf(res Result) string { return strings.TrimPrefix(strings.TrimSpace(res.Stdout), "qid=") }

const remoteMsg = "From: Bob <bob@example.org>\nTo: someone@remote.example\nSubject: to the world\nDate: Sun, 06 Dec 2026 17:00:00 +0000\nMessage-ID: <remote.1@example.org>\n\nhello, remote\n.leading dot\n"

// TestQueueRemote: a message from tern-enqueue to a remote domain reaches
// its MX host (found through DNS) byte for byte, and leaves the queue.
func TestQueueRemote(t *testing.T) {
	w := newRemoteWorld(t)
	id := qidOf(w.enqueue(remoteMsg, "-v", "-f", "bob@example.org", "--", "someone@remote.example"))
	text := w.queuedText(id)
	q := w.runQueue()
	got := w.mx.received()
	if len(got) != 1 {
		t.Fatalf("the MX got %d messages, want 1\n%s", len(got), q.Stderr)
	}
	if got[0].from != "bob@example.org" || strings.Join(got[0].rcpts, ",") != "someone@remote.example" {
		t.Errorf("envelope at the MX: from %q to %v", got[0].from, got[0].rcpts)
	}
	if !bytes.Equal(got[0].data, crlf(text)) {
		t.Errorf("the MX got\n%q\nwant the queued text\n%q", got[0].data, crlf(text))
	}
	relay := fmt.Sprintf("relay=mx.remote.example[%s]:%d", w.mx.ip, w.mx.port)
	for _, want := range []string{"to=<someone@remote.example> " + relay, "status=sent", "info: delivered qid=" + id + " to=someone@remote.example " + relay} {
		if !strings.Contains(q.Stderr, want) {
			t.Errorf("the log lacks %q:\n%s", want, q.Stderr)
		}
	}
	if l := w.list(); len(l) != 0 {
		t.Errorf("queue after delivery: %+v", l)
	}
}

// TestQueueRemoteRefusesOne: the MX refuses one recipient of three with
// 5xx; the other two get the message in one transaction, and the sender
// gets a bounce for the one, with the remote server's own words.
func TestQueueRemoteRefusesOne(t *testing.T) {
	w := newRemoteWorld(t)
	w.mx.rcpt = func(to string) error {
		if strings.HasPrefix(to, "nobody@") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<" + to + ">: no mailbox by that name here"}
		}
		return nil
	}
	w.enqueue(remoteMsg, "-f", "carol@example.org", "--", "a@remote.example", "nobody@remote.example", "c@remote.example")
	q := w.runQueue()
	got := w.mx.received()
	if len(got) != 1 || strings.Join(got[0].rcpts, ",") != "a@remote.example,c@remote.example" {
		t.Fatalf("the MX got %+v, want one message for a and c\n%s", got, q.Stderr)
	}
	d := parseDSN(t, onlyMessage(t, filepath.Join(w.home("carol"), "Maildir")))
	if len(d.recipients) != 1 {
		t.Fatalf("%d recipients in the bounce, want 1", len(d.recipients))
	}
	rc := d.recipients[0]
	for k, v := range map[string]string{
		"Final-Recipient": "rfc822; nobody@remote.example",
		"Action":          "failed",
		"Status":          "5.1.1",
		"Remote-MTA":      "dns; mx.remote.example",
	} {
		if got := rc.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	if diag := rc.Get("Diagnostic-Code"); !strings.HasPrefix(diag, "smtp; 550") || !strings.Contains(diag, "<nobody@remote.example>: no mailbox by that name here") {
		t.Errorf("Diagnostic-Code: %q, want the remote's words", diag)
	}
	if l := w.list(); len(l) != 0 {
		t.Errorf("queue: %+v", l)
	}
}

// TestQueueRemoteRetry: a 4xx defers the message, --list shows the host
// and its answer, and the next try (--flush) delivers it.
func TestQueueRemoteRetry(t *testing.T) {
	w := newRemoteWorld(t)
	w.mx.data = func(n int) error {
		if n == 1 {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again in a minute"}
		}
		return nil
	}
	id := qidOf(w.enqueue(remoteMsg, "-v", "-f", "bob@example.org", "--", "someone@remote.example"))
	w.runQueue()
	if got := w.mx.received(); len(got) != 0 {
		t.Fatalf("the MX kept a message it answered 451: %+v", got)
	}
	res := w.Run("", nil, "tern-queue", "--list")
	relay := fmt.Sprintf("relay=mx.remote.example[%s]:%d", w.mx.ip, w.mx.port)
	if !strings.Contains(res.Stdout, "deferred  someone@remote.example (1 tries next ") || !strings.Contains(res.Stdout, relay) || !strings.Contains(res.Stdout, "try again in a minute") {
		t.Errorf("--list after a 451:\n%s", res.Stdout)
	}
	// Not due yet: nothing is tried.
	w.runQueue()
	w.mx.mu.Lock()
	n := w.mx.datas
	w.mx.mu.Unlock()
	if n != 1 {
		t.Errorf("%d DATA before the retry was due", n)
	}
	w.runQueue("--flush")
	if got := w.mx.received(); len(got) != 1 {
		t.Fatalf("the MX got %d after the retry, want 1", len(got))
	}
	if l := w.list(); len(l) != 0 {
		t.Errorf("queue after the retry: %+v (entry %s)", l, id)
	}
	if n := len(inbox(t, filepath.Join(w.home("bob"), "Maildir"))); n != 0 {
		t.Errorf("the sender got %d reports", n)
	}
}

// TestQueueRemoteDeleteDuringDelivery: --delete returns while the MX
// holds a transaction open; what finishes after it is not recorded.
func TestQueueRemoteDeleteDuringDelivery(t *testing.T) {
	w := newRemoteWorld(t)
	w.mx.gate = make(chan struct{})
	p := w.startQueue(append(w.args, "--scan-interval", "1h")...)
	id := qidOf(w.enqueue(remoteMsg, "-v", "-f", "bob@example.org", "--", "someone@remote.example"))
	Eventually(t, 10*time.Second, "the transaction to reach DATA", func() bool {
		w.mx.mu.Lock()
		defer w.mx.mu.Unlock()
		return w.mx.datas == 1
	})
	start := time.Now()
	if res := w.Run("", nil, "tern-queue", "--delete", id); res.Code != 0 {
		t.Fatalf("--delete: %v", res)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("--delete took %v: it waited for the transaction", d)
	}
	close(w.mx.gate)
	Eventually(t, 10*time.Second, "the transaction to end", func() bool { return strings.Contains(p.Stderr(), "deleted during delivery") })
	if l := w.list(); len(l) != 0 {
		t.Errorf("queue after --delete: %+v", l)
	}
	p.Signal(syscall.SIGTERM)
	p.Wait(20 * time.Second)
}
