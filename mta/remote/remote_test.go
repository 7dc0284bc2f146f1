package remote

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/mta/route"
	"github.com/tern-mail/tern/mta/transport"
)

const text = "From: a@sender.test\nTo: x@example.org\nSubject: test\n\nline one\n.dot line\n\nlast\n"

// One recipient refused, one deferred, one taken: each gets its own
// answer; MAIL and the RCPTs go out in one write.
func TestDeliverAnswersPerRecipient(t *testing.T) {
	m := newMX(t, "127.0.0.2", 0)
	m.rcpt = func(to string) error {
		switch to {
		case "gone@example.org":
			return errPerm
		case "busy@example.org":
			return errTemp
		}
		return nil
	}
	h := newHarness(t, []route.Target{m.target("mx.example.org")}, nil)
	res := h.deliver(message("Q1", "a@sender.test", text), transport.Hop{}, rcpts("gone@example.org", "ok@example.org", "busy@example.org"))

	relay := "mx.example.org[" + m.ap.Addr().String() + "]:" + fmt.Sprint(m.ap.Port())
	want := []transport.Result{
		{Status: "5.1.1", Answer: "550 5.1.1 no such user", Reply: 550, RemoteMTA: relay, DiagType: "smtp"},
		{Status: "2.0.0", Answer: "250 2.0.0 OK: queued", Reply: 250, RemoteMTA: relay, DiagType: "smtp", Relayed: true},
		{Status: "4.3.0", Temporary: true, Answer: "451 4.3.0 try again", Reply: 451, RemoteMTA: relay, DiagType: "smtp"},
	}
	for i := range want {
		if res[i] != want[i] {
			t.Errorf("recipient %d: got %+v\nwant %+v", i, res[i], want[i])
		}
	}
	got := m.received()
	if len(got) != 1 {
		t.Fatalf("%d messages received, want 1", len(got))
	}
	if got[0].From != "a@sender.test" || strings.Join(got[0].Rcpts, ",") != "ok@example.org" {
		t.Errorf("envelope from %q to %q", got[0].From, got[0].Rcpts)
	}
	if string(got[0].Data) != crlf(text) {
		t.Errorf("text received:\n%q\nwant\n%q", got[0].Data, crlf(text))
	}
	if got[0].Opts.Size != int64(len(text)) {
		t.Errorf("SIZE=%d, want %d", got[0].Opts.Size, len(text))
	}
	if got[0].Opts.Body != "" {
		t.Errorf("BODY=%s for a 7-bit message", got[0].Opts.Body)
	}
	tr := m.written()
	if !strings.HasPrefix(tr, "EHLO tern.test\r\n") {
		t.Errorf("conversation starts %q", tr[:min(40, len(tr))])
	}
	// RFC 2920: MAIL and every RCPT in one write.
	group := "MAIL FROM:<a@sender.test> SIZE=" + fmt.Sprint(len(text)) + "\r\nRCPT TO:<gone@example.org>\r\nRCPT TO:<ok@example.org>\r\nRCPT TO:<busy@example.org>\r\n"
	found := false
	for _, w := range h.dl.writeList() {
		found = found || w == group
	}
	if !found {
		t.Errorf("no single write of the pipelined group %q; writes: %q", group, h.dl.writeList())
	}
	for _, l := range []string{"to=<ok@example.org> relay=" + relay, "tls=none dsn=2.0.0 status=sent answer=\"250 2.0.0 OK: queued\"",
		"to=<gone@example.org>", "dsn=5.1.1 status=bounced", "dsn=4.3.0 status=deferred"} {
		if !strings.Contains(h.log.String(), l) {
			t.Errorf("log lacks %q:\n%s", l, h.log)
		}
	}
}

