package tests

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// popAccount is a users-file account with a Maildir holding three
// messages delivered by tern-deliver.
type popAccount struct {
	r       *Root
	user    string
	pass    string
	home    string
	maildir string
	bodies  []string // the messages as delivered, LF endings
}

// newPOPAccount writes the users file and delivers the messages. Under
// root the account is nobody's (uid 65534), as a server run as root
// drops to the account before it touches the mailbox.
func newPOPAccount(t *testing.T, r *Root) *popAccount {
	t.Helper()
	a := &popAccount{r: r, user: "bob", pass: "pencil-horse-9", home: r.Path("home", "bob")}
	a.maildir = filepath.Join(a.home, "Maildir")
	res := r.Run(a.pass+"\n", nil, "tern-passwd", "hash")
	if res.Code != 0 {
		t.Fatalf("tern-passwd hash: %v", res)
	}
	// user:hash:uid:gid:gecos:home:shell (tern-users(5)); an empty uid
	// and gid mean the server's own.
	uid, gid := "", ""
	if os.Geteuid() == 0 {
		uid, gid = "65534", "65534"
		r.OpenUp()
	}
	r.WriteFile("etc/tern/users", fmt.Sprintf("# test account\n%s:%s:%s:%s::%s:\n", a.user, strings.TrimSpace(res.Stdout), uid, gid, a.home))
	if err := os.MkdirAll(a.home, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, subj := range []string{"first", "second", "third"} {
		msg := fmt.Sprintf("From: a%d@example.org\r\nSubject: %s\r\n\r\nbody %d\r\n.a line starting with a dot\r\n", i, subj, i)
		if res := r.Run(msg, nil, "tern-deliver", "-f", "a@example.org", "-r", "bob@example.net", a.maildir); res.Code != 0 {
			t.Fatalf("deliver: %v", res)
		}
		a.bodies = append(a.bodies, "Return-Path: <a@example.org>\nDelivered-To: bob@example.net\n"+strings.ReplaceAll(msg, "\r\n", "\n"))
		time.Sleep(2 * time.Millisecond) // distinct arrival times
	}
	a.chown(t)
	return a
}

func (a *popAccount) chown(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	err := filepath.Walk(a.home, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, 65534, 65534)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// startPOP3 starts tern-pop3d --listen on a free loopback port.
func startPOP3(t *testing.T, r *Root, args ...string) (*Proc, string) {
	t.Helper()
	p := r.Start(nil, nil, "tern-pop3d", append([]string{"--listen", "127.0.0.1:0"}, args...)...)
	re := regexp.MustCompile(`tern-pop3d: info: listening addr=(\S+)`)
	var addr string
	Eventually(t, 10*time.Second, "tern-pop3d reports its address:\n"+p.Stderr(), func() bool {
		if m := re.FindStringSubmatch(p.Stderr()); m != nil {
			addr = m[1]
			return true
		}
		return false
	})
	return p, addr
}

// python runs a python3 script with the server's address in argv.
func python(t *testing.T, r *Root, script string, args ...string) Result {
	t.Helper()
	Need(t, "python3")
	cmd := exec.Command("python3", append([]string{"-c", script}, args...)...)
	cmd.Env = r.Env()
	return RunCmd(t, cmd, "")
}

const poplibSession = `
import poplib, sys, hashlib
host, port, user, pw, action = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
p = poplib.POP3(host, port, timeout=20)
p.user(user); p.pass_(pw)
n, size = p.stat()
print("stat", n, size)
print("uidl", " ".join(u.decode().split()[1] for u in p.uidl()[1]))
print("list", " ".join(l.decode() for l in p.list()[1]))
for i in range(1, n+1):
    resp, lines, octets = p.retr(i)
    print("retr", i, hashlib.sha256(b"\n".join(lines) + b"\n").hexdigest(), octets)
top = p.top(1, 0)[1]
print("top", len(top))
if action == "dele1":
    p.dele(1)
    p.quit()
elif action == "dele1-drop":
    p.dele(1)
    p.sock.close()
else:
    p.quit()
`

func sha(s string) string {
	return fmt.Sprintf("%x", sha256sum([]byte(s)))
}

func TestPOP3Poplib(t *testing.T) {
	r := NewRoot(t)
	a := newPOPAccount(t, r)
	_, addr := startPOP3(t, r)
	host, port, _ := net.SplitHostPort(addr)

	res := python(t, r, poplibSession, host, port, a.user, a.pass, "keep")
	if res.Code != 0 {
		t.Fatalf("poplib: %v", res)
	}
	out := res.Stdout
	var total int
	for _, b := range a.bodies {
		total += len(b) + strings.Count(b, "\n")
	}
	if !strings.Contains(out, fmt.Sprintf("stat 3 %d\n", total)) {
		t.Errorf("STAT does not count CRLF sizes (%d):\n%s", total, out)
	}
	for i, b := range a.bodies {
		if !strings.Contains(out, fmt.Sprintf("retr %d %s", i+1, sha(b))) {
			t.Errorf("RETR %d is not the delivered message, line for line:\n%s", i+1, out)
		}
	}
	uidl1 := regexp.MustCompile(`uidl (.*)\n`).FindStringSubmatch(out)
	// The UIDL is the Maildir unique name, the same in every session.
	files := visible(t, a.maildir)
	for _, u := range strings.Fields(uidl1[1]) {
		if !slices.ContainsFunc(files, func(f string) bool { return strings.HasPrefix(f, u) }) {
			t.Errorf("UIDL %s is not a Maildir unique name (%v)", u, files)
		}
	}
	// New mail moved to cur/, and retrieved mail is marked seen.
	if n := len(files2(t, filepath.Join(a.maildir, "new"))); n != 0 {
		t.Errorf("%d messages left in new/ after a POP3 session", n)
	}
	for _, f := range files2(t, filepath.Join(a.maildir, "cur")) {
		if !strings.HasSuffix(f, ":2,S") {
			t.Errorf("retrieved message %s is not marked seen", f)
		}
	}

	// A dropped connection after DELE deletes nothing.
	res = python(t, r, poplibSession, host, port, a.user, a.pass, "dele1-drop")
	if res.Code != 0 {
		t.Fatalf("poplib: %v", res)
	}
	time.Sleep(100 * time.Millisecond)
	if n := len(visible(t, a.maildir)); n != 3 {
		t.Fatalf("DELE then a dropped connection: %d messages left, want 3", n)
	}
	// The same UIDLs in the next session; DELE and QUIT delete.
	res = python(t, r, poplibSession, host, port, a.user, a.pass, "dele1")
	if res.Code != 0 || !strings.Contains(res.Stdout, "uidl "+uidl1[1]+"\n") {
		t.Fatalf("UIDLs changed between sessions or poplib failed:\nfirst %s\n%v", uidl1[1], res)
	}
	if n := len(visible(t, a.maildir)); n != 2 {
		t.Fatalf("after DELE 1 and QUIT: %d messages, want 2", n)
	}
	res = python(t, r, poplibSession, host, port, a.user, a.pass, "keep")
	if want := "uidl " + strings.Join(strings.Fields(uidl1[1])[1:], " ") + "\n"; res.Code != 0 || !strings.Contains(res.Stdout, want) {
		t.Errorf("after DELE: want %q in\n%v", want, res)
	}
}

func files2(t *testing.T, dir string) []string { return files(t, dir) }

// pop3Dial speaks raw POP3 for the replies poplib hides.
type pop3Conn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func pop3Dial(t *testing.T, addr string) *pop3Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	p := &pop3Conn{t: t, c: c, r: bufio.NewReader(c)}
	if g := p.line(); !strings.HasPrefix(g, "+OK ") {
		t.Fatalf("greeting %q", g)
	}
	return p
}

func (p *pop3Conn) line() string {
	p.t.Helper()
	p.c.SetReadDeadline(time.Now().Add(15 * time.Second))
	l, err := p.r.ReadString('\n')
	if err != nil {
		p.t.Fatalf("read: %v", err)
	}
	return strings.TrimRight(l, "\r\n")
}

func (p *pop3Conn) cmd(s string) string {
	p.t.Helper()
	fmt.Fprintf(p.c, "%s\r\n", s)
	return p.line()
}

func TestPOP3Errors(t *testing.T) {
	r := NewRoot(t)
	a := newPOPAccount(t, r)
	_, addr := startPOP3(t, r)

	c := pop3Dial(t, addr)
	for _, tc := range []struct{ cmd, want string }{
		{"STAT", "-ERR STAT is not valid in this state"},
		{"PASS x", "-ERR USER first"},
		{"USER " + a.user, "+OK"},
		{"PASS wrong", "-ERR [AUTH] authentication failed"},
		{"USER nosuchuser", "+OK"},
		{"PASS wrong", "-ERR [AUTH] authentication failed"},
		{"AUTH CRAM-MD5", "-ERR mechanism CRAM-MD5 is not supported"},
		{"FOO", "-ERR unknown command"},
		{"USER " + a.user, "+OK"},
		{"PASS " + a.pass, "+OK logged in, 3 messages"},
		{"RETR 9", "-ERR no such message"},
		{"TOP 1", "-ERR usage: TOP msg lines"},
		{"DELE 2", "+OK message 2 deleted"},
		{"RETR 2", "-ERR message 2 is deleted"},
		{"LIST 2", "-ERR message 2 is deleted"},
		{"STLS", "-ERR STLS is not valid in this state"},
		{"RSET", "+OK 3 messages"},
	} {
		if got := c.cmd(tc.cmd); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.cmd, got, tc.want)
		}
	}
	// A second session for the same mailbox is refused while this one
	// holds it (RFC 2449 [IN-USE]), across processes.
	d := pop3Dial(t, addr)
	d.cmd("USER " + a.user)
	if got := d.cmd("PASS " + a.pass); !strings.HasPrefix(got, "-ERR [IN-USE]") {
		t.Errorf("second session: %q", got)
	}
	// A message removed by another program under the session.
	uid := strings.Fields(c.cmd("UIDL 1"))[2]
	removed := 0
	// New mail stays in new/ until QUIT.
	for _, dir := range []string{"new", "cur"} {
		for _, f := range files(t, filepath.Join(a.maildir, dir)) {
			if strings.HasPrefix(f, uid) {
				os.Remove(filepath.Join(a.maildir, dir, f))
				removed++
			}
		}
	}
	if removed != 1 {
		t.Fatalf("UIDL 1 %s names %d files", uid, removed)
	}
	if got := c.cmd("RETR 1"); !strings.HasPrefix(got, "-ERR message 1 was removed") {
		t.Errorf("RETR of a vanished message: %q", got)
	}
	if got := c.cmd("NOOP"); got != "+OK" {
		t.Errorf("the session did not go on: %q", got)
	}
	if got := c.cmd("QUIT"); !strings.HasPrefix(got, "+OK") {
		t.Errorf("QUIT: %q", got)
	}
	// The lock is free again.
	e := pop3Dial(t, addr)
	e.cmd("USER " + a.user)
	if got := e.cmd("PASS " + a.pass); !strings.HasPrefix(got, "+OK logged in, 2 messages") {
		t.Errorf("after QUIT: %q", got)
	}
	// AUTH PLAIN with an initial response (RFC 5034).
	f := pop3Dial(t, addr)
	if got := f.cmd("AUTH PLAIN " + b64("\x00"+a.user+"\x00"+a.pass)); !strings.HasPrefix(got, "-ERR [IN-USE]") {
		t.Errorf("AUTH PLAIN while in use: %q", got)
	}
	e.cmd("QUIT")
	g := pop3Dial(t, addr)
	if got := g.cmd("AUTH PLAIN"); got != "+ " {
		t.Errorf("AUTH PLAIN: %q", got)
	}
	if got := g.cmd(b64("\x00" + a.user + "\x00" + a.pass)); !strings.HasPrefix(got, "+OK logged in") {
		t.Errorf("AUTH PLAIN response: %q", got)
	}
	g.cmd("QUIT")
	h := pop3Dial(t, addr)
	h.cmd("AUTH LOGIN")
	h.cmd(b64(a.user))
	if got := h.cmd(b64(a.pass)); !strings.HasPrefix(got, "+OK logged in") {
		t.Errorf("AUTH LOGIN: %q", got)
	}
}

