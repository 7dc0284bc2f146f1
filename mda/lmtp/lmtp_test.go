package lmtp

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/maildir"
)

// world is a control directory and the homes of its accounts.
type world struct {
	t    *testing.T
	dir  string
	conf *conf.Conf
}

// newWorld writes users (name -> uid, "" for the server's own) with homes
// under a temporary directory, and aliases.
func newWorld(t *testing.T, users map[string]string, aliases string) *world {
	t.Helper()
	dir := t.TempDir()
	etc := filepath.Join(dir, "etc")
	os.MkdirAll(etc, 0o755)
	var b strings.Builder
	for name, uid := range users {
		local, _, _ := strings.Cut(name, "@")
		home := filepath.Join(dir, "home", local)
		os.MkdirAll(home, 0o755)
		if uid != "" {
			var n int
			fmt.Sscan(uid, &n)
			os.Chown(home, n, n)
		}
		fmt.Fprintf(&b, "%s:{PLAIN}x:%s:%s::%s::\n", name, uid, uid, home)
	}
	os.WriteFile(filepath.Join(etc, "users"), []byte(b.String()), 0o644)
	os.WriteFile(filepath.Join(etc, "domains"), []byte("example.org\n"), 0o644)
	os.WriteFile(filepath.Join(etc, "aliases"), []byte(aliases), 0o644)
	c, err := conf.Loader{Hostname: func() (string, error) { return "mx.example.org", nil }}.Load(etc)
	if err != nil {
		t.Fatal(err)
	}
	return &world{t: t, dir: dir, conf: c}
}

func (w *world) maildir(user string) string { return filepath.Join(w.dir, "home", user, "Maildir") }

// messages returns the texts in a folder's new/ ("" is INBOX).
func (w *world) messages(user, folder string) []string {
	w.t.Helper()
	dir := w.maildir(user)
	if folder != "" {
		dir = filepath.Join(dir, "."+folder)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "new"))
	var out []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, "new", e.Name()))
		if err != nil {
			w.t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// client is a raw LMTP client: each exchange is checked line by line.
type client struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

// dial starts a conversation with srv over a pipe, served as Serve is by
// tern-lmtpd, and reads the greeting and LHLO.
func dial(t *testing.T, srv *Server) *client {
	t.Helper()
	a, b := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background(), b, "test", nil); b.Close() }()
	t.Cleanup(func() {
		a.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after the client left")
		}
	})
	a.SetDeadline(time.Now().Add(30 * time.Second))
	c := &client{t: t, c: a, r: bufio.NewReader(a)}
	if g := c.reply(); !strings.HasPrefix(g, "220 mx.example.org ") || !strings.Contains(g, "LMTP") {
		t.Fatalf("greeting %q", g)
	}
	if got := c.do("LHLO client.example.org"); !strings.Contains(got, "250-PIPELINING") || !strings.Contains(got, "ENHANCEDSTATUSCODES") {
		t.Fatalf("LHLO: %q (RFC 2033 §5 wants PIPELINING and ENHANCEDSTATUSCODES)", got)
	}
	return c
}

// reply reads one reply, all its lines.
func (c *client) reply() string {
	c.t.Helper()
	var all []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("read reply: %v (have %q)", err, all)
		}
		line = strings.TrimRight(line, "\r\n")
		all = append(all, line)
		if len(line) < 4 || line[3] != '-' {
			return strings.Join(all, "\n")
		}
	}
}

func (c *client) do(cmd string) string {
	c.t.Helper()
	fmt.Fprintf(c.c, "%s\r\n", cmd)
	return c.reply()
}

// send runs one transaction and returns the RCPT replies and, when any
// recipient was accepted, the replies after DATA.
func (c *client) send(from string, to []string, msg string) (rcpt, data []string) {
	c.t.Helper()
	if got := c.do("MAIL FROM:<" + from + ">"); !strings.HasPrefix(got, "250 ") {
		c.t.Fatalf("MAIL: %q", got)
	}
	ok := 0
	for _, r := range to {
		got := c.do("RCPT TO:<" + r + ">")
		rcpt = append(rcpt, got)
		if strings.HasPrefix(got, "250 ") {
			ok++
		}
	}
	if ok == 0 {
		if got := c.do("RSET"); !strings.HasPrefix(got, "250 ") {
			c.t.Fatalf("RSET: %q", got)
		}
		return rcpt, nil
	}
	if got := c.do("DATA"); !strings.HasPrefix(got, "354 ") {
		c.t.Fatalf("DATA: %q", got)
	}
	body := strings.ReplaceAll(msg, "\n", "\r\n")
	body = strings.ReplaceAll(body, "\r\n.", "\r\n..")
	fmt.Fprintf(c.c, "%s.\r\n", body)
	for range ok {
		data = append(data, c.reply())
	}
	return rcpt, data
}