// Each way a host can fail sends the message on to the next one.
func TestDeliverFallsBack(t *testing.T) {
	hang := func(c net.Conn, r *bufio.Reader) { io.Copy(io.Discard, r) } // silent until the client gives up
	greet421 := func(c net.Conn, r *bufio.Reader) { fmt.Fprintf(c, "421 4.3.2 too busy, try later\r\n") }
	dropInData := func(c net.Conn, r *bufio.Reader) {
		fmt.Fprintf(c, "220 drop.test ESMTP\r\n")
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			switch {
			case strings.HasPrefix(l, "EHLO"):
				fmt.Fprintf(c, "250-drop.test\r\n250 8BITMIME\r\n")
			case strings.HasPrefix(l, "DATA"):
				fmt.Fprintf(c, "354 go on\r\n")
				r.ReadString('\n') // one line of the text, then gone
				return
			default:
				fmt.Fprintf(c, "250 ok\r\n")
			}
		}
	}
	tempMail := func(c net.Conn, r *bufio.Reader) {
		fmt.Fprintf(c, "220 t.test ESMTP\r\n")
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			switch {
			case strings.HasPrefix(l, "EHLO"):
				fmt.Fprintf(c, "250 t.test\r\n")
			case strings.HasPrefix(l, "MAIL"):
				fmt.Fprintf(c, "451 4.3.0 queue full\r\n")
			case strings.HasPrefix(l, "QUIT"):
				fmt.Fprintf(c, "221 bye\r\n")
				return
			default:
				fmt.Fprintf(c, "503 5.5.1 no\r\n")
			}
		}
	}
	for _, tt := range []struct {
		name   string
		serve  func(net.Conn, *bufio.Reader)
		answer string
	}{
		{"refused", nil, "connection refused"},
		{"hangs", hang, "timeout"},
		{"421 greeting", greet421, "421 4.3.2 too busy"},
		{"drops mid-DATA", dropInData, "broke during DATA"},
		{"4xx to MAIL", tempMail, "451 4.3.0 queue full"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var first route.Target
			var contacted *atomic.Int32
			if tt.serve == nil {
				first = refusedTarget(t, "127.0.0.3")
			} else {
				first, contacted = scripted(t, "127.0.0.3", tt.serve)
			}
			good := newMX(t, "127.0.0.4", 0)
			h := newHarness(t, []route.Target{first, good.target("mx2.example.org")}, func(o *Options) {
				o.Client.GreetingTimeout = 300 * time.Millisecond
			})
			res := h.deliver(message("Q2", "a@sender.test", text), transport.Hop{}, rcpts("x@example.org", "y@example.org"))
			for i, r := range res {
				if !r.Delivered() || !strings.HasPrefix(r.RemoteMTA, "mx2.example.org[") {
					t.Errorf("recipient %d: %+v, want delivered by mx2", i, r)
				}
			}
			if got := good.received(); len(got) != 1 || len(got[0].Rcpts) != 2 || string(got[0].Data) != crlf(text) {
				t.Errorf("mx2 received %+v", got)
			}
			if contacted != nil && contacted.Load() == 0 {
				t.Errorf("the first host was never contacted")
			}
			// Alone, the failing host defers the recipients with its error.
			h.targets = h.targets[:1]
			res = h.deliver(message("Q3", "a@sender.test", text), transport.Hop{}, rcpts("x@example.org"))
			if !res[0].Temporary || !strings.Contains(res[0].Answer, tt.answer) {
				t.Errorf("alone: %+v, want deferred with %q", res[0], tt.answer)
			}
			wantUnreachable := tt.name != "drops mid-DATA" && tt.name != "4xx to MAIL"
			if res[0].Unreachable != wantUnreachable {
				t.Errorf("alone: Unreachable = %v, want %v", res[0].Unreachable, wantUnreachable)
			}
		})
	}
}

// Addresses of one host are tried in order, then the next host.
func TestDeliverTriesEveryAddress(t *testing.T) {
	good := newMX(t, "127.0.0.6", 0)
	dead := refusedTarget(t, "127.0.0.5")
	// One host with a dead address first and the good one second, on one
	// port: the good server's.
	good.target("")
	tg := route.Target{Host: "mx.example.org", Addrs: []netip.Addr{dead.Addrs[0], good.ap.Addr()}, Port: int(good.ap.Port())}
	h := newHarness(t, []route.Target{{Host: "broken.example.org", Err: fmt.Errorf("SERVFAIL")}, tg}, nil)
	res := h.deliver(message("Q4", "", text), transport.Hop{}, rcpts("x@example.org"))
	if !res[0].Delivered() {
		t.Fatalf("result %+v", res[0])
	}
	if got := good.received(); len(got) != 1 || got[0].From != "" {
		t.Fatalf("received %+v, want one message from <>", got)
	}
	if n := len(h.dl.dials); n != 2 || !strings.HasPrefix(h.dl.dials[0], "127.0.0.5:") {
		t.Errorf("dials %q, want the dead address first", h.dl.dials)
	}
	if !strings.Contains(good.written(), "MAIL FROM:<>") {
		t.Errorf("null sender not sent as <>: %q", good.written())
	}
}

