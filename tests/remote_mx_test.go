package tests

// The proof of remote delivery (issue #13 §3) end to end: tern-enqueue
// queues, tern-queue delivers through --dns (a testdns server) and
// --smtp-port to several MX hosts on 127.0.0.x, each a go-smtp server (or,
// where a host must misbehave in ways go-smtp's server will not, a
// hand-written one) that keeps what it received byte for byte.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand"
	"mime/quotedprintable"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/tern-mail/tern/internal/testcert"
	"github.com/tern-mail/tern/internal/testdns"
)

// mxWorld is a queue root (newQueueRoot: local users bob, carol, dave at
// example.org, hostname mx.example.org) with a DNS server and a port that
// every MX host of the test listens on, each on its own 127.x.y.z.
type mxWorld struct {
	*Root
	dns  *testdns.Server
	port int
	args []string
}

func newMXWorld(t *testing.T) *mxWorld {
	t.Helper()
	w := &mxWorld{Root: newQueueRoot(t), dns: testdns.Start(t), port: freePort(t)}
	// Short limits, so that a host that hangs costs the test a second.
	w.args = []string{"--dns", w.dns.Addr, "--smtp-port", strconv.Itoa(w.port),
		"--smtp-connect-timeout", "2s", "--smtp-greeting-timeout", "1s", "--smtp-helo-timeout", "2s",
		"--smtp-mail-timeout", "2s", "--smtp-rcpt-timeout", "2s", "--smtp-data-init-timeout", "2s",
		"--smtp-data-block-timeout", "2s", "--smtp-data-done-timeout", "5s", "--smtp-command-timeout", "2s"}
	return w
}

// setArg changes the value of one of the world's tern-queue flags.
func (w *mxWorld) setArg(flag, value string) {
	for i := 0; i+1 < len(w.args); i += 2 {
		if w.args[i] == flag {
			w.args[i+1] = value
			return
		}
	}
	w.args = append(w.args, flag, value)
}

// queue runs tern-queue --once with the world's flags; env holds extra
// "K=V" entries.
func (w *mxWorld) queue(env []string, args ...string) Result {
	w.T.Helper()
	res := w.Run("", env, "tern-queue", append(append([]string{"--once"}, w.args...), args...)...)
	if res.Code != 0 {
		w.T.Fatalf("tern-queue --once %v: %v", args, res)
	}
	return res
}

// send queues msg from a local sender and returns the queued text, as the
// MX should get it (CRLF line ends).
func (w *mxWorld) send(msg, from string, to ...string) []byte {
	w.T.Helper()
	id := qidOf(w.enqueue(msg, append([]string{"-v", "-f", from, "--"}, to...)...))
	b, err := os.ReadFile(filepath.Join(w.Queue, "incoming", id))
	if err != nil {
		w.T.Fatal(err)
	}
	return crlf(b[bytes.Index(b, []byte("\n\n"))+2:])
}

// bounce returns the single DSN in a local user's Maildir.
func (w *mxWorld) bounce(user string) *dsn {
	w.T.Helper()
	t := w.T.(*testing.T)
	return parseDSN(t, onlyMessage(t, filepath.Join(w.home(user), "Maildir")))
}

// listenLoopback listens on a random 127.x.y.z (never 127.0.0.1, one of
// this host's own addresses) at port.
func listenLoopback(t *testing.T, port int) (net.Listener, string) {
	t.Helper()
	var err error
	for try := 0; try < 20; try++ {
		ip := fmt.Sprintf("127.%d.%d.%d", rand.Intn(250)+1, rand.Intn(250)+1, rand.Intn(250)+2)
		var l net.Listener
		if l, err = net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port))); err == nil {
			t.Cleanup(func() { l.Close() })
			return l, ip
		}
	}
	t.Fatalf("listen on loopback port %d: %v", port, err)
	return nil, ""
}

// mxHost is a go-smtp server acting as an MX host.
type mxHost struct {
	name string
	ip   string
	srv  *smtp.Server

	// rcptLimit, when > 0, answers 452 to the RCPTs of a transaction
	// after that many (RFC 5321 §4.5.3.1.10).
	rcptLimit int
	// auth, when set, offers AUTH PLAIN and takes these credentials.
	auth *[2]string

	mu    sync.Mutex
	msgs  []mxMsg
	conns int
	auths []mxAuth
}

type mxMsg struct {
	from  string
	rcpts []string
	data  []byte
	conn  int  // which connection, from 1
	tls   bool // the transaction went over TLS
	body  smtp.BodyType
	utf8  bool
}

type mxAuth struct {
	user string
	tls  bool
}

