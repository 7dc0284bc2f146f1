package tests

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tern-mail/tern/internal/testcert"
)

// The enqueue stand-in: keeps each message as $TERN_QUEUE/msg.*.eml with
// its arguments and the variables tern-smtpd sets, or refuses with the
// status written in $TERN_QUEUE/status.
const smtpdStub = `#!/bin/sh
st=$(cat "$TERN_QUEUE/status" 2>/dev/null)
if [ -n "$st" ]; then cat >/dev/null; echo "stub: refusing with $st" >&2; exit "$st"; fi
n=$(mktemp "$TERN_QUEUE/msg.XXXXXX") || exit 75
printf '%s\n' "$@" > "$n.args"
env | grep -E '^(TERN_CID|TCPREMOTEIP|TERN_AUTH_USER)=' | sort > "$n.env"
cat > "$n.tmp" && mv "$n.tmp" "$n.eml" || exit 75
rm -f "$n"
echo "qid=${n##*/}"
`

// smtpdRoot is a root with a control directory for example.org: bob
// (password "secret"), alice, aliases, and the stand-in enqueue command.
func smtpdRoot(t *testing.T) (*Root, string) {
	t.Helper()
	r := NewRoot(t)
	r.WriteFile("etc/tern/hostname", "mx.test\n")
	r.WriteFile("etc/tern/domains", "example.org\n")
	r.WriteFile("etc/tern/users",
		"bob@example.org:{PLAIN}secret:::"+":"+filepath.Join(r.Home, "bob")+":\n"+
			"alice@example.org:{PLAIN}wonder:::"+":"+filepath.Join(r.Home, "alice")+":\n")
	r.WriteFile("etc/tern/aliases", "postmaster: bob@example.org\nsales: bob@example.org, alice@example.org\n")
	stub := r.WriteFile("bin/enqueue-stub", smtpdStub)
	if err := os.Chmod(stub, 0o755); err != nil {
		t.Fatal(err)
	}
	return r, stub
}

// queued returns the messages the stand-in kept.
func queued(t *testing.T, r *Root) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(r.Queue, "msg.*.eml"))
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

func queuedArgs(t *testing.T, r *Root) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(r.Queue, "msg.*.args"))
	var out []string
	for _, f := range files {
		b, _ := os.ReadFile(f)
		out = append(out, strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", " "))
	}
	return out
}

func expectQueued(t *testing.T, r *Root, n int) []string {
	t.Helper()
	msgs := queued(t, r)
	if len(msgs) != n {
		t.Fatalf("queue holds %d messages, want %d: %q", len(msgs), n, msgs)
	}
	return msgs
}

// startSmtpd runs tern-smtpd --listen on a free loopback port.
func startSmtpd(t *testing.T, r *Root, env []string, args ...string) (*Proc, string) {
	t.Helper()
	p := r.Start(nil, env, "tern-smtpd", append([]string{"--listen", "127.0.0.1:0"}, args...)...)
	re := regexp.MustCompile(`tern-smtpd: info: listening addr=(\S+)`)
	var addr string
	Eventually(t, 10*time.Second, "tern-smtpd reports its address", func() bool {
		if m := re.FindStringSubmatch(p.Stderr()); m != nil {
			addr = m[1]
			return true
		}
		if _, ended := p.Wait(0); ended {
			t.Fatalf("tern-smtpd ended:\n%s", p.Stderr())
		}
		return false
	})
	t.Cleanup(func() {
		p.Signal(syscall.SIGTERM)
		if _, ok := p.Wait(10 * time.Second); !ok {
			p.Kill()
		}
		if testing.Verbose() {
			t.Logf("tern-smtpd log:\n%s", p.Stderr())
		}
	})
	return p, addr
}

// smtpClient is a raw client: what it sends is exactly what goes on the
// wire.
type smtpClient struct {
	t   *testing.T
	r   *bufio.Reader
	w   io.Writer
	c   net.Conn // nil on pipes
	set func(time.Time)
}

func smtpDial(t *testing.T, addr string) *smtpClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &smtpClient{t: t, r: bufio.NewReader(c), w: c, c: c, set: func(d time.Time) { c.SetReadDeadline(d) }}
}

// reply reads one whole reply, lines joined by "\n"; "" on EOF.
func (s *smtpClient) reply() string {
	s.t.Helper()
	if s.set != nil {
		s.set(time.Now().Add(15 * time.Second))
	}
	var lines []string
	for {
		l, err := s.r.ReadString('\n')
		if err != nil {
			if err == io.EOF && len(lines) == 0 && l == "" {
				return ""
			}
			s.t.Fatalf("reading reply after %q: %v", lines, err)
		}
		l = strings.TrimRight(l, "\r\n")
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return strings.Join(lines, "\n")
		}
	}
}

func (s *smtpClient) send(raw string) {
	s.t.Helper()
	if _, err := io.WriteString(s.w, raw); err != nil {
		s.t.Fatalf("send %q: %v", raw, err)
	}
}

func (s *smtpClient) cmd(line string) string {
	s.t.Helper()
	s.send(line + "\r\n")
	return s.reply()
}

// expect sends a command and checks the reply starts with want.
func (s *smtpClient) expect(line, want string) string {
	s.t.Helper()
	got := s.cmd(line)
	if !strings.HasPrefix(got, want) {
		s.t.Fatalf("%q: got %q, want %q...", line, got, want)
	}
	return got
}

func (s *smtpClient) expectReply(want string) string {
	s.t.Helper()
	got := s.reply()
	if !strings.HasPrefix(got, want) {
		s.t.Fatalf("got %q, want %q...", got, want)
	}
	return got
}

func (s *smtpClient) expectClosed() {
	s.t.Helper()
	if got := s.reply(); got != "" {
		s.t.Fatalf("want the connection closed, got %q", got)
	}
}