// Before TLS a client that is not on loopback gets no password prompt:
// USER and PLAIN are refused and STLS is offered (RFC 2595 §2.2).
func TestPOP3PlainTextRefused(t *testing.T) {
	r := NewRoot(t)
	a := newPOPAccount(t, r)
	writeTestCert(t, r.Conf, 1)
	in := "CAPA\r\nUSER " + a.user + "\r\nAUTH PLAIN " + b64("\x00"+a.user+"\x00"+a.pass) + "\r\nQUIT\r\n"
	res := r.Run(in, []string{"TCPREMOTEIP=192.0.2.7", "TCPREMOTEPORT=5555"}, "tern-pop3d")
	if res.Code != 0 {
		t.Fatal(res)
	}
	if !strings.Contains(res.Stdout, "\r\nSTLS\r\n") || strings.Contains(res.Stdout, "\r\nUSER\r\n") || strings.Contains(res.Stdout, "SASL") {
		t.Errorf("CAPA before TLS:\n%s", res.Stdout)
	}
	if strings.Count(res.Stdout, "-ERR [AUTH] plain-text passwords are refused") != 2 {
		t.Errorf("USER and AUTH PLAIN not refused:\n%s", res.Stdout)
	}
	res = r.Run(in, []string{"TCPREMOTEIP=192.0.2.7", "TCPREMOTEPORT=5555"}, "tern-pop3d", "--insecure-auth")
	if !strings.Contains(res.Stdout, "+OK logged in") {
		t.Errorf("--insecure-auth:\n%s", res.Stdout)
	}
}