func TestDeliverRouteError(t *testing.T) {
	h := newHarness(t, nil, nil)
	for _, tt := range []struct {
		err  *route.Error
		temp bool
	}{
		{&route.Error{Status: "5.1.2", Msg: "no such domain: nx.example"}, false},
		{&route.Error{Status: "5.1.10", Msg: "null MX"}, false},
		{&route.Error{Status: "4.4.3", Temporary: true, Msg: "SERVFAIL"}, true},
	} {
		h.rerr = tt.err
		res := h.deliver(message("Q5", "a@sender.test", text), transport.Hop{}, rcpts("a@nx.example", "b@nx.example"))
		for _, r := range res {
			if r.Status != tt.err.Status || r.Temporary != tt.temp || r.Answer != tt.err.Msg || r.Unreachable != tt.temp {
				t.Errorf("%v: got %+v", tt.err, r)
			}
		}
	}
	if len(h.dl.dials) != 0 {
		t.Errorf("dialled %q after a routing failure", h.dl.dials)
	}
}

// A 452 at RCPT: the accepted go, the rest follow in further
// transactions on the same connection.
func TestDeliver452Splits(t *testing.T) {
	// The server's LIMITS line is hidden, so that the limit is learnt
	// from the 452s.
	m := newMX(t, "127.0.0.2", 0, func(m *mx) { m.srv.MaxRecipients = 2; m.hide = []string{"LIMITS RCPTMAX=2"} })
	h := newHarness(t, []route.Target{m.target("mx.example.org")}, nil)
	rs := rcpts("a@example.org", "b@example.org", "c@example.org", "d@example.org", "e@example.org")
	res := h.deliver(message("Q6", "s@sender.test", text), transport.Hop{}, rs)
	for i, r := range res {
		if !r.Delivered() {
			t.Errorf("recipient %d: %+v", i, r)
		}
	}
	got := m.received()
	var split []string
	for _, g := range got {
		split = append(split, strings.Join(g.Rcpts, ","))
		if string(g.Data) != crlf(text) {
			t.Errorf("text %q", g.Data)
		}
	}
	if strings.Join(split, " ") != "a@example.org,b@example.org c@example.org,d@example.org e@example.org" {
		t.Errorf("transactions %q", split)
	}
	if m.connCount() != 1 {
		t.Errorf("%d connections, want 1", m.connCount())
	}
	if n := strings.Count(m.written(), "RCPT TO:"); n != 9 {
		t.Errorf("%d RCPTs sent, want 9 (5, then 3 and 1 again after 452s)", n)
	}

	// Told the limit by LIMITS RCPTMAX (RFC 9422), the client splits the
	// recipients itself: no 452, no RCPT sent twice.
	lim := newMX(t, "127.0.0.3", 0, func(m *mx) { m.srv.MaxRecipients = 2 })
	h = newHarness(t, []route.Target{lim.target("mx.example.org")}, nil)
	for i, r := range h.deliver(message("Q6b", "s@sender.test", text), transport.Hop{}, rs) {
		if !r.Delivered() {
			t.Errorf("recipient %d: %+v", i, r)
		}
	}
	if n := strings.Count(lim.written(), "RCPT TO:"); n != 5 || len(lim.received()) != 3 {
		t.Errorf("%d RCPTs in %d transactions, want 5 in 3", n, len(lim.received()))
	}
}