// transaction runs EHLO, MAIL, RCPT and DATA up to the 354.
func (s *smtpClient) transaction(from, to string) {
	s.t.Helper()
	s.expect("EHLO client.example", "250")
	s.expect("MAIL FROM:<"+from+">", "250")
	s.expect("RCPT TO:<"+to+">", "250")
	s.expect("DATA", "354")
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func cidOf(t *testing.T, greeting string) string {
	t.Helper()
	m := regexp.MustCompile(`cid=(\S+)`).FindStringSubmatch(greeting)
	if m == nil {
		t.Fatalf("no cid in %q", greeting)
	}
	return m[1]
}

// TestSmtpdSwaksMX: mail for a local user from anywhere is queued with a
// Received line, and 250 carries the queue id; the greeting, the error
// replies and the log carry the connection id.
func TestSmtpdSwaksMX(t *testing.T) {
	Need(t, "swaks")
	r, stub := smtpdRoot(t)
	p, addr := startSmtpd(t, r, nil, "--enqueue", stub, "--greet-delay", "0")
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command("swaks", "--server", host, "--port", port, "--helo", "client.example",
		"--from", "a@remote.example", "--to", "bob+lists@example.org", "--body", "hello bob").CombinedOutput()
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`<-  250 2\.0\.0 ok: queued as (\S+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no queue id in the 250:\n%s", out)
	}
	for _, want := range []string{"<-  220 mx.test ESMTP", "250-SIZE 36700160", "250-8BITMIME", "250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250-SMTPUTF8"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("swaks saw no %q:\n%s", want, out)
		}
	}
	msgs := expectQueued(t, r, 1)
	rec := regexp.MustCompile(`(?s)^Received: from client\.example \(localhost \[127\.0\.0\.1\]\)\n\tby mx\.test \(tern\) with ESMTP\n\tid \S+\.1\n\tfor <bob\+lists@example\.org>; .+\n`)
	if !rec.MatchString(msgs[0]) || !strings.Contains(msgs[0], "\nhello bob\n") || strings.Contains(msgs[0], "\r") {
		t.Errorf("queued message:\n%s", msgs[0])
	}
	if args := queuedArgs(t, r); args[0] != "-v -f a@remote.example -- bob+lists@example.org" {
		t.Errorf("enqueue arguments: %q", args)
	}
	Eventually(t, 5*time.Second, "the accepted line", func() bool {
		return strings.Contains(p.Stderr(), "tern-smtpd: info: accepted cid=") && strings.Contains(p.Stderr(), " qid="+string(m[1])+" from=<a@remote.example> rcpts=1")
	})

	// An unknown user is refused at RCPT, and the reply names the
	// connection.
	out, _ = exec.Command("swaks", "--server", host, "--port", port, "--from", "a@remote.example", "--to", "nobody@example.org").CombinedOutput()
	if !regexp.MustCompile(`<\*\* 550 5\.1\.1 <nobody@example\.org>: no such user here cid=\S+`).Match(out) {
		t.Errorf("unknown user:\n%s", out)
	}
	expectQueued(t, r, 1)
}

// TestSmtpdOpenRelay: from an address outside the relay networks, mail
// for another domain is refused with 554 5.7.1 and nothing is queued;
// inside them, or with RELAYCLIENT, it is accepted.
func TestSmtpdOpenRelay(t *testing.T) {
	Need(t, "swaks")
	r, stub := smtpdRoot(t)
	_, addr := startSmtpd(t, r, nil, "--enqueue", stub, "--greet-delay", "0")
	c := smtpDial(t, addr)
	c.expectReply("220 ")
	c.expect("EHLO client.example", "250")
	c.expect("MAIL FROM:<spammer@remote.example>", "250")
	c.expect("RCPT TO:<victim@elsewhere.example>", "554 5.7.1 ")
	c.expect("RCPT TO:<victim@[192.0.2.1]>", "554 5.7.1 ")
	c.expect("RCPT TO:<bob@example.org@elsewhere.example>", "5")
	c.expect("DATA", "503 5.5.1")
	c.expect("QUIT", "221")
	expectQueued(t, r, 0)

	// The relay file lets loopback relay.
	r.WriteFile("etc/tern/relay", "127.0.0.0/8\n::1\n")
	_, addr2 := startSmtpd(t, r, nil, "--enqueue", stub, "--greet-delay", "0")
	host, port, _ := net.SplitHostPort(addr2)
	if out, err := exec.Command("swaks", "--server", host, "--port", port, "--from", "bob@example.org", "--to", "friend@elsewhere.example").CombinedOutput(); err != nil {
		t.Fatalf("relay from a relay network: %v\n%s", err, out)
	}
	expectQueued(t, r, 1)
}

// smtpdPipes runs tern-smtpd on two pipes, as behind a TLS wrapper, with
// TCPREMOTEIP telling the client's address: the way to be a client that
// is not on loopback.
func smtpdPipes(t *testing.T, r *Root, env []string, args ...string) (*smtpClient, *Proc) {
	t.Helper()
	cmd := r.Cmd("tern-smtpd", args...)
	cmd.Env = overrideEnv(cmd.Env, env)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := StartCmd(t, cmd, nil)
	return &smtpClient{t: t, r: bufio.NewReader(out), w: in}, p
}

// TestSmtpdRelayClient: RELAYCLIENT, as tcpserver rules set it, allows
// relaying; without it a remote client may not.
func TestSmtpdRelayClient(t *testing.T) {
	r, stub := smtpdRoot(t)
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{[]string{"TCPREMOTEIP=192.0.2.7"}, "554 5.7.1"},
		{[]string{"TCPREMOTEIP=192.0.2.7", "RELAYCLIENT="}, "250 "},
	} {
		c, p := smtpdPipes(t, r, tc.env, "--enqueue", stub, "--greet-delay", "0", "--rdns=false")
		c.expectReply("220 ")
		c.expect("EHLO client.example", "250")
		c.expect("MAIL FROM:<a@remote.example>", "250")
		c.expect("RCPT TO:<x@elsewhere.example>", tc.want)
		c.expect("QUIT", "221")
		if res, ok := p.Wait(10 * time.Second); !ok || res.Code != 0 {
			t.Fatalf("tern-smtpd: %v %v", ok, res)
		}
	}
}

// TestSmtpdSmuggling: the SMTP smuggling sequences (CVE-2023-51764), a
// bare CR and a NUL, sent as raw bytes, are refused with 550 5.6.0 once
// the message ends, and neither the message nor the one hidden in it is
// queued; the conversation goes on.
func TestSmtpdSmuggling(t *testing.T) {
	r, stub := smtpdRoot(t)
	_, addr := startSmtpd(t, r, nil, "--enqueue", stub, "--greet-delay", "0")
	hidden := "MAIL FROM:<admin@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n"
	for _, tc := range []struct{ name, body string }{
		{"LF.LF", "Subject: a\r\n\r\nfirst\n.\n" + hidden},
		{"CRLF.LF", "Subject: a\r\n\r\nfirst\r\n.\n" + hidden},
		{"LF.CRLF", "Subject: a\r\n\r\nfirst\n.\r\n" + hidden},
		{"CR.CR", "Subject: a\r\n\r\nfirst\r.\r" + hidden},
		{"bare LF", "Subject: a\n\nbody\r\n"},
		{"bare CR", "Subject: a\r\n\r\nbo\rdy\r\n"},
		// go-smtp's data reader drops a line's leading dot and the bare
		// CR after it: the server must see the bytes as sent.
		{"dot CR", "Subject: a\r\n\r\na\r\n.\rhidden\r\n"},
		{"dot CR at the start", ".\rSubject: a\r\n\r\nbody\r\n"},
		{"NUL", "Subject: a\r\n\r\nbo\x00dy\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := smtpDial(t, addr)
			c.expectReply("220 ")
			c.transaction("a@remote.example", "bob@example.org")
			c.send(tc.body + ".\r\n")
			if got := c.expectReply("550 5.6.0 "); !isASCII(got) {
				t.Errorf("reply is not ASCII: %q", got)
			}
			// Nothing of it was taken as commands.
			c.expect("NOOP", "250")
			c.expect("QUIT", "221")
			expectQueued(t, r, 0)
		})
	}
	// The same through BDAT (RFC 3030), which has no dots to unstuff.
	c := smtpDial(t, addr)
	c.expectReply("220 ")
	c.expect("EHLO client.example", "250")
	c.expect("MAIL FROM:<a@remote.example>", "250")
	c.expect("RCPT TO:<bob@example.org>", "250")
	chunk := "Subject: a\r\n\r\nfirst\n.\n" + hidden
	c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(chunk), chunk))
	c.expectReply("550 5.6.0 ")
	c.expect("NOOP", "250")
	expectQueued(t, r, 0)
	// A clean BDAT message is queued.
	c.expect("MAIL FROM:<a@remote.example>", "250")
	c.expect("RCPT TO:<bob@example.org>", "250")
	chunk = "Subject: b\r\n\r\nclean\r\n"
	c.send(fmt.Sprintf("BDAT %d\r\n%s", 12, chunk[:12]))
	c.expectReply("250 ")
	c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(chunk)-12, chunk[12:]))
	c.expectReply("250 2.0.0 ok: queued as ")
	if msgs := expectQueued(t, r, 1); !strings.HasSuffix(msgs[0], "Subject: b\n\nclean\n") {
		t.Fatalf("BDAT message: %q", msgs[0])
	}
}

// TestSmtpdPostmaster: RCPT TO:<postmaster> without a domain is accepted
// in any case spelling (RFC 5321 section 4.5.1) and queued for
// "postmaster", which the queue's aliases resolve; any other local part
// without a domain is refused.
func TestSmtpdPostmaster(t *testing.T) {
	r, stub := smtpdRoot(t)
	_, addr := startSmtpd(t, r, nil, "--enqueue", stub, "--greet-delay", "0")
	c := smtpDial(t, addr)
	c.expectReply("220 ")
	c.expect("EHLO client.example", "250")
	c.expect("MAIL FROM:<a@remote.example>", "250")
	c.expect("RCPT TO:<bob>", "501 5.5.2 ")
	c.expect("RCPT TO:<postmaster>", "250")
	c.expect("RCPT TO:<PostMaster> NOTIFY=NEVER", "250")
	c.expect("DATA", "354")
	c.send("Subject: to the postmaster\r\n\r\nhello\r\n.\r\n")
	c.expectReply("250 2.0.0 ok: queued")
	expectQueued(t, r, 1)
	if args := queuedArgs(t, r); len(args) != 1 || !strings.HasSuffix(args[0], "-- postmaster <PostMaster> NOTIFY=NEVER") {
		t.Fatalf("enqueue arguments: %q", args)
	}
	// Through smtplib too, as a real client sends it.
	Need(t, "python3")
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command("python3", "-c", `
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]))
s.ehlo("client.example")
print(s.sendmail("a@remote.example", ["postmaster"], "Subject: x\r\n\r\nhi\r\n"))
s.quit()
`, host, port).CombinedOutput()
	if err != nil {
		t.Fatalf("smtplib: %v\n%s", err, out)
	}
	expectQueued(t, r, 2)
}

// TestSmtpdSize: SIZE announces --max-size; a message of exactly that
// size is accepted, one byte more is refused (552 5.3.4), whether
// declared in MAIL SIZE= or found while reading.
func TestSmtpdSize(t *testing.T) {
	r, stub := smtpdRoot(t)
	_, addr := startSmtpd(t, r, nil, "--enqueue", stub, "--greet-delay", "0", "--max-size", "1000")
	body := func(n int) string {
		head := "Subject: size\r\n\r\n"
		line := strings.Repeat("x", 98) + "\r\n"
		var b strings.Builder
		b.WriteString(head)
		for b.Len()+len(line) <= n {
			b.WriteString(line)
		}
		rest := n - b.Len()
		if rest >= 3 {
			b.WriteString(strings.Repeat("y", rest-2) + "\r\n")
		} else {
			b.WriteString(strings.Repeat("\r\n", rest/2))
		}
		if b.Len() != n {
			t.Fatalf("made %d bytes, want %d", b.Len(), n)
		}
		return b.String()
	}
	c := smtpDial(t, addr)
	c.expectReply("220 ")
	if ehlo := c.expect("EHLO client.example", "250"); !strings.Contains(ehlo, "250-SIZE 1000\n") {
		t.Fatalf("EHLO: %q", ehlo)
	}
	c.expect("MAIL FROM:<a@remote.example> SIZE=1001", "552 5.3.4 ")
	c.expect("MAIL FROM:<a@remote.example> SIZE=1000", "250")
	c.expect("RCPT TO:<bob@example.org>", "250")
	c.expect("DATA", "354")
	c.send(body(1000) + ".\r\n")
	c.expectReply("250 2.0.0 ok: queued")
	expectQueued(t, r, 1)
	c.transaction("a@remote.example", "bob@example.org")
	c.send(body(1001) + ".\r\n")
	c.expectReply("552 5.3.4 ")
	c.expect("NOOP", "250")
	expectQueued(t, r, 1)
}

// TestSmtpdLongLine: a line of 1000 octets with its CRLF is accepted; one
// more is refused with 500 and the connection closed (RFC 5321
// §4.5.3.1.6, §4.5.3.1.10); a long command line likewise.
func TestSmtpdLongLine(t *testing.T) {
	r, stub := smtpdRoot(t)
	_, addr := startSmtpd(t, r, nil, "--enqueue", stub, "--greet-delay", "0")
	c := smtpDial(t, addr)
	c.expectReply("220 ")
	c.transaction("a@remote.example", "bob@example.org")
	c.send("Subject: long\r\n\r\n" + strings.Repeat("x", 998) + "\r\n.\r\n")
	c.expectReply("250 2.0.0 ok")
	c.transaction("a@remote.example", "bob@example.org")
	c.send("Subject: long\r\n\r\n" + strings.Repeat("x", 999) + "\r\n.\r\n")
	c.expectReply("500 ")
	for c.reply() != "" {
	}
	expectQueued(t, r, 1)

	c = smtpDial(t, addr)
	c.expectReply("220 ")
	c.expect("EHLO "+strings.Repeat("a", 1200), "500 ")
	c.expectClosed()
}

// TestSmtpdRecipientLimit: by default a message takes 1,000 recipients
// (Postfix's smtpd_recipient_limit); the 452s for recipients over the
// limit are not errors, so --max-errors does not cut the client off and
// the message goes to the recipients taken (RFC 5321 section 4.5.3.1.10).
func TestSmtpdRecipientLimit(t *testing.T) {
	r, stub := smtpdRoot(t)
	_, addr := startSmtpd(t, r, nil, "--enqueue", stub, "--greet-delay", "0")
	c := smtpDial(t, addr)
	c.expectReply("220 ")
	c.expect("EHLO client.example", "250")
	c.expect("MAIL FROM:<a@remote.example>", "250")
	// Pipelined (RFC 2920), as a list server sends them.
	const n, over = 1000, 30
	var b strings.Builder
	for i := range n + over {
		fmt.Fprintf(&b, "RCPT TO:<bob+%d@example.org>\r\n", i)
	}
	c.send(b.String())
	for i := range n + over {
		want := "250 "
		if i >= n {
			want = "452 4.5.3 "
		}
		if got := c.reply(); !strings.HasPrefix(got, want) {
			t.Fatalf("RCPT %d: got %q, want %q", i+1, got, want)
		}
	}
	c.expect("DATA", "354")
	c.send("Subject: many\r\n\r\nhello\r\n.\r\n")
	c.expectReply("250 2.0.0 ok: queued")
	expectQueued(t, r, 1)
	if args := queuedArgs(t, r); strings.Count(args[0], "@example.org") != n {
		t.Fatalf("queued for %d recipients, want %d", strings.Count(args[0], "@example.org"), n)
	}
}

// TestSmtpdTimeout: a client silent past --idle-timeout is told 421 4.4.2
// before the connection closes (RFC 5321 section 4.5.3.2), between
// commands and in the middle of a message, and nothing is queued.
func TestSmtpdTimeout(t *testing.T) {
	r, stub := smtpdRoot(t)
	_, addr := startSmtpd(t, r, nil, "--enqueue", stub, "--greet-delay", "0", "--idle-timeout", "1s")
	c := smtpDial(t, addr)
	c.expectReply("220 ")
	c.expect("EHLO client.example", "250")
	if got := c.expectReply("421 4.4.2 mx.test "); !strings.Contains(got, "cid=") {
		t.Errorf("421 without the connection id: %q", got)
	}
	c.expectClosed()

	c = smtpDial(t, addr)
	c.expectReply("220 ")
	c.transaction("a@remote.example", "bob@example.org")
	c.send("Subject: half\r\n\r\nhalf a message")
	c.expectReply("421 4.4.2 ")
	c.expectClosed()
	expectQueued(t, r, 0)

	// --session-timeout: a client that keeps talking is cut at the end
	// of its session, with 421 too.
	_, addr = startSmtpd(t, r, nil, "--enqueue", stub, "--greet-delay", "0", "--session-timeout", "2s")
	c = smtpDial(t, addr)
	c.expectReply("220 ")
	for i := 0; ; i++ {
		if i > 40 {
			t.Fatal("still served after 4s of a 2s session")
		}
		time.Sleep(100 * time.Millisecond)
		got := c.cmd("NOOP")
		if strings.HasPrefix(got, "250") {
			continue
		}
		if !strings.HasPrefix(got, "421 4.4.2 mx.test ") {
			t.Fatalf("at the end of the session: %q", got)
		}
		break
	}
	c.expectClosed()
}

// TestSmtpdAuthLine: an AUTH command carrying 12,288 octets of base64 is
// read and answered (RFC 4954 section 4); longer, or any other command
// over 1,000 octets, gets 500 and the connection is closed.
func TestSmtpdAuthLine(t *testing.T) {
	r, stub := smtpdRoot(t)
	_, addr := startSmtpd(t, r, nil, "--enqueue", stub, "--mode", "submission")
	long := base64.StdEncoding.EncodeToString([]byte("\x00bob@example.org\x00" + strings.Repeat("p", 12288*3/4-17)))
	if len(long) != 12288 {
		t.Fatalf("made %d octets of base64", len(long))
	}
	c := smtpDial(t, addr)
	c.expectReply("220 ")
	c.expect("EHLO client.example", "250")
	// Read whole and answered: the password is refused (535, or 501 for
	// one internal/auth will not take), not the line (500).
	answered := func(line string) {
		t.Helper()
		if got := c.cmd(line); !strings.HasPrefix(got, "535 5.7.8 ") && !strings.HasPrefix(got, "501 5.5.2 ") {
			t.Fatalf("AUTH line of %d octets: got %q", len(line)+2, got)
		}
	}
	answered("AUTH PLAIN " + long)
	// And as a response to 334.
	c.expect("AUTH PLAIN", "334")
	answered(long)
	c.expect("NOOP", "250")
	if got := c.cmd("AUTH PLAIN " + long + strings.Repeat("A", 100)); !strings.HasPrefix(got, "500 ") {
		t.Fatalf("AUTH line over the limit: got %q", got)
	}
	c.expectClosed()

	c = smtpDial(t, addr)
	c.expectReply("220 ")
	c.expect("NOOP "+strings.Repeat("a", 1000), "500 ")
	c.expectClosed()
}

// TestSmtpdLimits: --max-recipients, --max-errors, unknown commands, and
// replies out of sequence.
func TestSmtpdLimits(t *testing.T) {
	r, stub := smtpdRoot(t)
	_, addr := startSmtpd(t, r, nil, "--enqueue", stub, "--greet-delay", "0", "--max-recipients", "2", "--max-errors", "4")
	c := smtpDial(t, addr)
	c.expectReply("220 ")
	c.expect("MAIL FROM:<a@remote.example>", "503 5.5.1")
	c.expect("EHLO client.example", "250")
	c.expect("RCPT TO:<bob@example.org>", "503 5.5.1")
	c.expect("MAIL FROM:<a@remote.example>", "250")
	c.expect("RCPT TO:<bob@example.org>", "250")
	c.expect("RCPT TO:<alice@example.org>", "250")
	c.expect("RCPT TO:<postmaster@example.org>", "452 4.5.3")
	c.expect("VRFY bob", "252")
	c.expect("RSET", "250")
	// That was two errors (452 for a recipient over the limit is none);
	// the fourth ends it.
	c.expect("RCPT TO:<bob@example.org>", "503")
	c.expect("RCPT TO:<bob@example.org>", "503")
	c.expectReply("421 4.7.0 ")
	c.expectClosed()

	// Unknown commands: the engine closes after the fourth.
	c = smtpDial(t, addr)
	c.expectReply("220 ")
	for i := 0; i < 3; i++ {
		c.expect("FOOB", "500 5.5.2")
	}
	c.expect("FOOB", "500 5.5.2")
	c.expectReply("500 5.5.1")
	c.expectClosed()
}

// TestSmtpdEarlyTalker: a client that speaks before the greeting gets
// 554 instead of 220, 503 to anything but QUIT, and nothing it sent is
// taken as mail.
func TestSmtpdEarlyTalker(t *testing.T) {
	r, stub := smtpdRoot(t)
	_, addr := startSmtpd(t, r, nil, "--enqueue", stub, "--greet-delay", "700ms")
	c := smtpDial(t, addr)
	c.send("EHLO bot.example\r\nMAIL FROM:<a@remote.example>\r\n")
	c.expectReply("554 5.5.1 ")
	c.expectReply("503 5.5.1")
	c.expectReply("503 5.5.1")
	c.expect("QUIT", "221")
	c.expectClosed()
	// A patient client is served.
	c = smtpDial(t, addr)
	start := time.Now()
	c.expectReply("220 mx.test ESMTP")
	if d := time.Since(start); d < 600*time.Millisecond {
		t.Errorf("greeting after %v, want the delay", d)
	}
	c.expect("EHLO client.example", "250")
	expectQueued(t, r, 0)
}

// TestSmtpdIdle: a client that stops talking is told 421 and cut off
// after the idle timeout, in a command or in the middle of DATA, and a
// half-sent message is not queued.
func TestSmtpdIdle(t *testing.T) {
	r, stub := smtpdRoot(t)
	_, addr := startSmtpd(t, r, nil, "--enqueue", stub, "--greet-delay", "0", "--idle-timeout", "1s")
	c := smtpDial(t, addr)
	c.expectReply("220 ")
	start := time.Now()
	c.expectReply("421 4.4.2")
	if d := time.Since(start); d < 900*time.Millisecond || d > 5*time.Second {
		t.Errorf("cut off after %v", d)
	}
	c.expectClosed()

	c = smtpDial(t, addr)
	c.expectReply("220 ")
	c.transaction("a@remote.example", "bob@example.org")
	// Slow but steady is fine: every read renews the deadline.
	for i := 0; i < 4; i++ {
		c.send("X-Slow: " + strconv.Itoa(i) + "\r\n")
		time.Sleep(500 * time.Millisecond)
	}
	c.send("\r\nbody\r\n")
	time.Sleep(1500 * time.Millisecond)
	for got := c.reply(); got != ""; got = c.reply() {
		if strings.HasPrefix(got, "250") {
			t.Fatalf("a stalled message was accepted: %q", got)
		}
	}
	expectQueued(t, r, 0)
}

// TestSmtpdEnqueueStatus: the enqueue command's exit status decides the
// reply: 75 is 451 4.3.0, anything else 554 5.3.0, a missing command
// 451; and the enqueue command gets the connection's variables.
func TestSmtpdEnqueueStatus(t *testing.T) {
	r, stub := smtpdRoot(t)
	_, addr := startSmtpd(t, r, nil, "--enqueue", stub, "--greet-delay", "0")
	_, addrMissing := startSmtpd(t, r, nil, "--enqueue", r.Path("bin/missing"), "--greet-delay", "0")
	for _, tc := range []struct{ status, addr, want string }{
		{"75", addr, "451 4.3.0 "},
		{"65", addr, "554 5.3.0 "},
		{"100", addr, "554 5.3.0 "},
		{"", addrMissing, "451 4.3.0 "},
	} {
		if tc.status != "" {
			r.WriteFile("spool/status", tc.status+"\n")
		}
		c := smtpDial(t, tc.addr)
		cid := cidOf(t, c.expectReply("220 "))
		c.transaction("a@remote.example", "bob@example.org")
		if got := c.cmd("Subject: x\r\n\r\nbody\r\n."); !strings.HasPrefix(got, tc.want) || !strings.HasSuffix(got, "cid="+cid) {
			t.Errorf("exit %s: got %q, want %q... cid=%s", tc.status, got, tc.want, cid)
		}
		os.Remove(r.Path("spool/status"))
	}
	expectQueued(t, r, 0)
	c := smtpDial(t, addr)
	cid := cidOf(t, c.expectReply("220 "))
	c.transaction("", "bob@example.org")
	c.expect("Subject: bounce\r\n\r\nbody\r\n.", "250")
	expectQueued(t, r, 1)
	envs, _ := filepath.Glob(filepath.Join(r.Queue, "msg.*.env"))
	b, _ := os.ReadFile(envs[0])
	if string(b) != "TCPREMOTEIP=127.0.0.1\nTERN_CID="+cid+"\n" {
		t.Errorf("enqueue environment: %q", b)
	}
	if args := queuedArgs(t, r); args[0] != "-v -f  -- bob@example.org" {
		t.Errorf("null sender arguments: %q", args)
	}
}

// TestSmtpdCrash: tern-smtpd killed with SIGKILL again and again while
// four clients send: every message it answered 250 is in the queue, whole,
// under the queue ID it gave.
func TestSmtpdCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP: -short")
	}
	r, _ := smtpdRoot(t)
	// One process for every connection, so that a kill takes them all.
	args := oneProcess(r)
	p, addr := startSmtpd(t, r, nil, args...)
	var (
		mu    sync.Mutex
		acked = map[string]string{} // queue ID -> the message's Subject
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				subject := fmt.Sprintf("crash-%d-%d", c, n)
				if qid, err := sendOne(addr, subject); err == nil {
					mu.Lock()
					acked[qid] = subject
					mu.Unlock()
				} else {
					time.Sleep(10 * time.Millisecond) // down: being restarted
				}
			}
		}()
	}
	listening := regexp.MustCompile(`listening addr=`)
	for k := 0; k < 6; k++ {
		time.Sleep(time.Duration(100+37*k) * time.Millisecond)
		p.Kill()
		p.Wait(5 * time.Second)
		p = r.Start(nil, nil, "tern-smtpd", append([]string{"--listen", addr}, args...)...)
		restarted := p
		t.Cleanup(restarted.Kill)
		Eventually(t, 10*time.Second, "tern-smtpd listens again", func() bool { return listening.MatchString(restarted.Stderr()) })
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if len(acked) < 20 {
		t.Fatalf("only %d messages accepted: the test proves nothing", len(acked))
	}
	for qid, subject := range acked {
		b, err := os.ReadFile(filepath.Join(r.Queue, "incoming", qid))
		if err != nil || !strings.Contains(string(b), "\nSubject: "+subject+"\n") || !strings.HasSuffix(string(b), "\n\nbody\n") {
			t.Errorf("answered 250 as %s (%s), not in the queue whole: %v\n%s", qid, subject, err, b)
		}
	}
	t.Logf("%d messages answered 250 across 6 kills, all in the queue", len(acked))

	// Killed once more, idle: its prepared entries stay behind, with any
	// a kill under load left sealed but not renamed, or half written.
	// tern-queue puts them in order, and delivers every message answered
	// 250.
	p.Kill()
	p.Wait(5 * time.Second)
	pool, _ := filepath.Glob(filepath.Join(r.Queue, "incoming", ".pool-*"))
	if len(pool) == 0 {
		t.Errorf("no prepared entries left by a kill: tern-smtpd did not queue through them")
	}
	md := filepath.Join(r.Home, "bob", "Maildir")
	for _, d := range []string{"cur", "new", "tmp"} {
		os.MkdirAll(filepath.Join(md, d), 0o700)
	}
	res := r.runQueue()
	t.Logf("%d prepared entries left by the kill; tern-queue said:\n%s", len(pool), res.Stderr)
	// Temporary files a kill interrupted stay until they are 36 hours
	// old (a user's sendmail may be writing one): never acknowledged.
	left, _ := os.ReadDir(filepath.Join(r.Queue, "incoming"))
	for _, e := range left {
		if !strings.HasPrefix(e.Name(), ".tmp-") {
			t.Errorf("left in incoming/ after tern-queue: %s", e.Name())
		}
	}
	var delivered strings.Builder
	for _, name := range files(t, filepath.Join(md, "new")) {
		b, _ := os.ReadFile(filepath.Join(md, "new", name))
		delivered.Write(b)
	}
	for qid, subject := range acked {
		if !strings.Contains(delivered.String(), "\nSubject: "+subject+"\n") {
			t.Errorf("answered 250 as %s (%s), not delivered", qid, subject)
		}
	}
}

// TestSmtpdSharedSocket: started as contrib/tern-smtpd-shared.service is,
// with the listening socket from systemd (LISTEN_FDS), tern-smtpd serves
// every connection itself and queues into entries it made ahead; on
// SIGTERM it removes those it did not use, and every message it accepted
// is in the queue under its ID.
func TestSmtpdSharedSocket(t *testing.T) {
	r, _ := smtpdRoot(t)
	p, addr := startListenFDs(t, r, "tern-smtpd", oneProcess(r)...)
	pool := func() []string {
		m, _ := filepath.Glob(filepath.Join(r.Queue, "incoming", ".pool-*"))
		return m
	}
	// Entries appear one by one and are used once their batch is on disk;
	// a message that comes before that is queued the usual way. Send
	// until one has gone into an entry (the first, but for a slow machine).
	sealed := func(qid string) bool {
		b, _ := os.ReadFile(filepath.Join(r.Queue, "incoming", qid))
		return strings.HasPrefix(string(b), "tern-queue 2\nseal ")
	}
	var ids []string
	viaPool := 0
	Eventually(t, 10*time.Second, "a message in an entry made ahead", func() bool {
		i := len(ids)
		qid, err := sendOne(addr, fmt.Sprintf("shared-%d", i))
		if err != nil {
			t.Fatalf("message %d: %v\n%s", i, err, p.Stderr())
		}
		ids = append(ids, qid)
		if sealed(qid) {
			viaPool++
		}
		return viaPool > 0
	})
	t.Logf("%d messages sent until one went into an entry made ahead", len(ids))
	p.Signal(syscall.SIGTERM)
	if res, ok := p.Wait(10 * time.Second); !ok || res.Code != 0 {
		t.Fatalf("after SIGTERM:\n%s", res)
	}
	if left := pool(); len(left) != 0 {
		t.Errorf("entries made ahead left after SIGTERM: %v", left)
	}
	for i, qid := range ids {
		b, err := os.ReadFile(filepath.Join(r.Queue, "incoming", qid))
		if err != nil || !strings.Contains(string(b), fmt.Sprintf("\nSubject: shared-%d\n", i)) {
			t.Errorf("message %d (%s) not in the queue: %v", i, qid, err)
		}
	}
}

// sendOne sends one message in its own connection and returns the queue
// ID of the 250 reply.
func sendOne(addr, subject string) (string, error) {
	nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	c, err := smtp.NewClient(nc, "127.0.0.1")
	if err != nil {
		nc.Close()
		return "", err
	}
	defer c.Close()
	if err := c.Mail("a@remote.example"); err != nil {
		return "", err
	}
	if err := c.Rcpt("bob@example.org"); err != nil {
		return "", err
	}
	return dataQID(c, subject)
}

// dataQID sends DATA with a small message and returns the queue ID of the
// 250 reply (net/smtp's Data hides the reply's text).
func dataQID(c *smtp.Client, subject string) (string, error) {
	id, err := c.Text.Cmd("DATA")
	if err != nil {
		return "", err
	}
	c.Text.StartResponse(id)
	_, _, err = c.Text.ReadResponse(354)
	c.Text.EndResponse(id)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(c.Text.W, "Subject: %s\r\n\r\nbody\r\n.\r\n", subject)
	if err := c.Text.W.Flush(); err != nil {
		return "", err
	}
	_, msg, err := c.Text.ReadResponse(250)
	if err != nil {
		return "", err
	}
	f := strings.Fields(msg)
	return f[len(f)-1], nil
}

// oneProcess is tern-smtpd's arguments for serving every connection in
// one process: --user when the test runs as root (which forks otherwise),
// with the root opened up for that user.
func oneProcess(r *Root) []string {
	args := []string{"--greet-delay", "0", "--rdns=false"}
	if os.Getuid() == 0 {
		r.OpenUp()
		args = append(args, "--user", "nobody")
	}
	return args
}

// TestSmtpdQueueMissing: queueing in process, a queue directory that is
// not there (not mounted yet) refuses each message with 451 and keeps the
// server up; once it is there, messages are queued.
func TestSmtpdQueueMissing(t *testing.T) {
	r, _ := smtpdRoot(t)
	dir := r.Path("later-spool")
	_, addr := startSmtpd(t, r, nil, "--greet-delay", "0", "--queue", dir)
	c := smtpDial(t, addr)
	c.expectReply("220 ")
	c.transaction("a@remote.example", "bob@example.org")
	c.expect("Subject: x\r\n\r\nbody\r\n.", "451 4.3.0 ")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c.transaction("a@remote.example", "bob@example.org")
	c.expect("Subject: x\r\n\r\nbody\r\n.", "250 2.0.0 ")
	ids, _ := filepath.Glob(filepath.Join(dir, "incoming", "[0-9a-f]*"))
	if len(ids) != 1 {
		t.Fatalf("queue entries in %s: %q", dir, ids)
	}
	// The fields tern-enqueue's code adds name this host as the control
	// directory does.
	b, _ := os.ReadFile(ids[0])
	if want := "Message-ID: <" + filepath.Base(ids[0]) + "@mx.test>\n"; !strings.Contains(string(b), want) {
		t.Errorf("queued entry lacks %q:\n%s", want, b)
	}
}

// TestSmtpdControlReload: a --listen server that serves every connection
// itself (--user, as the fast way to run it is) learns of a user added to
// the users file, and of one removed, without a restart; it queues into a
// root-owned queue it opened before giving up root.
func TestSmtpdControlReload(t *testing.T) {
	r, _ := smtpdRoot(t)
	p, addr := startSmtpd(t, r, nil, oneProcess(r)...)
	if strings.Contains(p.Stderr(), "fork=true") {
		t.Fatalf("want one process for every connection:\n%s", p.Stderr())
	}
	rcpt := func(who string) string {
		c := smtpDial(t, addr)
		c.expectReply("220 ")
		c.expect("EHLO client.test", "250")
		c.expect("MAIL FROM:<a@remote.example>", "250")
		defer c.c.Close()
		// The server looks at its files at most once a second.
		defer time.Sleep(200 * time.Millisecond)
		return c.cmd("RCPT TO:<" + who + ">")
	}
	if got := rcpt("carol@example.org"); !strings.HasPrefix(got, "550 5.1.1") {
		t.Fatalf("carol before she exists: %q", got)
	}
	users := r.Path("etc/tern/users")
	b, _ := os.ReadFile(users)
	r.WriteFile("etc/tern/users", string(b)+"carol@example.org:{PLAIN}x::::"+filepath.Join(r.Home, "carol")+":\n")
	Eventually(t, 5*time.Second, "carol is known", func() bool {
		return strings.HasPrefix(rcpt("carol@example.org"), "250 ")
	})
	c := smtpDial(t, addr)
	c.expectReply("220 ")
	c.transaction("a@remote.example", "carol@example.org")
	c.expect("Subject: hi\r\n\r\nwelcome\r\n.", "250 2.0.0 ")
	if ids, _ := filepath.Glob(filepath.Join(r.Queue, "incoming", "[0-9a-f]*")); len(ids) != 1 {
		t.Fatalf("queue entries: %q", ids)
	}
	r.WriteFile("etc/tern/users", string(b))
	Eventually(t, 5*time.Second, "carol is gone", func() bool {
		return strings.HasPrefix(rcpt("carol@example.org"), "550 5.1.1")
	})
	if !strings.Contains(p.Stderr(), "control directory read again") {
		t.Errorf("no log line for the reload:\n%s", p.Stderr())
	}
}

// TestSmtpdFilterWrapper: a filter in front of the queue, as README shows
// it, adds a header and hands the message on.
func TestSmtpdFilterWrapper(t *testing.T) {
	Need(t, "swaks")
	r, stub := smtpdRoot(t)
	wrapper := r.WriteFile("bin/spamfilter", `#!/bin/sh