func TestPOP3STLS(t *testing.T) {
	r := NewRoot(t)
	a := newPOPAccount(t, r)
	writeTestCert(t, r.Conf, 7)
	_, addr := startPOP3(t, r)
	script := `
import poplib, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
p = poplib.POP3(sys.argv[1], int(sys.argv[2]), timeout=20)
caps = p.capa()
print("before", sorted(caps))
p.stls(context=ctx)
print("cipher", p.sock.version())
print("after", sorted(p.capa()))
p.user(sys.argv[3]); p.pass_(sys.argv[4])
print("stat", p.stat())
p.quit()
`
	host, port, _ := net.SplitHostPort(addr)
	res := python(t, r, script, host, port, a.user, a.pass)
	if res.Code != 0 || !strings.Contains(res.Stdout, "'STLS'") || !strings.Contains(res.Stdout, "cipher TLSv1.3") || !strings.Contains(res.Stdout, "stat (3,") {
		t.Fatalf("STLS session:\n%v", res)
	}
	if after := res.Stdout[strings.Index(res.Stdout, "after"):]; strings.Contains(after, "'STLS'") {
		t.Errorf("STLS still offered after TLS:\n%s", res.Stdout)
	}
	// Implicit TLS (port 995) with --tls.
	_, tlsAddr := startPOP3(t, r, "--tls")
	tc, err := tls.Dial("tcp", tlsAddr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	g, _ := bufio.NewReader(tc).ReadString('\n')
	if !strings.HasPrefix(g, "+OK ") {
		t.Errorf("greeting over implicit TLS: %q", g)
	}
}

func TestPOP3Tcpserver(t *testing.T) {
	Need(t, "tcpserver")
	r := NewRoot(t)
	a := newPOPAccount(t, r)
	_, addr := r.StartTcpserver([]string{"-R", "-H", "-c", "5"}, Bin("tern-pop3d"))
	_, port, _ := net.SplitHostPort(addr)
	res := python(t, r, poplibSession, "127.0.0.1", port, a.user, a.pass, "dele1")
	if res.Code != 0 || !strings.Contains(res.Stdout, "stat 3 ") {
		t.Fatalf("poplib through tcpserver: %v", res)
	}
	if n := len(visible(t, a.maildir)); n != 2 {
		t.Errorf("%d messages after DELE+QUIT through tcpserver, want 2", n)
	}
}

func TestPOP3Fetchmail(t *testing.T) {
	Need(t, "fetchmail")
	r := NewRoot(t)
	a := newPOPAccount(t, r)
	_, addr := startPOP3(t, r)
	_, port, _ := net.SplitHostPort(addr)
	dest := r.Path("fetched", "Maildir")
	os.MkdirAll(filepath.Dir(dest), 0o755)
	rc := r.WriteFile("fetchmailrc", fmt.Sprintf("poll 127.0.0.1 service %s proto pop3 auth password uidl\n  user %q password %q is root here\n  mda %q\n  sslproto ''\n", port, a.user, a.pass, Bin("tern-deliver")+" "+dest))
	os.Chmod(rc, 0o600)
	run := func(args ...string) Result {
		cmd := exec.Command("fetchmail", append([]string{"-f", rc, "--nodetach", "--idfile", r.Path("fetchids")}, args...)...)
		cmd.Env = r.Env("HOME=" + r.Dir)
		return RunCmd(t, cmd, "")
	}
	// Leave on the server first (keep), then fetch new only: nothing.
	if res := run("--keep"); res.Code != 0 {
		t.Fatalf("fetchmail --keep: %v", res)
	}
	if n := len(visible(t, dest)); n != 3 {
		t.Fatalf("fetchmail delivered %d messages, want 3: %v", n, run("--keep", "-v"))
	}
	if res := run("--keep"); res.Code != 1 { // 1: no mail
		t.Errorf("second fetchmail --keep (UIDL must hide seen mail): %v", res)
	}
	if n := len(visible(t, dest)); n != 3 {
		t.Errorf("UIDLs not stable: %d messages after the second run", n)
	}
	// Fetch and delete everything.
	if res := run("--all", "--nokeep"); res.Code != 0 {
		t.Fatalf("fetchmail --all --nokeep: %v", res)
	}
	if n := len(visible(t, a.maildir)); n != 0 {
		t.Errorf("%d messages left on the server after fetchmail --nokeep", n)
	}
	got := readAll(t, dest)
	for _, b := range a.bodies {
		if !strings.Contains(got, strings.SplitN(b, "\n", 3)[2]) {
			t.Errorf("a message arrived changed or not at all: %q", b)
		}
	}
}

func TestPOP3Getmail(t *testing.T) {
	Need(t, "getmail")
	r := NewRoot(t)
	a := newPOPAccount(t, r)
	_, addr := startPOP3(t, r)
	_, port, _ := net.SplitHostPort(addr)
	dest := r.Path("got", "Maildir")
	os.MkdirAll(filepath.Dir(dest), 0o755)
	r.WriteFile("getmail/getmailrc", fmt.Sprintf("[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\nport = %s\nusername = %s\npassword = %s\n\n[destination]\ntype = MDA_external\npath = %s\narguments = (%q,)\nallow_root_commands = true\n\n[options]\nread_all = false\ndelete = false\n", port, a.user, a.pass, Bin("tern-deliver"), dest))
	run := func() Result {
		cmd := exec.Command("getmail", "--getmaildir", r.Path("getmail"), "--rcfile", "getmailrc")
		cmd.Env = r.Env("HOME=" + r.Dir)
		return RunCmd(t, cmd, "")
	}
	if res := run(); res.Code != 0 || !strings.Contains(res.Stdout, "3 messages") {
		t.Fatalf("getmail: %v", res)
	}
	// getmail remembers UIDLs: a second run finds nothing new.
	if res := run(); res.Code != 0 || !strings.Contains(res.Stdout, "0 messages") {
		t.Errorf("second getmail run: %v", res)
	}
	if n := len(visible(t, dest)); n != 3 {
		t.Errorf("getmail stored %d messages, want 3", n)
	}
}

func readAll(t *testing.T, md string) string {
	t.Helper()
	var b strings.Builder
	for _, d := range []string{"new", "cur"} {
		for _, f := range files(t, filepath.Join(md, d)) {
			data, err := os.ReadFile(filepath.Join(md, d, f))
			if err != nil {
				t.Fatal(err)
			}
			b.Write(data)
		}
	}
	return b.String()
}

// TestPOP3Checkpassword logs in through a checkpassword program (the fd 3
// interface of qmail-pop3d) instead of the users file. Run as root, the
// program changes to the account's uid as checkpassword does.
func TestPOP3Checkpassword(t *testing.T) {
	r := NewRoot(t)
	a := newPOPAccount(t, r)
	os.Remove(r.Path("etc", "tern", "users"))
	drop := ""
	if os.Geteuid() == 0 {
		Need(t, "setpriv")
		drop = "setpriv --reuid=65534 --regid=65534 --clear-groups"
	}
	prog := r.WriteFile("checkpw", fmt.Sprintf(`#!/bin/sh
data=$(tr '\0' '\n' <&3)
user=$(printf '%%s\n' "$data" | sed -n 1p)
pass=$(printf '%%s\n' "$data" | sed -n 2p)
[ "$user" = %q ] && [ "$pass" = %q ] || exit 1
USER=$user HOME=%q
export USER HOME
exec %s "$@"
`, a.user, a.pass, a.home, drop))
	os.Chmod(prog, 0o755)
	_, addr := startPOP3(t, r, "--checkpassword", prog)
	c := pop3Dial(t, addr)
	c.cmd("USER " + a.user)
	if got := c.cmd("PASS wrong"); !strings.HasPrefix(got, "-ERR [AUTH]") {
		t.Errorf("wrong password through checkpassword: %q", got)
	}
	c.cmd("USER " + a.user)
	if got := c.cmd("PASS " + a.pass); !strings.HasPrefix(got, "+OK logged in, 3 messages") {
		t.Errorf("checkpassword login: %q", got)
	}
	c.cmd("QUIT")
}

// popDownload is one leave-on-server session: the UIDLs, every message
// retrieved, QUIT. It returns the UIDLs.
func popDownload(t *testing.T, a *popAccount, addr string) []string {
	t.Helper()
	c := pop3Dial(t, addr)
	c.cmd("USER " + a.user)
	if got := c.cmd("PASS " + a.pass); !strings.HasPrefix(got, "+OK") {
		t.Fatalf("PASS: %q", got)
	}
	if got := c.cmd("UIDL"); !strings.HasPrefix(got, "+OK") {
		t.Fatalf("UIDL: %q", got)
	}
	var uidls []string
	for l := c.line(); l != "."; l = c.line() {
		uidls = append(uidls, strings.Fields(l)[1])
	}
	for i := range uidls {
		if got := c.cmd(fmt.Sprintf("RETR %d", i+1)); !strings.HasPrefix(got, "+OK") {
			t.Fatalf("RETR %d: %q", i+1, got)
		}
		for l := c.line(); l != "."; l = c.line() {
		}
	}
	if got := c.cmd("QUIT"); !strings.HasPrefix(got, "+OK") {
		t.Fatalf("QUIT: %q", got)
	}
	return uidls
}

// TestPOP3Index: a login lists the maildrop from the INBOX's tern-index,
// which the session before left current (its last block records the
// directories' stamps), and every change another program makes between
// two sessions shows in the next one: a delivery, an expunge, a flag
// taken away (which the next download puts back), both right after a
// session (in the same timestamp tick, where the stamps must not be
// trusted) and after a pause (where they are).
func TestPOP3Index(t *testing.T) {
	r := NewRoot(t)
	a := newPOPAccount(t, r)
	_, addr := startPOP3(t, r)
	cache := filepath.Join(a.maildir, "tern-index")
	pause := func() { time.Sleep(50 * time.Millisecond) }

	first := popDownload(t, a, addr)
	if len(first) != 3 {
		t.Fatalf("first session: %d messages", len(first))
	}
	pause()
	if got := popDownload(t, a, addr); !slices.Equal(got, first) {
		t.Fatalf("second session %q, first %q", got, first)
	}
	idx, err := os.ReadFile(cache)
	if err != nil {
		t.Fatalf("no index after a session on a quiet Maildir: %v", err)
	}
	if lines := strings.Split(strings.TrimSuffix(string(idx), "\n"), "\n"); len(lines) < 2 || !strings.HasPrefix(lines[len(lines)-2], "s ") {
		t.Errorf("the index does not end in the directories' stamps after a session:\n%s", idx)
	}
	want := first
	deliver := func() {
		t.Helper()
		msg := "From: c@example.org\nSubject: later\n\nlater\n"
		if res := r.Run(msg, nil, "tern-deliver", "-f", "c@example.org", "-r", "bob@example.net", a.maildir); res.Code != 0 {
			t.Fatalf("deliver: %v", res)
		}
		a.chown(t)
		names := files(t, filepath.Join(a.maildir, "new"))
		want = append(want, strings.SplitN(names[len(names)-1], ":", 2)[0])
	}
	expunge := func() {
		t.Helper()
		cur := files(t, filepath.Join(a.maildir, "cur"))
		if err := os.Remove(filepath.Join(a.maildir, "cur", cur[0])); err != nil {
			t.Fatal(err)
		}
		want = slices.DeleteFunc(want, func(u string) bool { return strings.HasPrefix(cur[0], u+":") })
	}
	var unflagged string
	unflag := func() { // as an IMAP client's "mark as unread"
		t.Helper()
		cur := files(t, filepath.Join(a.maildir, "cur"))
		unflagged = strings.TrimSuffix(cur[len(cur)-1], "S")
		if err := os.Rename(filepath.Join(a.maildir, "cur", cur[len(cur)-1]), filepath.Join(a.maildir, "cur", unflagged)); err != nil {
			t.Fatal(err)
		}
	}
	for _, quiet := range []bool{false, true} {
		for _, change := range []struct {
			name string
			do   func()
		}{{"delivery", deliver}, {"expunge", expunge}, {"flag removed", unflag}} {
			if quiet {
				pause()
			}
			unflagged = ""
			change.do()
			got := popDownload(t, a, addr)
			if !slices.Equal(got, want) {
				t.Errorf("after a %s (pause %v): UIDLs %q, want %q", change.name, quiet, got, want)
				want = got
			}
			if unflagged != "" {
				if _, err := os.Stat(filepath.Join(a.maildir, "cur", unflagged+"S")); err != nil {
					t.Errorf("a message unseen since the last listing was retrieved but not marked seen: %v", err)
				}
			}
		}
	}
	// An index cut short (a crash in the middle of an append) loses its
	// last block and nothing else.
	pause()
	popDownload(t, a, addr)
	pause()
	popDownload(t, a, addr)
	b, err := os.ReadFile(cache)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(cache, b[:len(b)-5], 0o600)
	if got := popDownload(t, a, addr); !slices.Equal(got, want) {
		t.Errorf("with an index cut short: UIDLs %q, want %q", got, want)
	}
	if n := len(files(t, filepath.Join(a.maildir, "new"))); n != 0 {
		t.Errorf("%d messages left in new/", n)
	}
}