// mx starts an MX host named name (its A record added) on the world's
// port; set tweaks the server before it serves.
func (w *mxWorld) mx(name string, set func(*mxHost)) *mxHost {
	w.T.Helper()
	t := w.T.(*testing.T)
	l, ip := listenLoopback(t, w.port)
	h := &mxHost{name: name, ip: ip}
	h.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		h.mu.Lock()
		h.conns++
		n := h.conns
		h.mu.Unlock()
		return &mxSession{h: h, c: c, conn: n}, nil
	}))
	h.srv.Domain = name
	// Clients that vanish (TestRemoteCrash kills them) are no news.
	h.srv.ErrorLog = log.New(io.Discard, "", 0)
	h.srv.ReadTimeout = 20 * time.Second
	h.srv.WriteTimeout = 20 * time.Second
	if set != nil {
		set(h)
	}
	w.dns.A(name, ip)
	go h.srv.Serve(l)
	t.Cleanup(func() { h.srv.Close() })
	return h
}

// withTLS makes the host offer STARTTLS with internal/testcert's
// certificate (for "mx.test"), written to dir.
func withTLS(t *testing.T, dir string) func(*mxHost) {
	return func(h *mxHost) {
		testcert.Write(t, dir, 1)
		cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
		if err != nil {
			t.Fatal(err)
		}
		h.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
}

func (h *mxHost) received() []mxMsg {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]mxMsg(nil), h.msgs...)
}

func (h *mxHost) connections() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.conns
}

type mxSession struct {
	h    *mxHost
	c    *smtp.Conn
	conn int
	msg  mxMsg
}

func (s *mxSession) Reset()        { s.msg = mxMsg{} }
func (s *mxSession) Logout() error { return nil }

func (s *mxSession) Mail(from string, o *smtp.MailOptions) error {
	s.msg = mxMsg{from: from, conn: s.conn}
	if o != nil {
		s.msg.body, s.msg.utf8 = o.Body, o.UTF8
	}
	return nil
}

func (s *mxSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.h.rcptLimit > 0 && len(s.msg.rcpts) >= s.h.rcptLimit {
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Too many recipients"}
	}
	s.msg.rcpts = append(s.msg.rcpts, to)
	return nil
}

func (s *mxSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.msg.data = b
	_, s.msg.tls = s.c.TLSConnectionState()
	s.h.mu.Lock()
	s.h.msgs = append(s.h.msgs, s.msg)
	s.h.mu.Unlock()
	return nil
}

// AuthMechanisms offers PLAIN when the host takes credentials.
func (s *mxSession) AuthMechanisms() []string {
	if s.h.auth == nil {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *mxSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		_, onTLS := s.c.TLSConnectionState()
		s.h.mu.Lock()
		s.h.auths = append(s.h.auths, mxAuth{user: user, tls: onTLS})
		s.h.mu.Unlock()
		if s.h.auth == nil || user != s.h.auth[0] || pass != s.h.auth[1] {
			return smtp.ErrAuthFailed
		}
		return nil
	}), nil
}

// rawMX is an MX host written by hand, for what go-smtp's server will not
// do: hang, greet with 421, drop the connection mid-DATA, leave 8BITMIME
// out of its EHLO answer. It speaks only the few commands tern sends.
type rawMX struct {
	ip string
	// greeting is the first line; "" means say nothing at all.
	greeting string
	// ehlo is the EHLO answer's lines after the first.
	ehlo []string
	// dropAfter, when > 0, closes the connection after that many octets
	// of message text.
	dropAfter int

	mu    sync.Mutex
	msgs  []mxMsg
	conns int
	got   int // octets of message text read, delivered or not
}

func (w *mxWorld) raw(name string, h *rawMX) *rawMX {
	w.T.Helper()
	l, ip := listenLoopback(w.T.(*testing.T), w.port)
	h.ip = ip
	w.dns.A(name, ip)
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				h.serve(c)
			}()
		}
	}()
	w.T.Cleanup(func() { l.Close(); wg.Wait() })
	return h
}