# A spam scanner in front of the queue: score the message, add a header,
# pass it on with the same envelope.
set -e
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
cat > "$tmp"
score=$(grep -ci viagra "$tmp" || true)
{ printf 'X-Spam-Score: %s\n' "$score"; cat "$tmp"; } | exec `+stub+` "$@"
`)
	os.Chmod(wrapper, 0o755)
	_, addr := startSmtpd(t, r, []string{"TERN_ENQUEUE=" + wrapper}, "--greet-delay", "0")
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command("swaks", "--server", host, "--port", port, "--from", "a@remote.example", "--to", "sales@example.org", "--body", "cheap viagra").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "250 2.0.0 ok: queued as msg.") {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	msgs := expectQueued(t, r, 1)
	if !strings.HasPrefix(msgs[0], "X-Spam-Score: 1\nReceived: from ") {
		t.Fatalf("filtered message:\n%s", msgs[0])
	}
}

// TestSmtpdTcpserver: under tcpserver, one process per connection, the
// peer from TCPREMOTEIP; python's smtplib sends a message pipelined.
func TestSmtpdTcpserver(t *testing.T) {
	Need(t, "tcpserver", "python3")
	r, stub := smtpdRoot(t)
	p, addr := r.StartTcpserver([]string{"-R", "-c", "8"}, Bin("tern-smtpd"), "--enqueue", stub, "--greet-delay", "0")
	t.Cleanup(func() { p.Signal(syscall.SIGTERM) })
	host, port, _ := net.SplitHostPort(addr)
	script := `
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), local_hostname="py.example")
s.ehlo()
assert s.has_extn("pipelining") and s.has_extn("8bitmime") and s.has_extn("smtputf8"), s.esmtp_features
refused = s.sendmail("a@remote.example", ["bob@example.org", "alice@example.org"], b"Subject: py\r\n\r\nfrom python \xc3\xa9\r\n")
print("refused", refused)
try:
    s.sendmail("a@remote.example", ["ghost@example.org"], "Subject: no\r\n\r\nx\r\n")