const msg = "From: alice@example.net\nSubject: hello\n\nbody\n"

func TestPerRecipientAnswers(t *testing.T) {
	w := newWorld(t, map[string]string{"bob@example.org": "", "carol@example.org": "", "dave@example.org": "", "erin@example.org": "4242"},
		"team@example.org: bob, carol\nout@example.org: bob, |/bin/cat\nloop1: loop2\nloop2: loop1\n")
	// carol is over quota; bob has a folder "lists".
	s, err := maildir.Create(w.maildir("carol"), 0o700)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetQuota(10, 0); err != nil {
		t.Fatal(err)
	}
	b, err := maildir.Create(w.maildir("bob"), 0o700)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateFolder("lists"); err != nil {
		t.Fatal(err)
	}
	srv := &Server{Conf: func() *conf.Conf { return w.conf }, Euid: 1000}
	c := dial(t, srv)
	rcpt, data := c.send("alice@example.net",
		[]string{"bob@example.org", "nobody@example.org", "carol@example.org", "dave@example.org", "erin@example.org",
			"out@example.org", "bob+lists@example.org", "Bob+nosuch@example.org", "x@elsewhere.example", "loop1@example.org"},
		"Delivered-To: dave@example.org\n"+msg)
	wantRcpt := []string{"250 2.0.0 ", "550 5.1.1 ", "250 2.0.0 ", "250 2.0.0 ", "451 4.3.0 ", "550 5.1.1 ", "250 2.0.0 ", "250 2.0.0 ", "550 5.1.2 ", "451 4.3.5 "}
	for i, want := range wantRcpt {
		if !strings.HasPrefix(rcpt[i], want) {
			t.Errorf("RCPT %d: %q, want %q...", i, rcpt[i], want)
		}
	}
	// RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.
	wantData := []string{"250 2.0.0 <bob@example.org>", "452 4.2.2 <carol@example.org>", "554 5.4.6 <dave@example.org>",
		"250 2.0.0 <bob+lists@example.org>", "250 2.0.0 <Bob+nosuch@example.org>"}
	if len(data) != len(wantData) {
		t.Fatalf("replies after DATA: %q", data)
	}
	for i, want := range wantData {
		if !strings.HasPrefix(data[i], want) {
			t.Errorf("reply %d after DATA: %q, want %q...", i, data[i], want)
		}
	}
	inbox := w.messages("bob", "")
	if len(inbox) != 2 {
		t.Fatalf("bob's INBOX holds %d messages, want 2 (bob and bob+nosuch)", len(inbox))
	}
	for _, m := range inbox {
		if !strings.HasPrefix(m, "Return-Path: <alice@example.net>\nDelivered-To: ") || !strings.HasSuffix(m, msg) {
			t.Errorf("stored %q", m)
		}
	}
	if lists := w.messages("bob", "lists"); len(lists) != 1 || !strings.Contains(lists[0], "Delivered-To: bob+lists@example.org\n") {
		t.Errorf("bob's lists folder: %q", lists)
	}
	if n := len(w.messages("carol", "")) + len(w.messages("dave", "")); n != 0 {
		t.Errorf("%d messages for the over-quota and looping recipients", n)
	}
	// An alias of accounts: each gets it, the alias is answered once.
	rcpt, data = c.send("", []string{"team@example.org"}, msg)
	if !strings.HasPrefix(rcpt[0], "250 ") || len(data) != 1 || !strings.HasPrefix(data[0], "452 4.2.2 <team@example.org>") {
		t.Errorf("alias with an over-quota member: RCPT %q, DATA %q (a temporary failure of one makes the alias retried)", rcpt, data)
	}
	if got := w.messages("bob", ""); len(got) != 3 || !strings.HasPrefix(got[0]+got[1]+got[2], "") {
		t.Errorf("bob's INBOX after the alias: %d messages", len(got))
	}
	found := false
	for _, m := range w.messages("bob", "") {
		if strings.HasPrefix(m, "Return-Path: <>\nDelivered-To: bob@example.org\n") {
			found = true
		}
	}
	if !found {
		t.Error("no message from the null sender through the alias, with Delivered-To: bob@example.org")
	}
	if got := c.do("QUIT"); !strings.HasPrefix(got, "221 ") {
		t.Errorf("QUIT: %q", got)
	}
}