// A refusal of the text fails every accepted recipient; a 4xx defers them.
func TestDeliverDataRefused(t *testing.T) {
	for _, tt := range []struct {
		err    *smtp.SMTPError
		temp   bool
		status string
	}{
		{&smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "content refused"}, false, "5.6.0"},
		{&smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "disk full"}, true, "4.3.1"},
	} {
		m := newMX(t, "127.0.0.2", 0)
		m.data = func([]byte) error { return tt.err }
		h := newHarness(t, []route.Target{m.target("mx.example.org")}, nil)
		res := h.deliver(message("Q7", "s@sender.test", text), transport.Hop{}, rcpts("a@example.org", "b@example.org"))
		for _, r := range res {
			if r.Status != tt.status || r.Temporary != tt.temp || r.Reply != tt.err.Code || r.Unreachable {
				t.Errorf("%d: %+v", tt.err.Code, r)
			}
		}
	}
}

func TestDeliverDSNParameters(t *testing.T) {
	m := newMX(t, "127.0.0.2", 0, func(m *mx) { m.srv.EnableDSN = true })
	h := newHarness(t, []route.Target{m.target("mx.example.org")}, nil)
	msg := message("Q8", "s@sender.test", text)
	msg.EnvID, msg.Ret = "env id+1", "HDRS"
	rs := []transport.Recipient{
		{Addr: "a@example.org", Notify: transport.NotifySuccess | transport.NotifyFailure, ORcpt: "rfc822;Alias=A@example.org"},
		{Addr: "b@example.org", Notify: transport.NotifyNever},
	}
	res := h.deliver(msg, transport.Hop{}, rs)
	if !res[0].Delivered() || res[0].Relayed {
		t.Errorf("result %+v: want delivered, not relayed (the host offers DSN)", res[0])
	}
	tr := m.written()
	for _, w := range []string{"RET=HDRS ENVID=env+20id+2B1\r\n", "RCPT TO:<a@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Alias+3DA@example.org\r\n", "RCPT TO:<b@example.org> NOTIFY=NEVER\r\n"} {
		if !strings.Contains(tr, w) {
			t.Errorf("sent no %q:\n%s", w, tr)
		}
	}
	got := m.received()
	if len(got) != 1 || got[0].Opts.EnvelopeID != "env id+1" || got[0].RcptOpts[0].OriginalRecipient != "Alias=A@example.org" {
		t.Errorf("server decoded %+v", got)
	}
}

func TestDeliverSizeTooBig(t *testing.T) {
	m := newMX(t, "127.0.0.2", 0, func(m *mx) { m.srv.MaxMessageBytes = 50 })
	h := newHarness(t, []route.Target{m.target("mx.example.org")}, nil)
	res := h.deliver(message("Q9", "s@sender.test", text), transport.Hop{}, rcpts("a@example.org"))
	if res[0].Status != "5.3.4" || res[0].Temporary {
		t.Errorf("result %+v, want 5.3.4", res[0])
	}
	if strings.Contains(m.written(), "MAIL") {
		t.Errorf("MAIL sent for a message over SIZE")
	}
}

// A recipient that needs SMTPUTF8 fails with 5.6.7 at a host without it;
// the others go. With it, SMTPUTF8 is sent.
func TestDeliverSMTPUTF8(t *testing.T) {
	plain := newMX(t, "127.0.0.2", 0)
	h := newHarness(t, []route.Target{plain.target("mx.example.org")}, nil)
	res := h.deliver(message("Q10", "s@sender.test", text), transport.Hop{}, rcpts("dörte@example.org", "a@example.org"))
	if res[0].Status != "5.6.7" || res[0].Temporary || !res[1].Delivered() {
		t.Errorf("results %+v", res)
	}
	if got := plain.received(); len(got) != 1 || strings.Join(got[0].Rcpts, ",") != "a@example.org" {
		t.Errorf("received %+v", got)
	}
	res = h.deliver(message("Q11", "jürgen@sender.test", text), transport.Hop{}, rcpts("a@example.org"))
	if res[0].Status != "5.6.7" {
		t.Errorf("UTF-8 sender: %+v", res[0])
	}

	utf := newMX(t, "127.0.0.3", 0, func(m *mx) { m.srv.EnableSMTPUTF8 = true })
	h = newHarness(t, []route.Target{utf.target("mx.example.org")}, nil)
	res = h.deliver(message("Q12", "s@sender.test", text), transport.Hop{}, rcpts("dörte@example.org"))
	if !res[0].Delivered() {
		t.Errorf("result %+v", res[0])
	}
	if got := utf.received(); len(got) != 1 || !got[0].Opts.UTF8 || got[0].Rcpts[0] != "dörte@example.org" {
		t.Errorf("received %+v", got)
	}
}