except smtplib.SMTPRecipientsRefused as e:
    print("ghost", e.recipients["ghost@example.org"][0])
s.quit()
`
	out, err := exec.Command("python3", "-c", script, host, port).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "refused {}") || !strings.Contains(string(out), "ghost 550") {
		t.Fatalf("python: %v\n%s", err, out)
	}
	msgs := expectQueued(t, r, 1)
	if !strings.Contains(msgs[0], "Received: from py.example (") || !strings.Contains(msgs[0], "\nfrom python \xc3\xa9\n") || strings.Contains(msgs[0], "\tfor <") {
		t.Fatalf("message:\n%s", msgs[0])
	}
}

// smtpdTLS writes the test certificate; the client trusts anything.
func smtpdTLS(t *testing.T, r *Root) *tls.Config {
	testcert.Write(t, r.Conf, 1)
	return &tls.Config{InsecureSkipVerify: true, ServerName: "mx.test"}
}

// TestSmtpdSTARTTLS: in mx mode AUTH is offered only after STARTTLS;
// STARTTLS forgets the EHLO, and commands sent after STARTTLS in the
// clear are thrown away (CVE-2011-0411).
func TestSmtpdSTARTTLS(t *testing.T) {
	r, stub := smtpdRoot(t)
	cfg := smtpdTLS(t, r)
	_, addr := startSmtpd(t, r, nil, "--enqueue", stub, "--greet-delay", "0")
	c := smtpDial(t, addr)
	c.expectReply("220 ")
	ehlo := c.expect("EHLO client.example", "250")
	if !strings.Contains(ehlo, "STARTTLS") || strings.Contains(ehlo, "AUTH") {
		t.Fatalf("EHLO in the clear: %q", ehlo)
	}
	c.expect("AUTH PLAIN "+b64("\x00bob@example.org\x00secret"), "538 5.7.11")
	// STARTTLS and an injected command in one packet.
	c.send("STARTTLS\r\nRSET\r\n")
	c.expectReply("220 2.0.0")
	tc := tls.Client(c.c, cfg)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c = &smtpClient{t: t, r: bufio.NewReader(tc), w: tc, set: func(d time.Time) { tc.SetReadDeadline(d) }}
	c.expect("MAIL FROM:<a@remote.example>", "503 5.5.1")
	ehlo = c.expect("EHLO client.example", "250")
	if strings.Contains(ehlo, "STARTTLS") || !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Fatalf("EHLO over TLS: %q", ehlo)
	}
	c.expect("STARTTLS", "503 5.5.1")
	c.expect("AUTH PLAIN "+b64("\x00bob@example.org\x00secret"), "235 2.7.0")
	c.expect("MAIL FROM:<bob@example.org>", "250")
	c.expect("RCPT TO:<friend@elsewhere.example>", "250")
	c.expect("DATA", "354")
	c.expect("Subject: tls\r\n\r\nover tls\r\n.", "250 2.0.0 ok")
	msgs := expectQueued(t, r, 1)
	if !regexp.MustCompile(`by mx\.test \(tern\) with ESMTPSA \(TLS1\.3 TLS_\S+\)`).MatchString(msgs[0]) {
		t.Fatalf("Received:\n%s", msgs[0])
	}
}

// TestSmtpdSubmission: AUTH before MAIL; the sender must be one of the
// user's addresses; a wrong password is 535 5.7.8 after a delay; a
// client not on loopback must STARTTLS before AUTH.
func TestSmtpdSubmission(t *testing.T) {
	Need(t, "python3")
	r, stub := smtpdRoot(t)
	smtpdTLS(t, r)
	p, addr := startSmtpd(t, r, nil, "--enqueue", stub, "--mode", "submission")
	host, port, _ := net.SplitHostPort(addr)
	script := `
