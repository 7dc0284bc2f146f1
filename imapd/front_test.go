package imapd

import (
	"bufio"
	"compress/flate"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
)

// The front's tests run it over imapmemserver, go-imap's own in-memory
// backend, so that they show what the front does whatever the store.

func memBackend(t testing.TB) *imapmemserver.Server {
	t.Helper()
	mem := imapmemserver.New()
	u := imapmemserver.NewUser("alice", "secret")
	if err := u.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	mem.AddUser(u)
	return mem
}

// startFront serves one connection over net.Pipe and returns the
// client's end.
func startFront(t testing.TB, cfg Config) net.Conn {
	t.Helper()
	if cfg.NewSession == nil {
		mem := memBackend(t)
		cfg.NewSession = func(*ConnState) (imapserver.Session, bool, error) { return mem.NewSession(), false, nil }
	}
	if !cfg.Remote.IsValid() {
		cfg.Remote = netip.MustParseAddr("127.0.0.1")
	}
	client, server := socketPair(t)
	done := make(chan error, 1)
	go func() { done <- Serve(context.Background(), server, cfg) }()
	t.Cleanup(func() {
		client.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after the client went")
		}
	})
	return client
}

// socketPair is a connected pair of loopback TCP sockets: unlike
// net.Pipe they buffer, as a client's connection does, so a client may
// write while the server writes (COMPRESS's flushes, pipelining).
func socketPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	return client, server
}

// wire is a raw IMAP conversation for the tests that must send what no
// client library would.
type wire struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func newWire(t testing.TB, c net.Conn) *wire {
	w := &wire{t: t, c: c, br: bufio.NewReader(c)}
	w.expect("* OK ")
	return w
}

func (w *wire) send(s string) {
	w.t.Helper()
	w.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := w.c.Write([]byte(s)); err != nil {
		w.t.Fatalf("send %q: %v", s, err)
	}
}

