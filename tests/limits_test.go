package tests

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// floodConn is one raw client connection from a chosen loopback address.
type floodConn struct {
	t     *testing.T
	c     net.Conn
	r     *bufio.Reader
	final func(line string) bool // the last line of a reply
}

func floodDial(t *testing.T, addr, from string, final func(string) bool) *floodConn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", from, err)
	}
	t.Cleanup(func() { c.Close() })
	return &floodConn{t: t, c: c, r: bufio.NewReader(c), final: final}
}

// reply reads one reply, lines joined by "\n"; "" when the server hung up.
func (f *floodConn) reply() string {
	f.t.Helper()
	f.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	var lines []string
	for range 100 {
		l, err := f.r.ReadString('\n')
		if err != nil {
			if len(lines) == 0 && l == "" {
				return ""
			}
			f.t.Fatalf("reading a reply after %q: %v", lines, err)
		}
		l = strings.TrimRight(l, "\r\n")
		lines = append(lines, l)
		if f.final(l) {
			break
		}
	}
	return strings.Join(lines, "\n")
}

func (f *floodConn) expect(cmd, want string) {
	f.t.Helper()
	fmt.Fprintf(f.c, "%s\r\n", cmd)
	if got := f.reply(); !strings.Contains(got, want) {
		f.t.Fatalf("%q: got %q, want %q", cmd, got, want)
	}
}

// idleFlood is the attack of issue 20: 100 connections from ten
// addresses (127.0.0.2 to 127.0.0.11) that say nothing after the
// greeting, against a server with the default limits (100 in all, 10 an
// address). A client that logged in before the flood keeps its session,
// and a new client from 127.0.0.12 is served: the untrusted idle
// connections are the ones closed to make room.
func idleFlood(t *testing.T, addr string, final func(string) bool, greeting string, login, work, newcomer func(*floodConn)) {
	t.Helper()
	trusted := floodDial(t, addr, "127.0.0.13", final)
	if g := trusted.reply(); !strings.HasPrefix(g, greeting) {
		t.Fatalf("greeting %q", g)
	}
	login(trusted)
	for i := range 100 {
		from := fmt.Sprintf("127.0.0.%d", 2+i%10)
		f := floodDial(t, addr, from, final)
		if g := f.reply(); !strings.HasPrefix(g, greeting) {
			// Refused past the limits: that is allowed, the point
			// is who is served afterwards.
			t.Logf("idle connection %d from %s: %q", i, from, g)
		}
	}
	legit := floodDial(t, addr, "127.0.0.12", final)
	if g := legit.reply(); !strings.HasPrefix(g, greeting) {
		t.Fatalf("a new client after 100 idle connections got %q", g)
	}
	newcomer(legit)
	work(trusted)
}

func smtpFinal(l string) bool { return len(l) < 4 || l[3] != '-' }

// TestIdleFloodSMTP: tern-smtpd in mx mode, where MAIL is what makes a
// client trusted.
func TestIdleFloodSMTP(t *testing.T) {
	r, stub := smtpdRoot(t)
	_, addr := startSmtpd(t, r, nil, "--enqueue", stub, "--greet-delay", "0")
	login := func(f *floodConn) {
		f.expect("EHLO client.example", "250 ")
		f.expect("MAIL FROM:<a@remote.example>", "250 ")
	}
	n := 0
	work := func(f *floodConn) {
		f.expect("RCPT TO:<bob@example.org>", "250 ")
		f.expect("DATA", "354 ")
		f.expect("Subject: served\r\n\r\nhello\r\n.", "250 2.0.0 ok: queued")
		n++
		expectQueued(t, r, n)
	}
	idleFlood(t, addr, smtpFinal, "220 ", login, work, func(f *floodConn) { login(f); work(f) })
}

// TestIdleFloodPOP3: tern-pop3d, where a login makes a client trusted.
func TestIdleFloodPOP3(t *testing.T) {
	r := NewRoot(t)
	a := newPOPAccount(t, r)
	_, addr := startPOP3(t, r)
	login := func(f *floodConn) {
		f.expect("USER "+a.user, "+OK")
		f.expect("PASS "+a.pass, "+OK")
	}
	work := func(f *floodConn) { f.expect("STAT", "+OK 3 ") }
	// The one account is in use by the trusted session: the newcomer is
	// served when it is answered, and told the mailbox is busy.
	newcomer := func(f *floodConn) {
		f.expect("USER "+a.user, "+OK")
		f.expect("PASS "+a.pass, "-ERR [IN-USE] ")
	}
	idleFlood(t, addr, func(string) bool { return true }, "+OK", login, work, newcomer)
}

// TestIdleFloodIMAP: tern-imapd, the same.
func TestIdleFloodIMAP(t *testing.T) {
	r := NewRoot(t)
	a := newPOPAccount(t, r)
	_, addr := startIMAP(t, r)
	final := func(l string) bool {
		return strings.HasPrefix(l, "t ") || strings.Contains(l, "IMAP ready") || strings.HasPrefix(l, "* BYE")
	}
	login := func(f *floodConn) { f.expect("t LOGIN "+a.user+" "+a.pass, "t OK") }
	work := func(f *floodConn) { f.expect("t SELECT INBOX", "t OK") }
	idleFlood(t, addr, final, "* OK", login, work, func(f *floodConn) { login(f); work(f) })
}