import smtplib, ssl, sys, time
ctx = ssl._create_unverified_context()
def conn():
    s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), local_hostname="laptop.example")
    s.starttls(context=ctx)
    return s
s = conn()
try:
    s.sendmail("bob@example.org", ["x@elsewhere.example"], "Subject: x\r\n\r\nx\r\n")
except smtplib.SMTPSenderRefused as e:
    print("noauth", e.smtp_code, e.smtp_error.decode()[:5])
t = time.time()
try:
    s.login("bob@example.org", "wrong")
except smtplib.SMTPAuthenticationError as e:
    print("badpass", e.smtp_code, e.smtp_error.decode()[:5], "slow" if time.time() - t >= 0.9 else "fast")
s.quit()
s = conn()
s.login("bob@example.org", "secret")
for sender in ["mallory@example.org", "alice@example.org", "ceo@bank.example"]:
    try:
        s.sendmail(sender, ["x@elsewhere.example"], "Subject: x\r\n\r\nx\r\n")
        print("sent as", sender)
    except smtplib.SMTPSenderRefused as e:
        print("refused", sender, e.smtp_code, e.smtp_error.decode()[:5])
for sender in ["bob@example.org", "bob+news@example.org", "postmaster@example.org", "sales@example.org"]:
    s.sendmail(sender, ["x@elsewhere.example"], "Subject: x\r\n\r\nx\r\n")
    print("sent as", sender)