// An 8-bit message to a host without 8BITMIME goes quoted-printable; one
// with an 8-bit header cannot go at all.
func TestDeliver8BitConverted(t *testing.T) {
	m := newMX(t, "127.0.0.2", 0)
	m.hide = []string{"8BITMIME"}
	h := newHarness(t, []route.Target{m.target("mx.example.org")}, nil)
	body := "From: a@sender.test\nSubject: caf\n\nCaf\xc3\xa9 cr\xc3\xa8me\n"
	res := h.deliver(message("Q13", "s@sender.test", body), transport.Hop{}, rcpts("a@example.org"))
	if !res[0].Delivered() {
		t.Fatalf("result %+v", res[0])
	}
	got := m.received()
	want := "MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\nFrom: a@sender.test\r\nSubject: caf\r\n\r\nCaf=C3=A9 cr=C3=A8me\r\n"
	if len(got) != 1 || string(got[0].Data) != want || got[0].Opts.Body != "" {
		t.Errorf("received %q (BODY=%s), want %q", got[0].Data, got[0].Opts.Body, want)
	}

	res = h.deliver(message("Q14", "s@sender.test", "Subject: caf\xc3\xa9\n\nx\n"), transport.Hop{}, rcpts("a@example.org"))
	if res[0].Status != "5.6.3" || res[0].Temporary {
		t.Errorf("8-bit header: %+v, want 5.6.3", res[0])
	}
	if len(m.received()) != 1 {
		t.Errorf("a message with an 8-bit header was sent")
	}

	// A host with 8BITMIME gets the octets as they are, with BODY=8BITMIME.
	m8 := newMX(t, "127.0.0.3", 0)
	h = newHarness(t, []route.Target{m8.target("mx.example.org")}, nil)
	h.deliver(message("Q15", "s@sender.test", body), transport.Hop{}, rcpts("a@example.org"))
	if got := m8.received(); len(got) != 1 || string(got[0].Data) != crlf(body) || got[0].Opts.Body != smtp.Body8BitMIME {
		t.Errorf("8BITMIME host received %+v", got)
	}
}

// HELO when EHLO is refused.
func TestDeliverHELOFallback(t *testing.T) {
	var seen []string
	tg, _ := scripted(t, "127.0.0.3", func(c net.Conn, r *bufio.Reader) {
		fmt.Fprintf(c, "220 old.test SMTP\r\n")
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			seen = append(seen, strings.TrimSpace(l))
			switch {
			case strings.HasPrefix(l, "EHLO"):
				fmt.Fprintf(c, "502 what?\r\n")
			case strings.HasPrefix(l, "DATA"):
				fmt.Fprintf(c, "354 go\r\n")
				for {
					l, err := r.ReadString('\n')
					if err != nil || l == ".\r\n" {
						break
					}
				}
				fmt.Fprintf(c, "250 taken\r\n")
			case strings.HasPrefix(l, "QUIT"):
				fmt.Fprintf(c, "221 bye\r\n")
				return
			default:
				fmt.Fprintf(c, "250 ok\r\n")
			}
		}
	})
	h := newHarness(t, []route.Target{tg}, nil)
	for _, id := range []string{"Q16", "Q17"} {
		res := h.deliver(message(id, "s@sender.test", text), transport.Hop{}, rcpts("a@example.org", "b@example.org"))
		if !res[0].Delivered() || res[0].Answer != "250 taken" || !res[1].Delivered() {
			t.Fatalf("results %+v", res)
		}
	}
	h.tr.Close()
	// Without PIPELINING one command at a time; the reused connection is
	// reset before the second message.
	tx := "MAIL FROM:<s@sender.test>|RCPT TO:<a@example.org>|RCPT TO:<b@example.org>|DATA"
	want := "EHLO tern.test|HELO tern.test|" + tx + "|RSET|" + tx + "|QUIT"
	if got := strings.Join(seen, "|"); got != want {
		t.Errorf("conversation\n%q, want\n%q", got, want)
	}
}