func (h *rawMX) serve(c net.Conn) {
	h.mu.Lock()
	h.conns++
	n := h.conns
	h.mu.Unlock()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if h.greeting == "" {
		io.Copy(io.Discard, c) // hang until the client gives up
		return
	}
	br := bufio.NewReader(c)
	say := func(s string) { io.WriteString(c, s+"\r\n") }
	say(h.greeting)
	if !strings.HasPrefix(h.greeting, "220") {
		br.ReadString('\n') // the client's QUIT, if it sends one
		return
	}
	msg := mxMsg{conn: n}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		verb := strings.ToUpper(strings.Fields(line + " x")[0])
		switch verb {
		case "EHLO":
			lines := append([]string{"raw.example"}, h.ehlo...)
			for i, l := range lines {
				sep := "-"
				if i == len(lines)-1 {
					sep = " "
				}
				say("250" + sep + l)
			}
		case "HELO", "RSET", "NOOP":
			say("250 2.0.0 ok")
		case "MAIL":
			msg = mxMsg{conn: n, from: strings.TrimSpace(line[len("MAIL FROM:"):])}
			say("250 2.1.0 ok")
		case "RCPT":
			msg.rcpts = append(msg.rcpts, strings.TrimSpace(line[len("RCPT TO:"):]))
			say("250 2.1.5 ok")
		case "DATA":
			say("354 go ahead")
			var text bytes.Buffer
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				h.mu.Lock()
				h.got += len(l)
				got := h.got
				h.mu.Unlock()
				if h.dropAfter > 0 && got >= h.dropAfter {
					return // the connection drops mid-DATA
				}
				if l == ".\r\n" {
					break
				}
				text.WriteString(strings.TrimPrefix(l, ".")) // RFC 5321 §4.5.2
			}
			msg.data = text.Bytes()
			h.mu.Lock()
			h.msgs = append(h.msgs, msg)
			h.mu.Unlock()
			say("250 2.0.0 kept")
		case "QUIT":
			say("221 2.0.0 bye")
			return
		default:
			say("502 5.5.1 not here")
		}
	}
}

func (h *rawMX) received() []mxMsg {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]mxMsg(nil), h.msgs...)
}

// wantOne checks that an MX host got exactly one message, byte for byte
// the queued text, for the recipients given.
func wantOne(t *testing.T, host string, got []mxMsg, text []byte, rcpts ...string) {
	t.Helper()
	if len(got) != 1 {
		t.Fatalf("%s got %d messages, want 1", host, len(got))
	}
	if strings.Join(got[0].rcpts, ",") != strings.Join(rcpts, ",") {
		t.Errorf("%s got recipients %v, want %v", host, got[0].rcpts, rcpts)
	}
	if !bytes.Equal(got[0].data, text) {
		t.Errorf("%s got\n%q\nwant\n%q", host, got[0].data, text)
	}
}

func (w *mxWorld) wantEmpty() {
	w.T.Helper()
	if l := w.list(); len(l) != 0 {
		w.T.Errorf("queue not empty: %+v", l)
	}
}

// TestRemotePreference: MX records given out of order; the best one (the
// lowest preference) gets the message, the others are never contacted.
func TestRemotePreference(t *testing.T) {
	w := newMXWorld(t)
	c := w.mx("c.remote.example", nil)
	a := w.mx("a.remote.example", nil)
	b := w.mx("b.remote.example", nil)
	w.dns.MX("remote.example", 30, "c.remote.example")
	w.dns.MX("remote.example", 10, "a.remote.example")
	w.dns.MX("remote.example", 20, "b.remote.example")
	text := w.send(remoteMsg, "bob@example.org", "someone@remote.example")
	q := w.queue(nil)
	wantOne(t, "MX 10", a.received(), text, "someone@remote.example")
	if b.connections()+c.connections() != 0 {
		t.Errorf("MX 20 and 30 were contacted (%d, %d connections)", b.connections(), c.connections())
	}
	if !strings.Contains(q.Stderr, "relay=a.remote.example["+a.ip+"]") {
		t.Errorf("log lacks the relay:\n%s", q.Stderr)
	}
	w.wantEmpty()
}