s.quit()
`
	out, err := exec.Command("python3", "-c", script, host, port).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	want := `noauth 530 5.7.0
badpass 535 5.7.8 slow
refused mallory@example.org 553 5.7.1
refused alice@example.org 553 5.7.1
refused ceo@bank.example 553 5.7.1
sent as bob@example.org
sent as bob+news@example.org
sent as postmaster@example.org
sent as sales@example.org
`
	if string(out) != want {
		t.Fatalf("python said:\n%s\nwant:\n%s", out, want)
	}
	expectQueued(t, r, 4)
	if !strings.Contains(p.Stderr(), "login cid=") || !strings.Contains(p.Stderr(), "user=bob@example.org") {
		t.Errorf("log:\n%s", p.Stderr())
	}

	// Not on loopback: no AUTH before STARTTLS, and no MAIL before AUTH.
	c, _ := smtpdPipes(t, r, []string{"TCPREMOTEIP=198.51.100.9"}, "--enqueue", stub, "--mode", "submission", "--rdns=false")
	c.expectReply("220 ")
	if ehlo := c.expect("EHLO laptop.example", "250"); strings.Contains(ehlo, "AUTH") || !strings.Contains(ehlo, "STARTTLS") {
		t.Fatalf("EHLO: %q", ehlo)
	}
	c.expect("AUTH PLAIN "+b64("\x00bob@example.org\x00secret"), "538 5.7.11")
	c.expect("MAIL FROM:<bob@example.org>", "530 5.7.0")
	c.expect("QUIT", "221")
}

// TestSmtpdImplicitTLS: --tls, port 465 style, with smtplib's SMTP_SSL
// and AUTH LOGIN.
func TestSmtpdImplicitTLS(t *testing.T) {
	Need(t, "python3")
	r, stub := smtpdRoot(t)
	smtpdTLS(t, r)
	_, addr := startSmtpd(t, r, nil, "--enqueue", stub, "--mode", "submission", "--tls")
	host, port, _ := net.SplitHostPort(addr)
	script := `
