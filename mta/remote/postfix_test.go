package remote

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tern-mail/tern/mta/route"
	"github.com/tern-mail/tern/mta/transport"
)

// smtpSink runs Postfix's smtp-sink on a loopback address as the MX host:
// an SMTP server we did not write, that dumps each transaction it takes
// into dir. flags are smtp-sink's own ("-8": no 8BITMIME).
func smtpSink(t *testing.T, ip string, flags ...string) (route.Target, string) {
	t.Helper()
	bin, err := exec.LookPath("smtp-sink")
	if err != nil {
		t.Skip("smtp-sink not installed: the interoperability test with Postfix's SMTP server needs Debian's postfix package")
	}
	if os.Getuid() != 0 {
		t.Skip("smtp-sink must run as root to drop to nobody")
	}
	// smtp-sink writes as nobody, who cannot enter t.TempDir()'s parent.
	dir, err := os.MkdirTemp("", "tern-smtp-sink-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(l.Addr().String())
	l.Close()
	args := append(append([]string{"-u", "nobody", "-h", "sink.test", "-d", dir + "/%H%M%S."}, flags...), ap.String(), "16")
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", ap.String())
		if err == nil {
			c.Close()
			break
		}
		if i == 100 {
			t.Fatalf("smtp-sink did not listen on %s: %s", ap, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return route.Target{Host: "sink.test", Addrs: []netip.Addr{ap.Addr()}, Port: int(ap.Port())}, dir
}

// sinkDump is one transaction as smtp-sink wrote it down.
type sinkDump struct {
	helo, mail string
	rcpts      []string
	text       string // the message as received, LF line ends, dots taken off
}

func readSinkDumps(t *testing.T, dir string, want int) []sinkDump {
	t.Helper()
	var names []string
	for i := 0; i < 100; i++ {
		names, _ = filepath.Glob(filepath.Join(dir, "*"))
		if len(names) >= want {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	sort.Strings(names)
	var out []sinkDump
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		var d sinkDump
		s := string(b)
		for {
			line, rest, _ := strings.Cut(s, "\n")
			k, v, _ := strings.Cut(line, ": ")
			switch k {
			case "X-Helo-Args":
				d.helo = v
			case "X-Mail-Args":
				d.mail = v
			case "X-Rcpt-Args":
				d.rcpts = append(d.rcpts, v)
			}
			s = rest
			if k == "Received" {
				break
			}
		}
		// The Received field's two continuation lines, then the text and
		// the empty line smtp-sink adds.
		_, s, _ = strings.Cut(s, "\n")
		_, s, _ = strings.Cut(s, "\n")
		d.text = strings.TrimSuffix(s, "\n")
		out = append(out, d)
	}
	return out
}

// Postfix's smtp-sink as the MX: EHLO with our name, pipelined envelope
// with DSN parameters, the text byte for byte with its dot lines, the
// connection reused for the next messages.
func TestDeliverToPostfixSink(t *testing.T) {
	tg, dir := smtpSink(t, "127.0.0.7")
	h := newHarness(t, []route.Target{tg}, nil)
	var sent []string
	for i := range 3 {
		body := fmt.Sprintf("From: s@sender.test\nSubject: %d\n\n.a dot line\n..two\nend\n", i)
		sent = append(sent, body)
		msg := message(fmt.Sprint("P", i), "s@sender.test", body)
		msg.EnvID = "id " + fmt.Sprint(i)
		rs := []transport.Recipient{{Addr: "a@example.org", Notify: transport.NotifyFailure}, {Addr: "b@example.org"}}
		res := h.deliver(msg, transport.Hop{}, rs)
		for _, r := range res {
			if !r.Delivered() || r.Relayed || !strings.HasPrefix(r.Answer, "250 2.0.0") {
				t.Fatalf("message %d: %+v", i, r)
			}
		}
	}
	h.tr.Close()
	dumps := readSinkDumps(t, dir, 3)
	if len(dumps) != 3 {
		t.Fatalf("%d transactions dumped, want 3", len(dumps))
	}
	// Dump files are named by the second and a random number: put them in
	// the order sent by their ENVID.
	sort.Slice(dumps, func(a, b int) bool { return dumps[a].mail < dumps[b].mail })
	for i, d := range dumps {
		// smtp-sink offers no SIZE, so none is sent.
		wantMail := fmt.Sprintf("<s@sender.test> ENVID=id+20%d", i)
		if d.helo != "tern.test" || d.mail != wantMail || strings.Join(d.rcpts, "|") != "<a@example.org> NOTIFY=FAILURE|<b@example.org>" {
			t.Errorf("transaction %d: EHLO %q MAIL %q RCPT %q; want MAIL %q", i, d.helo, d.mail, d.rcpts, wantMail)
		}
		if d.text != sent[i] {
			t.Errorf("transaction %d: text %q, want %q", i, d.text, sent[i])
		}
	}
}

// smtp-sink without 8BITMIME gets an 8-bit message quoted-printable;
// one refusing RCPT (and so not pipelining) has each recipient's refusal
// recorded.
func TestDeliverToPostfixSinkRefusals(t *testing.T) {
	tg, dir := smtpSink(t, "127.0.0.7", "-8")
	h := newHarness(t, []route.Target{tg}, nil)
	res := h.deliver(message("P8", "s@sender.test", "Subject: x\n\ncaf\xc3\xa9\n"), transport.Hop{}, rcpts("a@example.org"))
	if !res[0].Delivered() {
		t.Fatalf("result %+v", res[0])
	}
	dumps := readSinkDumps(t, dir, 1)
	want := "MIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\nSubject: x\n\ncaf=C3=A9\n"
	if len(dumps) != 1 || dumps[0].text != want || strings.Contains(dumps[0].mail, "BODY=") {
		t.Fatalf("dumped %+v, want text %q without BODY=", dumps, want)
	}

	tg, _ = smtpSink(t, "127.0.0.7", "-f", "RCPT")
	h = newHarness(t, []route.Target{tg}, nil)
	res = h.deliver(message("PR", "s@sender.test", text), transport.Hop{}, rcpts("a@example.org", "b@example.org"))
	for _, r := range res {
		if r.Temporary || r.Reply != 500 || r.Status != "5.3.0" || !strings.HasPrefix(r.Answer, "500 5.3.0") {
			t.Errorf("refused RCPT: %+v", r)
		}
	}
	tg, _ = smtpSink(t, "127.0.0.7", "-r", "MAIL")
	h = newHarness(t, []route.Target{tg}, nil)
	res = h.deliver(message("PM", "s@sender.test", text), transport.Hop{}, rcpts("a@example.org"))
	if !res[0].Temporary || res[0].Reply != 450 || res[0].Unreachable {
		t.Errorf("soft-refused MAIL: %+v", res[0])
	}
}