// TestRemoteFallback: when the best MX host refuses the connection, never
// greets, greets with 421 or drops the connection in the middle of DATA,
// the next one gets the message, once, byte for byte, in the same run.
func TestRemoteFallback(t *testing.T) {
	big := remoteMsg + strings.Repeat("a line of text to make DATA long enough to be cut\n", 2000)
	for _, tc := range []struct {
		name string
		bad  *rawMX // nil: nothing listens
		msg  string
	}{
		{"refused", nil, remoteMsg},
		{"hangs", &rawMX{}, remoteMsg},
		{"421", &rawMX{greeting: "421 4.3.2 mx1 is shutting down"}, remoteMsg},
		{"drops mid-DATA", &rawMX{greeting: "220 raw.example ESMTP", ehlo: []string{"8BITMIME"}, dropAfter: 30000}, big},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newMXWorld(t)
			badIP := ""
			if tc.bad != nil {
				w.raw("mx1.remote.example", tc.bad)
				badIP = tc.bad.ip
			} else {
				// An address where nothing listens: connection refused.
				l, ip := listenLoopback(t, w.port)
				l.Close()
				w.dns.A("mx1.remote.example", ip)
				badIP = ip
			}
			good := w.mx("mx2.remote.example", nil)
			w.dns.MX("remote.example", 10, "mx1.remote.example")
			w.dns.MX("remote.example", 20, "mx2.remote.example")
			text := w.send(tc.msg, "bob@example.org", "someone@remote.example")
			start := time.Now()
			q := w.queue(nil)
			wantOne(t, "MX 20", good.received(), text, "someone@remote.example")
			if !strings.Contains(q.Stderr, "host passed over") || !strings.Contains(q.Stderr, "mx1.remote.example["+badIP+"]") {
				t.Errorf("the log does not say MX 10 was passed over:\n%s", q.Stderr)
			}
			if tc.bad != nil {
				tc.bad.mu.Lock()
				conns, got := tc.bad.conns, tc.bad.got
				tc.bad.mu.Unlock()
				if conns == 0 {
					t.Errorf("MX 10 was never contacted")
				}
				if tc.bad.dropAfter > 0 && got < tc.bad.dropAfter {
					t.Errorf("MX 10 dropped nothing: it read %d octets", got)
				}
				if len(tc.bad.received()) != 0 {
					t.Errorf("MX 10 kept a message")
				}
			}
			t.Logf("delivered through MX 20 in %v", time.Since(start).Round(time.Millisecond))
			w.wantEmpty()
			if n := len(inbox(t, filepath.Join(w.home("bob"), "Maildir"))); n != 0 {
				t.Errorf("the sender got %d reports", n)
			}
		})
	}
}

// TestRemoteImplicitMX: a domain without MX records is its own host
// (RFC 5321 §5.1).
func TestRemoteImplicitMX(t *testing.T) {
	w := newMXWorld(t)
	h := w.mx("plain.example", nil)
	text := w.send(remoteMsg, "bob@example.org", "someone@plain.example")
	q := w.queue(nil)
	wantOne(t, "plain.example", h.received(), text, "someone@plain.example")
	if !strings.Contains(q.Stderr, "relay=plain.example["+h.ip+"]") {
		t.Errorf("log:\n%s", q.Stderr)
	}
	w.wantEmpty()
}

// TestRemoteNoSuchDestination: a null MX (RFC 7505) and a domain that
// does not exist bounce at once, with 5.1.10 and 5.1.2, and no host is
// contacted.
func TestRemoteNoSuchDestination(t *testing.T) {
	w := newMXWorld(t)
	h := w.mx("mx.remote.example", nil)
	w.dns.NullMX("nullmx.example")
	w.dns.A("nullmx.example", h.ip) // an address is no reason to send there
	w.send(remoteMsg, "bob@example.org", "a@nullmx.example")
	w.send(remoteMsg, "carol@example.org", "b@nowhere.example")
	w.queue(nil)
	for _, tc := range []struct{ user, rcpt, status, diag string }{
		{"bob", "a@nullmx.example", "5.1.10", "null MX"},
		{"carol", "b@nowhere.example", "5.1.2", "does not exist"},
	} {
		rc := w.bounce(tc.user).recipients[0]
		if rc.Get("Final-Recipient") != "rfc822; "+tc.rcpt || rc.Get("Action") != "failed" || rc.Get("Status") != tc.status || !strings.Contains(rc.Get("Diagnostic-Code"), tc.diag) {
			t.Errorf("%s's bounce: %v, want status %s and %q", tc.user, rc.Map(), tc.status, tc.diag)
		}
	}
	if h.connections() != 0 {
		t.Errorf("a host was contacted")
	}
	w.wantEmpty()
}

// TestRemoteServfailThenSuccess: the DNS failing defers the message
// (4.4.3, shown by --list); once it answers, the retry delivers.
func TestRemoteServfailThenSuccess(t *testing.T) {
	w := newMXWorld(t)
	h := w.mx("mx.remote.example", nil)
	w.dns.MX("remote.example", 10, "mx.remote.example")
	w.dns.ServFail("remote.example")
	text := w.send(remoteMsg, "bob@example.org", "someone@remote.example")
	w.queue(nil)
	l := w.list()
	if len(l) != 1 || len(l[0].Recipients) != 1 || l[0].Recipients[0].State != "deferred" || l[0].Recipients[0].Status != "4.4.3" {
		t.Fatalf("after SERVFAIL: %+v", l)
	}
	if h.connections() != 0 {
		t.Fatalf("a host was contacted without an MX answer")
	}
	w.dns.Heal("remote.example")
	w.queue(nil, "--flush")
	wantOne(t, "MX", h.received(), text, "someone@remote.example")
	w.wantEmpty()
	if n := len(inbox(t, filepath.Join(w.home("bob"), "Maildir"))); n != 0 {
		t.Errorf("the sender got %d reports", n)
	}
}