func TestSizeLimit(t *testing.T) {
	w := newWorld(t, map[string]string{"bob@example.org": ""}, "")
	srv := &Server{Conf: func() *conf.Conf { return w.conf }, Euid: 1000, MaxSize: 2000}
	c := dial(t, srv)
	if got := c.do("MAIL FROM:<a@example.net> SIZE=5000"); !strings.HasPrefix(got, "552 5.3.4 ") {
		t.Errorf("MAIL with SIZE over the limit: %q", got)
	}
	big := "Subject: big\n\n" + strings.Repeat("x", 70) + "\n"
	for len(big) < 2100 {
		big += strings.Repeat("y", 70) + "\n"
	}
	_, data := c.send("a@example.net", []string{"bob@example.org"}, big)
	if len(data) != 1 || !strings.HasPrefix(data[0], "552 5.3.4 ") {
		t.Errorf("over the limit: %q", data)
	}
	exact := "Subject: x\n\n"
	for len(exact)+strings.Count(exact, "\n") < 2000-80 {
		exact += strings.Repeat("z", 70) + "\n"
	}
	exact += strings.Repeat("w", 2000-len(exact)-strings.Count(exact, "\n")-2) + "\n"
	if n := len(exact) + strings.Count(exact, "\n"); n != 2000 {
		t.Fatalf("test message is %d bytes on the wire", n)
	}
	_, data = c.send("a@example.net", []string{"bob@example.org"}, exact)
	if len(data) != 1 || !strings.HasPrefix(data[0], "250 ") {
		t.Errorf("exactly at the limit: %q", data)
	}
	if n := len(w.messages("bob", "")); n != 1 {
		t.Errorf("%d messages stored, want 1", n)
	}
}

// TestManyAtOnce: connections delivering into one Maildir at the same
// time, several messages each and several recipients a message: every
// 250 is a stored message, and nothing is left in tmp/.
func TestManyAtOnce(t *testing.T) {
	users := map[string]string{}
	for i := range 4 {
		users[fmt.Sprintf("u%d@example.org", i)] = ""
	}
	w := newWorld(t, users, "")
	srv := &Server{Conf: func() *conf.Conf { return w.conf }, Euid: 1000}
	const conns, per = 6, 10
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range conns {
		c := dial(t, srv)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				_, data := c.send("a@example.net", []string{"u0@example.org", "u1@example.org", "u2@example.org", "u3@example.org"}, msg)
				for _, d := range data {
					if strings.HasPrefix(d, "250 ") {
						mu.Lock()
						ok++
						mu.Unlock()
					}
				}
			}
		}()
	}
	wg.Wait()
	if ok != conns*per*4 {
		t.Errorf("%d deliveries answered 250, want %d", ok, conns*per*4)
	}
	for i := range 4 {
		u := fmt.Sprintf("u%d", i)
		if n := len(w.messages(u, "")); n != conns*per {
			t.Errorf("%s has %d messages, want %d", u, n, conns*per)
		}
		if e, _ := os.ReadDir(filepath.Join(w.maildir(u), "tmp")); len(e) != 0 {
			t.Errorf("%s: tmp/ holds %d files", u, len(e))
		}
	}
}

