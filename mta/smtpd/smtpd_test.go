package smtpd

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/tern-mail/tern/internal/address"
	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/mta/queue"
)

// pipeConn is a Conn over net.Pipe, without TLS.
type pipeConn struct{ net.Conn }

func (pipeConn) StartTLS(*tls.Config) error            { return errors.New("no TLS here") }
func (pipeConn) TLSState() (tls.ConnectionState, bool) { return tls.ConnectionState{}, false }

// memQueue keeps what it is given.
type memQueue struct {
	mu   sync.Mutex
	msgs []string
	envs []Envelope
}

func (q *memQueue) Enqueue(_ context.Context, env Envelope, msg io.Reader) (string, error) {
	b, err := io.ReadAll(msg)
	if err != nil {
		return "", err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.msgs = append(q.msgs, string(b))
	q.envs = append(q.envs, env)
	return "q1", nil
}

func testConfig(t testing.TB) (*Config, *memQueue) {
	t.Helper()
	dir := t.TempDir()
	for name, content := range map[string]string{
		"hostname": "mx.test\n",
		"domains":  "example.org\n",
		"users":    "bob@example.org:{PLAIN}secret::::/nonexistent:\n",
		"aliases":  "postmaster: bob@example.org\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cf, err := conf.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	q := &memQueue{}
	return &Config{Conf: cf, Enqueue: q, MaxSize: 4096, Now: func() time.Time { return time.Unix(0, 0).UTC() }}, q
}

// scriptConn is a client that sends in and then hangs up: reads come from
// in, then EOF; writes are kept.
type scriptConn struct {
	pipeConn
	in  *bytes.Reader
	out bytes.Buffer
}

func (c *scriptConn) Read(p []byte) (int, error)       { return c.in.Read(p) }
func (c *scriptConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *scriptConn) Close() error                     { return nil }
func (c *scriptConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *scriptConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// converse holds a conversation in which the client sends in and hangs
// up, and returns all the server said.
func converse(t testing.TB, cfg *Config, in []byte) string {
	c := &scriptConn{in: bytes.NewReader(in)}
	done := make(chan error, 1)
	go func() { done <- cfg.Serve(context.Background(), c, Peer{ID: "cid1"}) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("Serve did not return after the client hung up; input %q", in)
	}
	return c.out.String()
}

func TestConversation(t *testing.T) {
	cfg, q := testConfig(t)
	out := converse(t, cfg, []byte("EHLO c.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<bob@example.org>\r\nRCPT TO:<x@example.org>\r\nRCPT TO:<x@other.example>\r\nDATA\r\nSubject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n"))
	for _, want := range []string{
		"220 mx.test ESMTP tern ready cid=cid1\r\n",
		"250-mx.test hello c.example\r\n",
		"250-SIZE 4096\r\n",
		"550 5.1.1 <x@example.org>: no such user here cid=cid1\r\n",
		"554 5.7.1 relay access denied",
		"250 2.0.0 ok: queued as q1\r\n",
		"221 ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	if len(q.msgs) != 1 || q.msgs[0] != "Received: from c.example (unknown)\n\tby mx.test (tern) with ESMTP\n\tid cid1.1\n\tfor <bob@example.org>; Thu, 01 Jan 1970 00:00:00 +0000\nSubject: hi\n\n.dot\n" {
		t.Fatalf("queued %q", q.msgs)
	}
}

func TestChecker(t *testing.T) {
	for _, tc := range []struct {
		in   string
		out  string
		code int
	}{
		{"a\r\nb\r\n", "a\nb\n", 0},
		{"a\r\nb", "a\nb\n", 0},
		{"a\n.\nb\r\n", "", 550},
		{"a\r\n.\nb\r\n", "", 550},
		{"a\n.\r\nb\r\n", "", 550},
		{"a\rb\r\n", "", 550},
		{"a\r", "", 550},
		{"a\x00\r\n", "", 550},
		{strings.Repeat("x", 998) + "\r\n", strings.Repeat("x", 998) + "\n", 0},
		{strings.Repeat("x", 999) + "\r\n", "", 500},
		{strings.Repeat("y\r\n", 2000), "", 552},
	} {
		c := checker{max: 4096}
		var got []byte
		var err *smtp.SMTPError
		// Byte by byte, so a CRLF split over two reads is seen.
		for i := 0; i < len(tc.in) && err == nil; i++ {
			out, e := c.scan([]byte{tc.in[i]})
			if e != nil {
				err = e
				break
			}
			got = append(got, out...)
		}
		if err == nil {
			tail, e := c.end()
			if e != nil {
				err = e
			}
			got = append(got, tail...)
		}
		code := 0
		if err != nil {
			code = err.Code
		}
		if code != tc.code || (code == 0 && string(got) != tc.out) {
			t.Errorf("%.20q: got %q code %d, want %q code %d", tc.in, got, code, tc.out, tc.code)
		}
	}
}

// FuzzConversation runs whole conversations of arbitrary bytes: the
// server must neither panic nor hang, and whatever it queues has LF line
// ends only, no NUL, no line over the limit, and fits --max-size.
func FuzzConversation(f *testing.F) {
	for _, s := range []string{
		"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n",
		"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nx\n.\nMAIL FROM:<e@x>\r\n.\r\n",
		"EHLO c\r\nMAIL FROM:<> SIZE=10\r\nRCPT TO:<postmaster>\r\nBDAT 5 LAST\r\nab\ncd",
		"HELO c\r\nAUTH PLAIN AGJvYgBzZWNyZXQ=\r\nSTARTTLS\r\nRSET\r\nNOOP\r\nVRFY x\r\nFOO\r\n",
		"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.org>\r\nBDAT 3\r\nabcBDAT 2 LAST\r\n\r\n",
		"EHLO c\r\nMAIL FROM:<a@b.example> RET=HDRS ENVID=x+2By BODY=8BITMIME SMTPUTF8 REQUIRETLS\r\nRCPT TO:<bob@example.org> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+2Bx@y\r\nRCPT TO:<postmaster> ORCPT=utf-8;z\\x{E9}\r\nDATA\r\n\xc3\xa9\r\n.\r\n",
		"EHLO c\r\nAUTH PLAIN\r\n!!\r\nAUTH PLAIN =\r\n*\r\nBDAT 4 LAST\r\nQUITMAIL FROM:<> BODY=7BIT\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		cfg, q := testConfig(t)
		converse(t, cfg, in)
		for _, m := range q.msgs {
			if strings.ContainsAny(m, "\r\x00") {
				t.Fatalf("queued a CR or NUL: %q", m)
			}
			body := m[strings.Index(m, "\n\tid "):]
			for _, l := range strings.Split(body, "\n") {
				if len(l) > MaxLine-2 {
					t.Fatalf("queued a long line: %q", l)
				}
			}
			if len(m) > 4096+512 {
				t.Fatalf("queued %d bytes", len(m))
			}
		}
		// Whatever the server took, the queue can keep and read back.
		for _, env := range q.envs {
			checkQueueable(t, env)
		}
	})
}

func TestQidLine(t *testing.T) {
	for _, tc := range []struct{ out, want string }{
		{"qid=18eb6e1d1e72cee402b38\n", "18eb6e1d1e72cee402b38"},
		{"note: x\nqid=abc\r\nqid=def\n", "abc"},
		{"qid=\nqid=has space\nqid=ok", "ok"},
		{"xqid=abc\n", ""},
		{"qid=" + strings.Repeat("a", 65) + "\n", ""},
		{"qid=é\n", ""},
		{"", ""},
	} {
		if got := qidLine(tc.out); got != tc.want {
			t.Errorf("qidLine(%q) = %q, want %q", tc.out, got, tc.want)
		}
	}
}

// checkQueueable fails unless env makes a queue envelope that Marshal
// writes and ParseEnvelope reads back with the same parameters.
func checkQueueable(t *testing.T, env Envelope) {
	t.Helper()
	sender := env.Sender
	if sender == "" {
		sender = address.NullSender
	}
	e := &queue.Envelope{ID: queue.NewID(time.Unix(1, 0), 1), Arrived: time.Unix(1, 0), Sender: sender, UID: -1,
		SMTPUTF8: env.SMTPUTF8, Body: env.Body, EightBit: env.EightBit, EnvID: env.EnvID, Ret: env.Ret, RequireTLS: env.RequireTLS}
	for _, r := range env.Recipients {
		a, err := address.Check(r.Addr)
		if err != nil {
			t.Fatalf("accepted recipient %q: %v", r.Addr, err)
		}
		e.Recipients = append(e.Recipients, &queue.Recipient{Addr: a, State: queue.Queued, Notify: r.Notify, ORcpt: r.ORcpt})
	}
	var b bytes.Buffer
	if err := e.Marshal(&b); err != nil {
		t.Fatalf("accepted %+v, which the queue cannot write: %v", env, err)
	}
	back, _, err := queue.ParseEnvelope(&b)
	if err != nil {
		t.Fatalf("accepted %+v, which the queue cannot read back: %v", env, err)
	}
	if back.EnvID != e.EnvID || back.Ret != e.Ret || back.Body != e.Body || back.SMTPUTF8 != e.SMTPUTF8 || back.RequireTLS != e.RequireTLS {
		t.Fatalf("read back %+v, wrote %+v", back, e)
	}
	for i, r := range back.Recipients {
		if r.Notify != e.Recipients[i].Notify || r.ORcpt != e.Recipients[i].ORcpt {
			t.Fatalf("recipient %d read back %+v, wrote %+v", i, r, e.Recipients[i])
		}
	}
}