// TestRemote452: an MX that takes two recipients a transaction gets five
// in three transactions over one connection (RFC 5321 §4.5.3.1.10).
func TestRemote452(t *testing.T) {
	w := newMXWorld(t)
	h := w.mx("mx.remote.example", func(h *mxHost) { h.rcptLimit = 2 })
	w.dns.MX("remote.example", 10, "mx.remote.example")
	rcpts := []string{"r1@remote.example", "r2@remote.example", "r3@remote.example", "r4@remote.example", "r5@remote.example"}
	text := w.send(remoteMsg, "bob@example.org", rcpts...)
	q := w.queue(nil)
	got := h.received()
	var all []string
	for _, m := range got {
		all = append(all, m.rcpts...)
		if !bytes.Equal(m.data, text) {
			t.Errorf("transaction for %v got other text", m.rcpts)
		}
		if len(m.rcpts) > 2 {
			t.Errorf("a transaction carried %v past the 452", m.rcpts)
		}
	}
	if len(got) != 3 || strings.Join(all, ",") != strings.Join(rcpts, ",") {
		t.Fatalf("transactions %+v, want 3 covering %v\n%s", got, rcpts, q.Stderr)
	}
	if n := h.connections(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
	w.wantEmpty()
}

// TestRemoteTLS: STARTTLS offered and taken (tls= in the log); offered and
// broken, then the same host in plaintext (RFC 7435); required by a route
// (tls=encrypt) from a host that does not offer it: deferred, nothing
// sent; tls=verify against a certificate for another name: deferred, and
// for the right name (the same certificate trusted through SSL_CERT_FILE)
// delivered.
func TestRemoteTLS(t *testing.T) {
	t.Run("taken", func(t *testing.T) {
		w := newMXWorld(t)
		h := w.mx("mx.remote.example", withTLS(t, t.TempDir()))
		w.dns.MX("remote.example", 10, "mx.remote.example")
		text := w.send(remoteMsg, "bob@example.org", "someone@remote.example")
		q := w.queue(nil)
		wantOne(t, "MX", h.received(), text, "someone@remote.example")
		if !h.received()[0].tls {
			t.Errorf("the message went in plaintext")
		}
		if !strings.Contains(q.Stderr, "tls=TLSv1.3") {
			t.Errorf("the log lacks tls=TLSv1.3:\n%s", q.Stderr)
		}
	})
	t.Run("broken", func(t *testing.T) {
		w := newMXWorld(t)
		h := w.mx("mx.remote.example", func(h *mxHost) {
			h.srv.TLSConfig = &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				return nil, errors.New("no certificate today")
			}}
		})
		w.dns.MX("remote.example", 10, "mx.remote.example")
		text := w.send(remoteMsg, "bob@example.org", "someone@remote.example")
		q := w.queue(nil)
		wantOne(t, "MX", h.received(), text, "someone@remote.example")
		if h.received()[0].tls {
			t.Errorf("TLS worked after all")
		}
		if n := h.connections(); n != 2 {
			t.Errorf("%d connections, want 2 (TLS, then plaintext)", n)
		}
		if !strings.Contains(q.Stderr, "TLS failed, trying again without") {
			t.Errorf("log:\n%s", q.Stderr)
		}
	})
	t.Run("required and missing", func(t *testing.T) {
		w := newMXWorld(t)
		h := w.mx("relay.example", nil)
		w.WriteFile("etc/tern/routes", "remote.example relay.example tls=encrypt\n")
		w.send(remoteMsg, "bob@example.org", "someone@remote.example")
		w.queue(nil)
		if len(h.received()) != 0 {
			t.Fatalf("the message went in plaintext to a tls=encrypt route")
		}
		l := w.list()
		if len(l) != 1 || l[0].Recipients[0].State != "deferred" || l[0].Recipients[0].Status != "4.7.4" || !strings.Contains(l[0].Recipients[0].Answer, "does not offer STARTTLS") {
			t.Errorf("queue: %+v", l)
		}
	})
	t.Run("verify", func(t *testing.T) {
		w := newMXWorld(t)
		certDir := t.TempDir()
		wrong := w.mx("relay.example", withTLS(t, certDir)) // a certificate for mx.test
		right := w.mx("mx.test", func(h *mxHost) { h.srv.TLSConfig = wrong.srv.TLSConfig })
		w.WriteFile("etc/tern/routes", "wrong.example relay.example tls=verify\nright.example mx.test tls=verify\n")
		ca := []string{"SSL_CERT_FILE=" + filepath.Join(certDir, "tls.crt"), "SSL_CERT_DIR=" + t.TempDir()}
		text := w.send(remoteMsg, "bob@example.org", "someone@right.example")
		w.send(remoteMsg, "bob@example.org", "someone@wrong.example")
		q := w.queue(ca)
		wantOne(t, "mx.test", right.received(), text, "someone@right.example")
		if len(wrong.received()) != 0 {
			t.Errorf("a certificate for mx.test was taken for relay.example")
		}
		l := w.list()
		if len(l) != 1 || l[0].Recipients[0].Address != "someone@wrong.example" || l[0].Recipients[0].Status != "4.7.5" || !strings.Contains(l[0].Recipients[0].Answer, "relay.example") {
			t.Errorf("queue: %+v\n%s", l, q.Stderr)
		}
	})
}