// TestAsRoot: served as root, each account's files are its own, and an
// account without a uid, or root's, is refused.
func TestAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP: this test needs root (it delivers as uid 65534)")
	}
	w := newWorld(t, map[string]string{"nob@example.org": "65534", "own@example.org": "", "root@example.org": "0", "fwd@example.org": "65534"}, "")
	for _, d := range []string{w.dir, filepath.Dir(w.dir), filepath.Join(w.dir, "home")} {
		os.Chmod(d, 0o755)
	}
	// fwd's ~/.forward runs a command, which must run as fwd, and keeps a
	// copy in the Maildir.
	fwdHome := filepath.Join(w.dir, "home", "fwd")
	os.WriteFile(filepath.Join(fwdHome, ".forward"), []byte(`\fwd@example.org`+"\n"+`"|/usr/bin/id -u > `+fwdHome+`/who; cat > `+fwdHome+`/copy"`+"\n"), 0o644)
	srv := &Server{Conf: func() *conf.Conf { return w.conf }, Euid: 0}
	c := dial(t, srv)
	rcpt, data := c.send("a@example.net", []string{"nob@example.org", "own@example.org", "root@example.org"}, msg)
	if !strings.HasPrefix(rcpt[0], "250 ") || !strings.HasPrefix(rcpt[1], "451 4.3.5 ") || !strings.HasPrefix(rcpt[2], "451 4.3.5 ") {
		t.Errorf("RCPT replies %q", rcpt)
	}
	if len(data) != 1 || !strings.HasPrefix(data[0], "250 ") {
		t.Fatalf("DATA replies %q", data)
	}
	for _, p := range []string{w.maildir("nob"), filepath.Join(w.maildir("nob"), "new")} {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 65534 || st.Gid != 65534 {
			t.Errorf("%s owned by %d:%d, want 65534:65534", p, st.Uid, st.Gid)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(w.maildir("nob"), "new"))
	for _, e := range entries {
		var st syscall.Stat_t
		syscall.Stat(filepath.Join(w.maildir("nob"), "new", e.Name()), &st)
		if st.Uid != 65534 {
			t.Errorf("message owned by uid %d", st.Uid)
		}
	}
	_, data = c.send("a@example.net", []string{"fwd@example.org"}, msg)
	if len(data) != 1 || !strings.HasPrefix(data[0], "250 ") {
		t.Fatalf("through .forward: %q", data)
	}
	if who, _ := os.ReadFile(filepath.Join(fwdHome, "who")); strings.TrimSpace(string(who)) != "65534" {
		t.Errorf(".forward's command ran as uid %q, want 65534", who)
	}
	if cp, _ := os.ReadFile(filepath.Join(fwdHome, "copy")); string(cp) != msg {
		t.Errorf(".forward's command got %q, want the message as sent", cp)
	}
	if got := w.messages("fwd", ""); len(got) != 1 || !strings.HasPrefix(got[0], "Return-Path: <a@example.net>\nDelivered-To: fwd@example.org\n") {
		t.Errorf(".forward's \\fwd copy: %q", got)
	}
	// A Maildir the account may not write is a temporary failure, not
	// a delivery made with root's rights.
	os.Chmod(filepath.Join(w.maildir("nob"), "tmp"), 0o500)
	os.Chown(filepath.Join(w.maildir("nob"), "tmp"), 0, 0)
	_, data = c.send("a@example.net", []string{"nob@example.org"}, msg)
	if len(data) != 1 || !strings.HasPrefix(data[0], "451 4.3.0 ") {
		t.Errorf("unwritable tmp/: %q", data)
	}
}

// TestSharedFlush: the copies of one message that reach one folder
// together share the flush of its new/ — here eight subaddresses of one
// account, while the first flush is held up — and each is answered only
// after a flush that began after its link.
func TestSharedFlush(t *testing.T) {
	w := newWorld(t, map[string]string{"bob@example.org": ""}, "")
	srv := &Server{Conf: func() *conf.Conf { return w.conf }, Euid: 1000}
	var mu sync.Mutex
	flushes := 0
	srv.flushHook = func(string) {
		mu.Lock()
		flushes++
		first := flushes == 1
		mu.Unlock()
		if first {
			time.Sleep(300 * time.Millisecond)
		}
	}
	c := dial(t, srv)
	var to []string
	for i := range parallel {
		to = append(to, fmt.Sprintf("bob+%c@example.org", 'a'+i))
	}
	_, data := c.send("a@example.net", to, msg)
	for i, d := range data {
		if !strings.HasPrefix(d, "250 2.0.0 ") {
			t.Errorf("reply %d: %q", i, d)
		}
	}
	if n := len(w.messages("bob", "")); n != parallel {
		t.Fatalf("%d messages, want %d", n, parallel)
	}
	if flushes < 2 || flushes > 3 {
		t.Errorf("%d flushes of new/ for %d copies linked while the first flush ran: want the first and one or two shared ones", flushes, parallel)
	}
}

// TestLargeMessage: a message larger than what is spooled in memory goes
// through a temporary file and is stored whole, with LF line ends.
func TestLargeMessage(t *testing.T) {
	w := newWorld(t, map[string]string{"bob@example.org": "", "carol@example.org": ""}, "")
	srv := &Server{Conf: func() *conf.Conf { return w.conf }, Euid: 1000, TempDir: t.TempDir()}
	c := dial(t, srv)
	var b strings.Builder
	b.WriteString("Subject: large\n\n")
	for i := 0; b.Len() < spoolInMemory+300000; i++ {
		fmt.Fprintf(&b, "line %d %s\n", i, strings.Repeat("x", i%97))
	}
	big := b.String()
	_, data := c.send("a@example.net", []string{"bob@example.org", "carol@example.org"}, big)
	if len(data) != 2 || !strings.HasPrefix(data[0], "250 ") || !strings.HasPrefix(data[1], "250 ") {
		t.Fatalf("replies %q", data)
	}
	for _, u := range []string{"bob", "carol"} {
		got := w.messages(u, "")
		if len(got) != 1 || !strings.HasSuffix(got[0], "\n"+big) || strings.Contains(got[0], "\r") {
			t.Errorf("%s: %d messages; the large one stored changed", u, len(got))
		}
	}
	if e, _ := os.ReadDir(srv.TempDir); len(e) != 0 {
		t.Errorf("spool files left: %v", e)
	}
}