// Three messages to one place, one connection; RSET between them; QUIT at
// Close. An idle connection past its time is closed and a new one made.
func TestDeliverReusesConnection(t *testing.T) {
	m := newMX(t, "127.0.0.2", 0)
	h := newHarness(t, []route.Target{m.target("mx.example.org")}, nil)
	for i := range 3 {
		res := h.deliver(message(fmt.Sprint("R", i), "s@sender.test", text), transport.Hop{}, rcpts("a@example.org"))
		if !res[0].Delivered() {
			t.Fatalf("message %d: %+v", i, res[0])
		}
	}
	if n := m.connCount(); n != 1 {
		t.Errorf("%d connections for three messages, want 1", n)
	}
	if len(m.received()) != 3 {
		t.Errorf("%d messages received", len(m.received()))
	}
	if n := strings.Count(m.written(), "RSET\r\n"); n != 2 {
		t.Errorf("%d RSETs, want 2", n)
	}
	h.tr.Close()
	if !strings.HasSuffix(m.written(), "QUIT\r\n") {
		t.Errorf("no QUIT at Close")
	}

	m2 := newMX(t, "127.0.0.3", 0)
	h2 := newHarness(t, []route.Target{m2.target("mx.example.org")}, func(o *Options) {
		o.IdleTimeout = 50 * time.Millisecond
		o.MaxMessagesPerConn = 2
	})
	for i := range 3 {
		h2.deliver(message("I", "s@sender.test", text), transport.Hop{}, rcpts("a@example.org"))
		if i == 0 {
			continue
		}
	}
	// Two messages a connection at most: the third opened another.
	if n := m2.connCount(); n != 2 {
		t.Errorf("%d connections with 2 messages a connection, want 2", n)
	}
	time.Sleep(300 * time.Millisecond)
	h2.deliver(message("J", "s@sender.test", text), transport.Hop{}, rcpts("a@example.org"))
	if n := m2.connCount(); n != 3 {
		t.Errorf("%d connections after the idle time, want 3", n)
	}
}

// A kept connection the server closed meanwhile costs nothing: a new one
// carries the message.
func TestDeliverStaleConnection(t *testing.T) {
	m := newMX(t, "127.0.0.2", 0)
	m.srv.ReadTimeout = 100 * time.Millisecond
	h := newHarness(t, []route.Target{m.target("mx.example.org")}, nil)
	h.deliver(message("S1", "s@sender.test", text), transport.Hop{}, rcpts("a@example.org"))
	time.Sleep(400 * time.Millisecond) // the server times the idle connection out
	res := h.deliver(message("S2", "s@sender.test", text), transport.Hop{}, rcpts("a@example.org"))
	if !res[0].Delivered() {
		t.Fatalf("after a stale connection: %+v", res[0])
	}
	if len(m.received()) != 2 || m.connCount() != 2 {
		t.Errorf("%d messages over %d connections, want 2 over 2", len(m.received()), m.connCount())
	}
}

func TestDeliverIPv6(t *testing.T) {
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no ::1 on this machine (%v): the IPv6 MX test needs a loopback IPv6 address", err)
	}
	l.Close()
	m := newMX(t, "::1", 0)
	h := newHarness(t, []route.Target{m.target("mx6.example.org")}, nil)
	res := h.deliver(message("Q17", "s@sender.test", text), transport.Hop{}, rcpts("a@example.org"))
	if !res[0].Delivered() || res[0].RemoteMTA != fmt.Sprintf("mx6.example.org[::1]:%d", m.ap.Port()) {
		t.Fatalf("result %+v", res[0])
	}
	if got := m.received(); len(got) != 1 || string(got[0].Data) != crlf(text) {
		t.Errorf("received %+v", got)
	}
}