// TestRemoteSmarthostAuth: a "*" route with auth= sends every domain's
// mail to the smarthost, with AUTH PLAIN after STARTTLS; a smarthost that
// offers AUTH but not STARTTLS never sees the credentials.
func TestRemoteSmarthostAuth(t *testing.T) {
	for _, withTLSToo := range []bool{true, false} {
		t.Run(fmt.Sprintf("tls=%v", withTLSToo), func(t *testing.T) {
			w := newMXWorld(t)
			h := w.mx("smart.example", func(h *mxHost) {
				if withTLSToo {
					withTLS(t, t.TempDir())(h)
				}
				h.auth = &[2]string{"relay-user", "s3cret pass"}
				h.srv.AllowInsecureAuth = true // it offers AUTH in plaintext too
			})
			if err := os.WriteFile(filepath.Join(w.Conf, "smarthost.auth"), []byte("relay-user s3cret pass\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			w.WriteFile("etc/tern/routes", "* smart.example auth=smarthost.auth\n")
			text := w.send(remoteMsg, "bob@example.org", "someone@remote.example", "other@far.example")
			q := w.queue(nil)
			if strings.Contains(q.Stderr, "s3cret") {
				t.Errorf("the password is in the log:\n%s", q.Stderr)
			}
			h.mu.Lock()
			auths := append([]mxAuth(nil), h.auths...)
			h.mu.Unlock()
			if !withTLSToo {
				if len(auths) != 0 || len(h.received()) != 0 {
					t.Fatalf("credentials or mail went in plaintext: %+v", auths)
				}
				l := w.list()
				if len(l) != 1 || l[0].Recipients[0].Status != "4.7.0" {
					t.Errorf("queue: %+v", l)
				}
				return
			}
			if len(auths) == 0 {
				t.Fatalf("no AUTH\n%s", q.Stderr)
			}
			for _, a := range auths {
				if !a.tls || a.user != "relay-user" {
					t.Errorf("AUTH %+v, want relay-user over TLS only", a)
				}
			}
			got := h.received()
			var rcpts []string
			for _, m := range got {
				rcpts = append(rcpts, m.rcpts...)
				if !bytes.Equal(m.data, text) || !m.tls {
					t.Errorf("the smarthost got %+v", m)
				}
			}
			if strings.Join(rcpts, ",") != "someone@remote.example,other@far.example" && strings.Join(rcpts, ",") != "other@far.example,someone@remote.example" {
				t.Errorf("the smarthost got recipients %v", rcpts)
			}
			w.wantEmpty()
		})
	}
}

// TestRemote8BitTo7Bit: a message with 8-bit text goes to a host without
// 8BITMIME as quoted-printable (RFC 6152 §3), which decodes to the
// original; a host with 8BITMIME gets the octets as they are, with
// BODY=8BITMIME.
func TestRemote8BitTo7Bit(t *testing.T) {
	w := newMXWorld(t)
	old := w.raw("old.example", &rawMX{greeting: "220 old.example ESMTP", ehlo: []string{"PIPELINING", "ENHANCEDSTATUSCODES"}})
	modern := w.mx("modern.example", nil)
	body := "Grüße aus Köln, naïve café — €100\n.leading dot\n" + strings.Repeat("é", 100) + "\n"
	msg := "From: bob@example.org\nTo: x@old.example\nSubject: 8bit\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + body
	text := w.send(msg, "bob@example.org", "x@old.example", "y@modern.example")
	q := w.queue(nil)
	got := old.received()
	if len(got) != 1 {
		t.Fatalf("old.example got %d messages\n%s", len(got), q.Stderr)
	}
	for i, c := range got[0].data {
		if c >= 0x80 {
			t.Fatalf("octet %#x at %d went to a host without 8BITMIME", c, i)
		}
	}
	hdr, qp, _ := bytes.Cut(got[0].data, []byte("\r\n\r\n"))
	if !bytes.Contains(hdr, []byte("Content-Transfer-Encoding: quoted-printable")) || !bytes.Contains(hdr, []byte("Subject: 8bit")) {
		t.Errorf("converted header:\n%s", hdr)
	}
	dec, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(qp)))
	if err != nil || string(bytes.ReplaceAll(dec, []byte("\r\n"), []byte("\n"))) != body {
		t.Errorf("decoded body (%v):\n%q\nwant\n%q", err, dec, body)
	}
	m := modern.received()
	if len(m) != 1 || !bytes.Equal(m[0].data, text) || m[0].body != smtp.Body8BitMIME {
		t.Errorf("the 8BITMIME host got %+v", m)
	}
	w.wantEmpty()
}