import smtplib, ssl, sys
s = smtplib.SMTP_SSL(sys.argv[1], int(sys.argv[2]), context=ssl._create_unverified_context())
s.ehlo()
assert not s.has_extn("starttls")
s.login("alice@example.org", "wonder", initial_response_ok=False) if False else None
s.user, s.password = "alice@example.org", "wonder"
print(s.auth("LOGIN", s.auth_login, initial_response_ok=False)[0])
s.sendmail("alice@example.org", ["bob@example.org"], "Subject: 465\r\n\r\nimplicit\r\n")
s.quit()
`
	out, err := exec.Command("python3", "-c", script, host, port).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "235" {
		t.Fatalf("python: %v\n%s", err, out)
	}
	msgs := expectQueued(t, r, 1)
	if !strings.Contains(msgs[0], "with ESMTPSA (TLS1.3 ") {
		t.Fatalf("Received:\n%s", msgs[0])
	}
}

// TestSmtpdConnectionLimit: --max-per-ip in --listen mode answers 421 to
// one connection too many.
func TestSmtpdConnectionLimit(t *testing.T) {
	r, stub := smtpdRoot(t)
	_, addr := startSmtpd(t, r, nil, "--enqueue", stub, "--greet-delay", "0", "--max-per-ip", "2")
	a := smtpDial(t, addr)
	a.expectReply("220 ")
	b := smtpDial(t, addr)
	b.expectReply("220 ")
	c := smtpDial(t, addr)
	c.expectReply("421 4.7.0 ")
	c.expectClosed()
	a.expect("QUIT", "221")
	a.expectClosed()
	Eventually(t, 5*time.Second, "a slot frees", func() bool {
		d := smtpDial(t, addr)
		return strings.HasPrefix(d.reply(), "220 ")
	})
}

// TestSmtpdRealEnqueue: swaks to tern-smtpd, queueing in its own process
// (the default) and through a pipe to the real tern-enqueue, and the
// message is in the queue, with the same envelope either way.
func TestSmtpdRealEnqueue(t *testing.T) {
	Need(t, "swaks")
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"in-process", nil},
		{"pipe", []string{"--enqueue", Bin("tern-enqueue")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := smtpdRoot(t)
			_, addr := startSmtpd(t, r, nil, append([]string{"--greet-delay", "0"}, tc.args...)...)
			host, port, _ := net.SplitHostPort(addr)
			out, err := exec.Command("swaks", "--server", host, "--port", port, "--from", "a@remote.example", "--to", "bob+tag@example.org", "--body", "through the real queue").CombinedOutput()
			if err != nil {
				t.Fatalf("swaks: %v\n%s", err, out)
			}
			m := regexp.MustCompile(`250 2\.0\.0 ok: queued as (\S+)`).FindSubmatch(out)
			if m == nil {
				t.Fatalf("swaks:\n%s", out)
			}
			var found string
			filepath.Walk(r.Queue, func(p string, fi os.FileInfo, err error) error {
				if err == nil && !fi.IsDir() {
					if b, _ := os.ReadFile(p); strings.Contains(string(b), "through the real queue") {
						found = string(b)
					}
				}
				return nil
			})
			if found == "" {
				t.Fatalf("qid %s: the message is not in the queue directory %s", m[1], r.Queue)
			}
			for _, want := range []string{"a@remote.example", "bob+tag@example.org", "Received: from ", "Date: "} {
				if !strings.Contains(found, want) {
					t.Errorf("queued entry lacks %q:\n%s", want, found)
				}
			}
			// In process, the queue ID is made before the Received line
			// is written, and that line carries it.
			if hasID := strings.Contains(found, "\tid "+string(m[1])+"\n"); hasID != (tc.args == nil) {
				t.Errorf("Received line with the queue id %s: %v, want %v:\n%s", m[1], hasID, tc.args == nil, found)
			}
			res := r.Run("", nil, "tern-queue", "--list")
			if res.Code != 0 || !strings.Contains(res.Stdout, string(m[1])) {
				t.Fatalf("tern-queue --list does not show %s: %v", m[1], res)
			}
		})
	}
}

// TestSmtpdQueueConcurrent: one tern-smtpd --listen process queueing for
// many connections at once gives every message its own queue ID, and
// every 250 is a message in the queue.
func TestSmtpdQueueConcurrent(t *testing.T) {
	r, _ := smtpdRoot(t)
	_, addr := startSmtpd(t, r, nil, "--greet-delay", "0", "--rdns=false")
	const conns, each = 8, 25
	qids := make(chan string, conns*each)
	errs := make(chan error, conns)
	for i := 0; i < conns; i++ {
		go func() {
			c, err := smtp.Dial(addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for j := 0; j < each; j++ {
				if err := c.Mail("a@remote.example"); err != nil {
					errs <- err
					return
				}
				if err := c.Rcpt("bob@example.org"); err != nil {
					errs <- err
					return
				}
				qid, err := dataQID(c, fmt.Sprintf("%d.%d", i, j))
				if err != nil {
					errs <- err
					return
				}
				qids <- qid
			}
			errs <- c.Quit()
		}()
	}
	for i := 0; i < conns; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(qids)
	seen := map[string]bool{}
	for q := range qids {
		if seen[q] {
			t.Errorf("queue ID %s given twice", q)
		}
		seen[q] = true
	}
	if len(seen) != conns*each {
		t.Fatalf("%d queue IDs for %d messages", len(seen), conns*each)
	}
	res := r.Run("", nil, "tern-queue", "--list")
	for q := range seen {
		if !strings.Contains(res.Stdout, q) {
			t.Errorf("tern-queue --list does not show %s", q)
		}
	}
}