// A cancelled context ends a delivery stuck on a silent host at once,
// whatever the SMTP time limits say.
func TestDeliverContextCancels(t *testing.T) {
	tg, _ := scripted(t, "127.0.0.3", func(c net.Conn, r *bufio.Reader) {
		fmt.Fprintf(c, "220 slow.test ESMTP\r\n")
		io.Copy(io.Discard, r) // EHLO is never answered
	})
	h := newHarness(t, []route.Target{tg}, func(o *Options) { o.Client.EHLOTimeout = time.Minute })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	res := h.tr.Deliver(ctx, message("C1", "s@sender.test", text), transport.Hop{Kind: transport.SMTP, Key: "k", Domain: "example.org"}, rcpts("a@example.org"))
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Deliver took %v after its context ended", d)
	}
	if !res[0].Temporary {
		t.Errorf("result %+v, want deferred", res[0])
	}
}

// A refused MAIL decides every recipient; a temporary one defers them.
func TestDeliverMailRefused(t *testing.T) {
	m := newMX(t, "127.0.0.2", 0)
	m.mail = func(string) error {
		return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "sender refused"}
	}
	h := newHarness(t, []route.Target{m.target("mx.example.org")}, nil)
	res := h.deliver(message("M1", "s@sender.test", text), transport.Hop{}, rcpts("a@example.org", "b@example.org"))
	for _, r := range res {
		if r.Status != "5.7.1" || r.Temporary || r.Answer != "553 5.7.1 sender refused" {
			t.Errorf("result %+v", r)
		}
	}
}

// Concurrent deliveries to one place share the cache; every message
// arrives and no more connections are opened than deliveries ran at once.
func TestDeliverConcurrent(t *testing.T) {
	m := newMX(t, "127.0.0.2", 0)
	h := newHarness(t, []route.Target{m.target("mx.example.org")}, nil)
	const workers, each = 6, 5
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				res := h.tr.Deliver(context.Background(), message(fmt.Sprint(w, "-", i), "s@sender.test", text),
					transport.Hop{Kind: transport.SMTP, Key: "smtp:example.org", Domain: "example.org"}, rcpts("a@example.org"))
				if !res[0].Delivered() {
					t.Errorf("%d-%d: %+v", w, i, res[0])
				}
			}
		}()
	}
	wg.Wait()
	if n := len(m.received()); n != workers*each {
		t.Errorf("%d messages received, want %d", n, workers*each)
	}
	if n := m.connCount(); n > workers {
		t.Errorf("%d connections for %d concurrent senders", n, workers)
	}
}

// More recipients than one transaction carries: several transactions on
// one connection, each recipient once.
func TestDeliverManyRecipients(t *testing.T) {
	m := newMX(t, "127.0.0.2", 0)
	h := newHarness(t, []route.Target{m.target("mx.example.org")}, nil)
	var addrs []string
	for i := range 250 {
		addrs = append(addrs, fmt.Sprintf("r%d@example.org", i))
	}
	res := h.deliver(message("MANY", "s@sender.test", text), transport.Hop{}, rcpts(addrs...))
	for i, r := range res {
		if !r.Delivered() {
			t.Fatalf("recipient %d: %+v", i, r)
		}
	}
	var got []string
	var sizes []int
	for _, g := range m.received() {
		got = append(got, g.Rcpts...)
		sizes = append(sizes, len(g.Rcpts))
	}
	if strings.Join(got, ",") != strings.Join(addrs, ",") || fmt.Sprint(sizes) != "[100 100 50]" || m.connCount() != 1 {
		t.Errorf("transactions of %v recipients over %d connections", sizes, m.connCount())
	}
}

// An ORCPT of type utf-8 goes as RFC 6533's utf-8-addr-xtext to a host
// without SMTPUTF8.
func TestDeliverORCPTUTF8(t *testing.T) {
	m := newMX(t, "127.0.0.2", 0, func(m *mx) { m.srv.EnableDSN = true })
	h := newHarness(t, []route.Target{m.target("mx.example.org")}, nil)
	res := h.deliver(message("U1", "s@sender.test", text), transport.Hop{}, []transport.Recipient{{Addr: "a@example.org", ORcpt: "utf-8;dörte@example.org"}})
	if !res[0].Delivered() {
		t.Fatalf("result %+v", res[0])
	}
	if w := `RCPT TO:<a@example.org> ORCPT=utf-8;d\x{F6}rte@example.org` + "\r\n"; !strings.Contains(m.written(), w) {
		t.Errorf("sent no %q:\n%s", w, m.written())
	}
}