// TestRemote50MB: a 50 MB message arrives whole.
func TestRemote50MB(t *testing.T) {
	w := newMXWorld(t)
	// The MX in this process may be slow (go test -race): the limits are
	// not what this test is about.
	w.setArg("--smtp-data-block-timeout", "1m")
	w.setArg("--smtp-data-done-timeout", "1m")
	h := w.mx("mx.remote.example", func(h *mxHost) { h.srv.ReadTimeout = time.Minute })
	w.dns.MX("remote.example", 10, "mx.remote.example")
	var b strings.Builder
	b.WriteString("From: bob@example.org\nTo: big@remote.example\nSubject: 50 MB\n\n")
	line := strings.Repeat("0123456789abcdef", 4) + "\n"
	for i := 0; b.Len() < 50<<20; i++ {
		if i%1000 == 0 {
			b.WriteString(".a line that needs its dot doubled\n")
		}
		b.WriteString(line)
	}
	text := w.send(b.String(), "bob@example.org", "big@remote.example")
	start := time.Now()
	w.queue(nil)
	got := h.received()
	if len(got) != 1 || len(got[0].data) != len(text) || sha256.Sum256(got[0].data) != sha256.Sum256(text) {
		n := 0
		if len(got) == 1 {
			n = len(got[0].data)
		}
		t.Fatalf("the MX got %d messages (%d octets), want one of %d octets equal to the queued text", len(got), n, len(text))
	}
	t.Logf("%d octets delivered in %v", len(text), time.Since(start).Round(time.Millisecond))
	w.wantEmpty()
}

// TestRemoteIDN: a recipient in a domain in Unicode is looked up, and
// sent, by its A-labels, to a host without SMTPUTF8.
func TestRemoteIDN(t *testing.T) {
	w := newMXWorld(t)
	h := w.mx("mx.xn--bcher-kva.example", nil)
	w.dns.MX("xn--bcher-kva.example", 10, "mx.xn--bcher-kva.example")
	text := w.send(remoteMsg, "bob@example.org", "leser@Bücher.example")
	q := w.queue(nil)
	wantOne(t, "MX", h.received(), text, "leser@xn--bcher-kva.example")
	if h.received()[0].utf8 {
		t.Errorf("SMTPUTF8 was asked for an ASCII envelope")
	}
	if w.dns.Count("xn--bcher-kva.example", 0) == 0 {
		t.Errorf("the A-labels were never looked up\n%s", q.Stderr)
	}
	w.wantEmpty()
}

// TestRemoteIPv6: a host reached over IPv6 on ::1. An MX on ::1 found
// through DNS is this host (::1 is one of its interface addresses, and
// TestRemoteSelf shows it bouncing as a loop); a route to another port
// than --smtp-port is a second server, not a loop, so a route whose host
// has AAAA ::1 and an A record reaches ::1 first (IPv6 before IPv4).
func TestRemoteIPv6(t *testing.T) {
	w := newMXWorld(t)
	l6, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		skipLoudly(t, "no IPv6 loopback here (::1): %v", err)
	}
	port6 := l6.Addr().(*net.TCPAddr).Port
	h6 := &mxHost{name: "mx6.v6.example", ip: "::1"}
	h6.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		h6.mu.Lock()
		h6.conns++
		h6.mu.Unlock()
		return &mxSession{h: h6, c: c, conn: 1}, nil
	}))
	h6.srv.Domain = h6.name
	go h6.srv.Serve(l6)
	t.Cleanup(func() { h6.srv.Close() })
	// The same name's IPv4 address, on the same port: it must not be
	// needed.
	l4, ip4 := listenLoopback(t, port6)
	l4.Close()
	w.dns.A("mx6.v6.example", "::1", ip4)
	w.WriteFile("etc/tern/routes", fmt.Sprintf("v6.example mx6.v6.example:%d\n", port6))
	text := w.send(remoteMsg, "bob@example.org", "someone@v6.example")
	q := w.queue(nil)
	wantOne(t, "[::1]", h6.received(), text, "someone@v6.example")
	if !strings.Contains(q.Stderr, fmt.Sprintf("relay=mx6.v6.example[::1]:%d", port6)) {
		t.Errorf("log:\n%s", q.Stderr)
	}
	w.wantEmpty()
}