func (w *wire) line() string {
	w.t.Helper()
	w.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	l, err := w.br.ReadString('\n')
	if err != nil {
		w.t.Fatalf("read: %v (after %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

// expect reads lines until one starts with prefix and returns it,
// failing on a tagged line of another kind first.
func (w *wire) expect(prefix string) string {
	w.t.Helper()
	for i := 0; i < 100; i++ {
		l := w.line()
		if strings.HasPrefix(l, prefix) {
			return l
		}
		if !strings.HasPrefix(l, "* ") {
			w.t.Fatalf("want %q, got %q", prefix, l)
		}
	}
	w.t.Fatalf("no %q in 100 lines", prefix)
	return ""
}

func login(w *wire) {
	w.send("l LOGIN alice secret\r\n")
	w.expect("l OK ")
}

// TestFrontRefusedLiteralPlusNotRun: imapserver beta.9 leaves the payload
// of a refused {N+} literal unread and runs it as commands. Through the
// front the payload is swallowed and the mailbox is never created.
func TestFrontRefusedLiteralPlusNotRun(t *testing.T) {
	for _, head := range []string{"", "x\r\n"} {
		w := newWire(t, startFront(t, Config{}))
		login(w)
		payload := head + "x9 CREATE Injected\r\n"
		payload += strings.Repeat("y", 5000-len(payload))
		w.send("a2 SELECT {5000+}\r\n" + payload + "\r\n")
		if l := w.expect("a2 "); !strings.HasPrefix(l, "a2 BAD [TOOBIG]") {
			t.Errorf("SELECT with a 5000-octet literal: %q, want BAD [TOOBIG]", l)
		}
		w.send("a3 LIST \"\" *\r\n")
		for {
			l := w.line()
			if strings.Contains(l, "Injected") {
				t.Fatalf("the literal's payload ran as a command: %q", l)
			}
			if strings.HasPrefix(l, "x9 ") {
				t.Fatalf("the literal's payload was answered: %q", l)
			}
			if strings.HasPrefix(l, "a3 ") {
				break
			}
		}
	}
}

// TestFrontLargeSyncLiteralAnswered: imapserver beta.9 neither sends "+"
// nor answers a synchronising literal over 4 KiB outside APPEND, and the
// client hangs. The front answers NO [TOOBIG] at once.
func TestFrontLargeSyncLiteralAnswered(t *testing.T) {
	w := newWire(t, startFront(t, Config{}))
	login(w)
	w.send("a2 SELECT {5000}\r\n")
	if l := w.line(); !strings.HasPrefix(l, "a2 NO [TOOBIG]") {
		t.Fatalf("got %q, want a2 NO [TOOBIG]", l)
	}
	w.send("a3 NOOP\r\n")
	w.expect("a3 OK")
}

// TestFrontLiteralAfterSyntaxError: a literal that follows a syntax
// error is not run as commands (imapserver skips to the end of the line
// and would read the payload as the next command).
func TestFrontLiteralAfterSyntaxError(t *testing.T) {
	w := newWire(t, startFront(t, Config{}))
	login(w)
	payload := "x9 CREATE Injected"
	w.send(fmt.Sprintf("a2 SELECT INBOX extra {%d+}\r\n%s\r\n", len(payload), payload))
	if l := w.expect("a2 "); !strings.HasPrefix(l, "a2 BAD") {
		t.Errorf("got %q, want BAD", l)
	}
	w.send("a3 LIST \"\" *\r\n")
	for {
		l := w.line()
		if strings.Contains(l, "Injected") || strings.HasPrefix(l, "x9 ") {
			t.Fatalf("the literal ran as a command: %q", l)
		}
		if strings.HasPrefix(l, "a3 ") {
			break
		}
	}
}

// TestFrontLiterals: literals outside APPEND work in both forms, with
// quotes and backslashes in them.
func TestFrontLiterals(t *testing.T) {
	w := newWire(t, startFront(t, Config{}))
	w.send("a1 LOGIN {5}\r\n")
	if l := w.line(); !strings.HasPrefix(l, "+ ") {
		t.Fatalf("got %q, want a continuation", l)
	}
	w.send("alice {6+}\r\nsecret\r\n")
	w.expect("a1 OK")
	name := `we"ird\box`
	w.send(fmt.Sprintf("a2 CREATE {%d+}\r\n%s\r\n", len(name), name))
	w.expect("a2 OK")
	w.send("a3 LIST \"\" *\r\n")
	l := w.expect(`* LIST`)
	for !strings.Contains(l, `we\"ird\\box`) && strings.HasPrefix(l, "* ") {
		l = w.line()
	}
	if !strings.Contains(l, `we\"ird\\box`) {
		t.Fatalf("created mailbox not listed; last line %q", l)
	}
}

// TestFrontAppend: APPEND, served by the front itself, with both literal
// forms, flags and a date, and a message larger than imapserver's
// 4 KiB buffer.
func TestFrontAppend(t *testing.T) {
	w := newWire(t, startFront(t, Config{}))
	login(w)
	w.send("s SELECT INBOX\r\n")
	w.expect("s OK")
	msg := "Subject: hi\r\n\r\n" + strings.Repeat("body line\r\n", 1000)
	w.send(fmt.Sprintf("a1 APPEND INBOX (\\Seen) \"05-Dec-2026 10:00:00 +0000\" {%d}\r\n", len(msg)))
	if l := w.line(); !strings.HasPrefix(l, "+ ") {
		t.Fatalf("got %q, want a continuation", l)
	}
	w.send(msg + "\r\n")
	var exists bool
	for {
		l := w.line()
		if l == "* 1 EXISTS" {
			exists = true
		}
		if strings.HasPrefix(l, "a1 ") {
			if !strings.HasPrefix(l, "a1 OK [APPENDUID ") {
				t.Fatalf("APPEND: %q", l)
			}
			break
		}
	}
	if !exists {
		t.Error("no EXISTS for the appended message in the selected mailbox")
	}
	w.send(fmt.Sprintf("a2 APPEND {5+}\r\nINBOX {%d+}\r\n%s\r\n", len(msg), msg))
	w.expect("a2 OK [APPENDUID ")
	w.send("a3 APPEND INBOX {999999999}\r\n")
	if l := w.line(); !strings.HasPrefix(l, "a3 NO [TOOBIG]") {
		t.Fatalf("oversized APPEND: %q", l)
	}
	w.send("a4 APPEND Nowhere {3+}\r\nabc\r\n")
	if l := w.expect("a4 "); !strings.HasPrefix(l, "a4 NO [TRYCREATE]") {
		t.Errorf("APPEND to a missing mailbox: %q", l)
	}
	w.send("a5 APPEND INBOX (\\Seen {3+}\r\nabc\r\n")
	if l := w.expect("a5 "); !strings.HasPrefix(l, "a5 BAD") {
		t.Errorf("APPEND with a broken flag list: %q", l)
	}
	w.send("a6 NOOP\r\n")
	w.expect("a6 OK")
}

// TestFrontTagAndName: a line without a valid tag or a command name is
// answered BAD and the connection goes on (imapserver would close it).
func TestFrontTagAndName(t *testing.T) {
	w := newWire(t, startFront(t, Config{}))
	w.send("+bad NOOP\r\n")
	if l := w.line(); !strings.HasPrefix(l, "* BAD") {
		t.Errorf("bad tag: %q", l)
	}
	w.send("lonely\r\n")
	if l := w.line(); !strings.HasPrefix(l, "lonely BAD") {
		t.Errorf("no command: %q", l)
	}
	w.send("a NOOP\r\n")
	w.expect("a OK")
}

// TestFrontPrivacy: without TLS and from a remote address, the
// capabilities say LOGINDISABLED and a LOGIN is refused with
// PRIVACYREQUIRED before any password is checked.
func TestFrontPrivacy(t *testing.T) {
	checked := false
	mem := memBackend(t)
	cfg := Config{
		Remote: netip.MustParseAddr("192.0.2.7"),
		NewSession: func(*ConnState) (imapserver.Session, bool, error) {
			return &watchLogin{SessionIMAP4rev2: mem.NewSession().(imapserver.SessionIMAP4rev2), checked: &checked}, false, nil
		},
	}
	w := newWire(t, startFront(t, cfg))
	w.send("c CAPABILITY\r\n")
	caps := w.expect("* CAPABILITY ")
	if !strings.Contains(caps, "LOGINDISABLED") || strings.Contains(caps, "AUTH=") {
		t.Errorf("capabilities in the clear from afar: %q", caps)
	}
	w.expect("c OK")
	w.send("l LOGIN alice secret\r\n")
	if l := w.line(); !strings.HasPrefix(l, "l NO [PRIVACYREQUIRED]") {
		t.Errorf("LOGIN in the clear: %q", l)
	}
	w.send("a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n")
	if l := w.line(); !strings.HasPrefix(l, "a NO [PRIVACYREQUIRED]") {
		t.Errorf("AUTHENTICATE in the clear: %q", l)
	}
	// A password as a synchronising literal is refused before the
	// client sends it; as a non-synchronising one, it is thrown away.
	w.send("l2 LOGIN alice {6}\r\n")
	if l := w.line(); !strings.HasPrefix(l, "l2 NO [PRIVACYREQUIRED]") {
		t.Errorf("LOGIN with a literal in the clear: %q", l)
	}
	w.send("l3 LOGIN alice {6+}\r\nsecret\r\nn NOOP\r\n")
	if l := w.line(); !strings.HasPrefix(l, "l3 NO [PRIVACYREQUIRED]") {
		t.Errorf("LOGIN with a literal+ in the clear: %q", l)
	}
	w.expect("n OK")
	if checked {
		t.Error("a password sent in the clear was checked")
	}
}

type watchLogin struct {
	imapserver.SessionIMAP4rev2
	checked *bool
}

func (s *watchLogin) Login(u, p string) error {
	*s.checked = true
	return s.SessionIMAP4rev2.Login(u, p)
}

// TestFrontClient: go-imap's own client through the front: login, ID,
// capabilities after login, append, select, fetch, IDLE.
func TestFrontClient(t *testing.T) {
	c := imapclient.New(startFront(t, Config{}), nil)
	defer c.Close()
	if err := c.Login("alice", "secret").Wait(); err != nil {
		t.Fatal(err)
	}
	caps := c.Caps()
	for _, want := range []imap.Cap{"IMAP4rev2", "IDLE", "ID", "COMPRESS=DEFLATE", "LITERAL+", "MOVE", "UIDPLUS"} {
		if !caps.Has(want) {
			t.Errorf("capability %s missing after login: %v", want, caps)
		}
	}
	if caps.Has("LOGINDISABLED") || caps.Has("AUTH=PLAIN") {
		t.Errorf("login capabilities after login: %v", caps)
	}
	id, err := c.ID(&imap.IDData{Name: "test"}).Wait()
	if err != nil || id.Name != "tern" {
		t.Errorf("ID: %+v, %v", id, err)
	}
	msg := "Subject: x\r\n\r\nhello\r\n"
	ac := c.Append("INBOX", int64(len(msg)), nil)
	ac.Write([]byte(msg))
	ac.Close()
	if _, err := ac.Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("fetch: %v %v", msgs, err)
	}
	if got := string(msgs[0].FindBodySection(&imap.FetchItemBodySection{})); got != msg {
		t.Errorf("body %q, want %q", got, msg)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
}

// TestFrontCompress: after COMPRESS DEFLATE both directions are raw
// deflate streams (RFC 4978), and a second COMPRESS is refused.
func TestFrontCompress(t *testing.T) {
	c := startFront(t, Config{})
	w := newWire(t, c)
	w.send("c COMPRESS DEFLATE\r\n")
	if l := w.line(); !strings.HasPrefix(l, "c BAD") {
		t.Errorf("COMPRESS before login: %q", l)
	}
	login(w)
	w.send("c COMPRESS DEFLATE\r\n")
	if l := w.line(); !strings.HasPrefix(l, "c OK") {
		t.Fatalf("COMPRESS: %q", l)
	}
	zw, _ := flate.NewWriter(c, flate.BestSpeed)
	zr := bufio.NewReader(flate.NewReader(io.MultiReader(w.br, c)))
	send := func(s string) {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		zw.Write([]byte(s))
		zw.Flush()
	}
	read := func(tag string) []string {
		var lines []string
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			l, err := zr.ReadString('\n')
			if err != nil {
				t.Fatalf("read compressed: %v after %q", err, lines)
			}
			lines = append(lines, strings.TrimRight(l, "\r\n"))
			if strings.HasPrefix(l, tag+" ") {
				return lines
			}
		}
	}
	send("a CAPABILITY\r\n")
	lines := read("a")
	if strings.Contains(lines[0], "COMPRESS=DEFLATE") || !strings.HasSuffix(lines[1], "OK CAPABILITY completed") {
		t.Errorf("capabilities once compressed: %q", lines)
	}
	send("b COMPRESS DEFLATE\r\n")
	if lines := read("b"); !strings.HasPrefix(lines[0], "b NO [COMPRESSIONACTIVE]") {
		t.Errorf("second COMPRESS: %q", lines)
	}
	msg := strings.Repeat("compressible line\r\n", 500)
	send(fmt.Sprintf("p APPEND INBOX {%d+}\r\n%s\r\n", len(msg), msg))
	if lines := read("p"); !strings.HasPrefix(lines[len(lines)-1], "p OK") {
		t.Errorf("APPEND through COMPRESS: %q", lines)
	}
}

// TestFrontPreAuthIdle: a client silent before login is told BYE and
// let go; imapserver's own timeouts are off behind the front.
func TestFrontPreAuthIdle(t *testing.T) {
	w := newWire(t, startFront(t, Config{PreAuthIdle: 200 * time.Millisecond}))
	if l := w.line(); !strings.HasPrefix(l, "* BYE autologout") {
		t.Fatalf("after a silence before login: %q", l)
	}
	w2 := newWire(t, startFront(t, Config{PreAuthIdle: 200 * time.Millisecond}))
	login(w2)
	time.Sleep(400 * time.Millisecond)
	w2.send("n NOOP\r\n")
	w2.expect("n OK")
}

// TestReadLineView: lines within and beyond the reader's buffer come
// back whole, without their CRLF.
func TestReadLineView(t *testing.T) {
	long := strings.Repeat("x", 100)
	r := bufio.NewReaderSize(strings.NewReader("short\r\n"+long+"\r\nlast\n"), 16)
	for _, want := range []string{"short", long, "last"} {
		got, err := readLineView(r)
		if err != nil || string(got) != want {
			t.Fatalf("got %q, %v; want %q", got, err, want)
		}
	}
	if _, err := readLineView(r); err != io.EOF {
		t.Errorf("at the end: %v", err)
	}
}