// A 421 in the middle of a conversation: the recipients are deferred and
// the connection is not kept for the next message.
func TestDeliver421ClosesConnection(t *testing.T) {
	var calls atomic.Int32
	m := newMX(t, "127.0.0.2", 0, func(m *mx) {
		m.mail = func(string) error {
			if calls.Add(1) == 1 {
				return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "shutting down"}
			}
			return nil
		}
	})
	h := newHarness(t, []route.Target{m.target("mx.example.org")}, nil)
	res := h.deliver(message("F1", "s@sender.test", text), transport.Hop{}, rcpts("a@example.org"))
	if !res[0].Temporary || res[0].Reply != 421 {
		t.Fatalf("result %+v", res[0])
	}
	res = h.deliver(message("F2", "s@sender.test", text), transport.Hop{}, rcpts("a@example.org"))
	if !res[0].Delivered() || m.connCount() != 2 {
		t.Errorf("after a 421: %+v over %d connections, want delivered over a second one", res[0], m.connCount())
	}
}

// The cache is bounded: with room for one idle connection, the one idle
// longest is QUIT when another comes; an idle one past its time is QUIT
// by itself.
func TestDeliverCacheBounded(t *testing.T) {
	a := newMX(t, "127.0.0.2", 0)
	b := newMX(t, "127.0.0.3", 0)
	h := newHarness(t, nil, func(o *Options) { o.MaxIdle = 1; o.IdleTimeout = time.Second })
	h.targets = []route.Target{a.target("mx.a.example")}
	h.deliver(message("E1", "s@sender.test", text), transport.Hop{Domain: "a.example"}, rcpts("x@a.example"))
	h.targets = []route.Target{b.target("mx.b.example")}
	h.deliver(message("E2", "s@sender.test", text), transport.Hop{Domain: "b.example"}, rcpts("x@b.example"))
	waitFor(t, func() bool { return strings.HasSuffix(a.written(), "QUIT\r\n") }, "a's connection QUIT when b's took its place")
	if strings.Contains(b.written(), "QUIT") {
		t.Errorf("b's connection QUIT at once")
	}
	waitFor(t, func() bool { return strings.HasSuffix(b.written(), "QUIT\r\n") }, "b's connection QUIT after its idle time")
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for range 200 {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("no %s", what)
}

// A route to an address literal: the relay is named by its address, and
// tls=verify has no name to check a certificate against.
func TestDeliverAddressLiteral(t *testing.T) {
	srvTLS, pool := testTLS(t)
	m := newMX(t, "127.0.0.2", 0, withTLS(srvTLS))
	tg := m.target("")
	h := newHarness(t, []route.Target{tg}, func(o *Options) { o.RootCAs = pool })
	rt := &conf.Route{Domain: "*", Addr: m.ap.Addr(), Port: int(m.ap.Port())}
	res := h.deliver(message("L1", "s@sender.test", text), transport.Hop{Key: "[127.0.0.2]", Route: rt}, rcpts("a@example.org"))
	want := fmt.Sprintf("127.0.0.2[127.0.0.2]:%d", m.ap.Port())
	if !res[0].Delivered() || res[0].RemoteMTA != want || res[0].TLS == "" {
		t.Errorf("result %+v, want delivered over TLS by %s", res[0], want)
	}
	rt.TLS = conf.TLSVerify
	res = h.deliver(message("L2", "s@sender.test", text), transport.Hop{Key: "[127.0.0.2]", Route: rt}, rcpts("a@example.org"))
	if !res[0].Temporary || res[0].Status != "4.7.5" || !strings.Contains(res[0].Answer, "address literal") {
		t.Errorf("verify with an address literal: %+v", res[0])
	}
}