// TestRemoteSelf: an MX host that is this host (by the control directory's
// hostname, by 127.0.0.1, by ::1) is a loop, bounced with 5.4.6 without a
// connection; as a backup MX behind a better host it is only dropped.
func TestRemoteSelf(t *testing.T) {
	w := newMXWorld(t)
	// Something listens on the addresses of this host: it must not be
	// reached.
	self4, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(w.port)))
	if err != nil {
		t.Fatalf("listen on 127.0.0.1:%d: %v", w.port, err)
	}
	defer self4.Close()
	var selfConns sync.WaitGroup
	reached := make(chan struct{}, 10)
	selfConns.Add(1)
	go func() {
		defer selfConns.Done()
		for {
			c, err := self4.Accept()
			if err != nil {
				return
			}
			reached <- struct{}{}
			c.Close()
		}
	}()
	w.dns.MX("byname.example", 10, "mx.example.org")
	w.dns.A("mx.example.org", "198.51.100.25")
	w.dns.MX("byv4.example", 10, "loop4.example")
	w.dns.A("loop4.example", "127.0.0.1")
	w.dns.MX("byv6.example", 10, "loop6.example")
	w.dns.A("loop6.example", "::1")
	backup := w.mx("primary.backup.example", nil)
	w.dns.MX("backup.example", 10, "primary.backup.example")
	w.dns.MX("backup.example", 20, "mx.example.org")
	w.send(remoteMsg, "bob@example.org", "a@byname.example")
	w.send(remoteMsg, "carol@example.org", "b@byv4.example")
	w.send(remoteMsg, "dave@example.org", "c@byv6.example")
	text := w.send(remoteMsg, "bob@example.org", "d@backup.example")
	q := w.queue(nil)
	for _, tc := range []struct{ user, rcpt string }{
		{"bob", "a@byname.example"}, {"carol", "b@byv4.example"}, {"dave", "c@byv6.example"},
	} {
		rc := w.bounce(tc.user).recipients[0]
		if rc.Get("Final-Recipient") != "rfc822; "+tc.rcpt || rc.Get("Status") != "5.4.6" || !strings.Contains(rc.Get("Diagnostic-Code"), "loops back to myself") {
			t.Errorf("%s's bounce: %v", tc.user, rc.Map())
		}
	}
	wantOne(t, "the primary", backup.received(), text, "d@backup.example")
	self4.Close()
	selfConns.Wait()
	if n := len(reached); n != 0 {
		t.Errorf("this host's own address was connected to %d times\n%s", n, q.Stderr)
	}
	w.wantEmpty()
}

// TestRemoteReuse: three messages to one domain, one at a time
// (--destination-concurrency 1), travel over one connection.
func TestRemoteReuse(t *testing.T) {
	w := newMXWorld(t)
	h := w.mx("mx.remote.example", nil)
	w.dns.MX("remote.example", 10, "mx.remote.example")
	var texts [][]byte
	for i := range 3 {
		texts = append(texts, w.send(strings.Replace(remoteMsg, "to the world", fmt.Sprintf("message %d", i), 1), "bob@example.org", fmt.Sprintf("r%d@remote.example", i)))
	}
	q := w.queue(nil, "--destination-concurrency", "1")
	got := h.received()
	if len(got) != 3 {
		t.Fatalf("%d messages, want 3\n%s", len(got), q.Stderr)
	}
	for _, m := range got {
		found := false
		for _, tx := range texts {
			found = found || bytes.Equal(m.data, tx)
		}
		if !found {
			t.Errorf("message for %v is not one of those queued", m.rcpts)
		}
	}
	if n := h.connections(); n != 1 {
		t.Errorf("%d connections for three messages, want 1", n)
	}
	w.wantEmpty()
}
