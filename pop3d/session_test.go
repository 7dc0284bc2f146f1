package pop3d

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"io/fs"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
)

// memBox is a Mailbox in memory.
type memBox struct {
	msgs      map[string]string
	order     []string
	deleted   []string
	retrieved []string
	closed    bool
}

func (b *memBox) Messages() []Message {
	var out []Message
	for _, uid := range b.order {
		body := b.msgs[uid]
		out = append(out, Message{UID: uid, Size: int64(len(body) + strings.Count(body, "\n"))})
	}
	return out
}

func (b *memBox) Open(i int) (io.ReadCloser, error) {
	body, ok := b.msgs[b.order[i]]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return io.NopCloser(strings.NewReader(body)), nil
}

func (b *memBox) Commit(deleted, retrieved []int) error {
	for _, i := range deleted {
		b.deleted = append(b.deleted, b.order[i])
	}
	for _, i := range retrieved {
		b.retrieved = append(b.retrieved, b.order[i])
	}
	return nil
}

func (b *memBox) Close() error { b.closed = true; return nil }

type memAuth struct {
	box   *memBox
	inUse bool
}

func (a *memAuth) Mechanisms(tls bool) []string {
	if !tls {
		return nil
	}
	return []string{"PLAIN"}
}

func (a *memAuth) check(user, pass string) (Mailbox, error) {
	if user != "bob" || pass != "secret" {
		return nil, ErrAuthFailed
	}
	if a.inUse {
		return nil, ErrInUse
	}
	return a.box, nil
}

func (a *memAuth) Login(_ context.Context, user, pass string) (Mailbox, error) {
	return a.check(user, pass)
}

func (a *memAuth) SASL(_ context.Context, mech string) (sasl.Server, func() (string, Mailbox, error), error) {
	var user, pass string
	srv := sasl.NewPlainServer(func(_, u, p string) error {
		user, pass = u, p
		if _, err := a.check(u, p); err == ErrAuthFailed {
			return err
		}
		return nil
	})
	return srv, func() (string, Mailbox, error) {
		box, err := a.check(user, pass)
		return user, box, err
	}, nil
}

func newBox() *memBox {
	return &memBox{
		msgs: map[string]string{
			"1700000000.M1P1Q1.host": "Subject: one\n\nfirst\n.dot line\n..two dots\n",
			"1700000001.M2P2Q2.host": "Subject: two\r\nX: y\r\n\r\nl1\r\nl2\r\nl3\r\n",
			"1700000002.M3P3Q3.host": "Subject: three\n\nno final newline",
		},
		order: []string{"1700000000.M1P1Q1.host", "1700000001.M2P2Q2.host", "1700000002.M3P3Q3.host"},
	}
}

// client drives a session over net.Pipe.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	done chan error
}

func start(t *testing.T, cfg Config) *client {
	t.Helper()
	a, b := net.Pipe()
	c := &client{t: t, conn: a, r: bufio.NewReader(a), done: make(chan error, 1)}
	go func() {
		err := Serve(context.Background(), b, cfg)
		b.Close()
		c.done <- err
	}()
	t.Cleanup(func() { a.Close() })
	c.line() // greeting
	return c
}

func (c *client) line() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	if !strings.HasSuffix(l, "\r\n") {
		c.t.Fatalf("line without CRLF: %q", l)
	}
	return strings.TrimSuffix(l, "\r\n")
}

func (c *client) send(cmd string) string {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.conn, cmd+"\r\n"); err != nil {
		c.t.Fatal(err)
	}
	return c.line()
}

// multi reads a multi-line body up to the "." line, undoing dot-stuffing.
func (c *client) multi() []string {
	c.t.Helper()
	var lines []string
	for {
		l := c.line()
		if l == "." {
			return lines
		}
		lines = append(lines, strings.TrimPrefix(l, "."))
	}
}

func expect(t *testing.T, got, prefix string) {
	t.Helper()
	if !strings.HasPrefix(got, prefix) {
		t.Fatalf("got %q, want %q...", got, prefix)
	}
}

func secureCfg(a Auth) Config {
	return Config{Auth: a, Secure: func() bool { return true }}
}

func login(t *testing.T, c *client) {
	expect(t, c.send("USER bob"), "+OK")
	expect(t, c.send("PASS secret"), "+OK")
}

func TestTransaction(t *testing.T) {
	box := newBox()
	c := start(t, secureCfg(&memAuth{box: box}))
	expect(t, c.send("STAT"), "-ERR")
	login(t, c)
	var sizes []int
	total := 0
	for _, m := range box.Messages() {
		sizes = append(sizes, int(m.Size))
		total += int(m.Size)
	}
	expect(t, c.send("STAT"), fmt.Sprintf("+OK 3 %d", total))
	expect(t, c.send("LIST"), "+OK")
	if got := c.multi(); !slices.Equal(got, []string{fmt.Sprint("1 ", sizes[0]), fmt.Sprint("2 ", sizes[1]), fmt.Sprint("3 ", sizes[2])}) {
		t.Errorf("LIST: %v", got)
	}
	expect(t, c.send("UIDL 2"), "+OK 2 1700000001.M2P2Q2.host")
	expect(t, c.send("RETR 1"), fmt.Sprintf("+OK %d octets", sizes[0]))
	if got := c.multi(); !slices.Equal(got, []string{"Subject: one", "", "first", ".dot line", "..two dots"}) {
		t.Errorf("RETR 1: %q", got)
	}
	expect(t, c.send("RETR 3"), "+OK")
	if got := c.multi(); !slices.Equal(got, []string{"Subject: three", "", "no final newline"}) {
		t.Errorf("RETR 3: %q", got)
	}
	expect(t, c.send("TOP 2 1"), "+OK")
	if got := c.multi(); !slices.Equal(got, []string{"Subject: two", "X: y", "", "l1"}) {
		t.Errorf("TOP 2 1: %q", got)
	}
	expect(t, c.send("TOP 2 0"), "+OK")
	if got := c.multi(); !slices.Equal(got, []string{"Subject: two", "X: y", ""}) {
		t.Errorf("TOP 2 0: %q", got)
	}
	expect(t, c.send("DELE 1"), "+OK")
	expect(t, c.send("DELE 1"), "-ERR")
	expect(t, c.send("RETR 1"), "-ERR")
	expect(t, c.send("RETR 4"), "-ERR")
	expect(t, c.send("RETR x"), "-ERR")
	expect(t, c.send("STAT"), fmt.Sprintf("+OK 2 %d", total-sizes[0]))
	expect(t, c.send("RSET"), "+OK")
	expect(t, c.send("STAT"), fmt.Sprintf("+OK 3 %d", total))
	expect(t, c.send("DELE 2"), "+OK")
	expect(t, c.send("UIDL"), "+OK")
	if got := c.multi(); len(got) != 2 || got[1] != "3 1700000002.M3P3Q3.host" {
		t.Errorf("UIDL after DELE: %v", got)
	}
	expect(t, c.send("NOOP"), "+OK")
	expect(t, c.send("QUIT"), "+OK")
	<-c.done
	if !slices.Equal(box.deleted, []string{"1700000001.M2P2Q2.host"}) {
		t.Errorf("deleted %v", box.deleted)
	}
	if !slices.Equal(box.retrieved, []string{"1700000000.M1P1Q1.host", "1700000002.M3P3Q3.host"}) {
		t.Errorf("retrieved %v", box.retrieved)
	}
	if !box.closed {
		t.Error("mailbox not closed")
	}
}

func TestDroppedConnectionDeletesNothing(t *testing.T) {
	box := newBox()
	c := start(t, secureCfg(&memAuth{box: box}))
	login(t, c)
	expect(t, c.send("DELE 1"), "+OK")
	c.conn.Close()
	<-c.done
	if box.deleted != nil {
		t.Errorf("a dropped connection deleted %v", box.deleted)
	}
	if !box.closed {
		t.Error("mailbox lock not released")
	}
}

func TestAuthorization(t *testing.T) {
	auth := &memAuth{box: newBox()}
	c := start(t, secureCfg(auth))
	expect(t, c.send("PASS secret"), "-ERR")
	expect(t, c.send("USER bob"), "+OK")
	expect(t, c.send("PASS wrong"), "-ERR [AUTH]")
	expect(t, c.send("APOP bob 0123"), "-ERR")
	auth.inUse = true
	login := c.send("USER bob")
	expect(t, login, "+OK")
	expect(t, c.send("PASS secret"), "-ERR [IN-USE]")
	auth.inUse = false
	expect(t, c.send("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00bob\x00wrong"))), "-ERR [AUTH]")
	expect(t, c.send("AUTH PLAIN"), "+ ")
	expect(t, c.send("*"), "-ERR")
	expect(t, c.send("AUTH PLAIN"), "+ ")
	expect(t, c.send(base64.StdEncoding.EncodeToString([]byte("\x00bob\x00secret"))), "+OK")
	expect(t, c.send("STAT"), "+OK 3 ")
}

func TestInsecureRefusesPasswords(t *testing.T) {
	cfg := Config{Auth: &memAuth{box: newBox()}, Secure: func() bool { return false }, StartTLS: func() (io.Reader, io.Writer, error) { return nil, nil, io.EOF }}
	c := start(t, cfg)
	expect(t, c.send("CAPA"), "+OK")
	capa := c.multi()
	if slices.Contains(capa, "USER") || !slices.Contains(capa, "STLS") || slices.ContainsFunc(capa, func(s string) bool { return strings.HasPrefix(s, "SASL") }) {
		t.Errorf("CAPA before TLS offers passwords or lacks STLS: %v", capa)
	}
	expect(t, c.send("USER bob"), "-ERR [AUTH]")
	expect(t, c.send("AUTH PLAIN AGJvYgBzZWNyZXQ="), "-ERR [AUTH]")
}

func TestCapa(t *testing.T) {
	c := start(t, secureCfg(&memAuth{box: newBox()}))
	expect(t, c.send("CAPA"), "+OK")
	capa := c.multi()
	for _, want := range []string{"TOP", "UIDL", "USER", "PIPELINING", "RESP-CODES", "AUTH-RESP-CODE", "SASL PLAIN"} {
		if !slices.Contains(capa, want) {
			t.Errorf("CAPA lacks %s: %v", want, capa)
		}
	}
}

func TestPipelining(t *testing.T) {
	c := start(t, secureCfg(&memAuth{box: newBox()}))
	io.WriteString(c.conn, "USER bob\r\nPASS secret\r\nSTAT\r\nUIDL 1\r\nQUIT\r\n")
	for _, want := range []string{"+OK", "+OK", "+OK 3", "+OK 1 1700000000", "+OK"} {
		expect(t, c.line(), want)
	}
}

func TestBadInput(t *testing.T) {
	c := start(t, secureCfg(&memAuth{box: newBox()}))
	expect(t, c.send(strings.Repeat("A", MaxLine+10)), "-ERR line too long")
	expect(t, c.send("NOOP"), "-ERR") // not valid before login
	for range MaxErrors - 3 {
		expect(t, c.send("BOGUS"), "-ERR")
	}
	expect(t, c.send("BOGUS"), "-ERR unknown command")
	expect(t, c.line(), "-ERR too many")
	if err := <-c.done; err != nil {
		t.Errorf("session error: %v", err)
	}
}

func TestVanishedMessage(t *testing.T) {
	box := newBox()
	c := start(t, secureCfg(&memAuth{box: box}))
	login(t, c)
	delete(box.msgs, box.order[0])
	expect(t, c.send("RETR 1"), "-ERR message 1 was removed")
	expect(t, c.send("RETR 2"), "+OK")
	c.multi()
}

func TestShutdown(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, b, secureCfg(&memAuth{box: newBox()})); b.Close() }()
	r := bufio.NewReader(a)
	r.ReadString('\n')
	cancel()
	// The session may be waiting for a command: the one sent now is
	// answered, then the session ends with the shutdown line.
	go io.WriteString(a, "NOOP\r\n")
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	var last string
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			break
		}
		last = l
	}
	expect(t, last, "-ERR [SYS/TEMP] server shutting down")
	if err := <-done; err != nil {
		t.Error(err)
	}
}

func FuzzSession(f *testing.F) {
	f.Add("USER bob\r\nPASS secret\r\nLIST\r\nTOP 1 2\r\nRETR 2\r\nDELE 3\r\nQUIT\r\n")
	f.Add("AUTH PLAIN\r\nAGJvYgBzZWNyZXQ=\r\nUIDL\r\n")
	f.Add("CAPA\r\nSTLS\r\nAUTH\r\nTOP 1 -1\r\nLIST 0\r\n")
	f.Fuzz(func(t *testing.T, input string) {
		var out strings.Builder
		rw := struct {
			io.Reader
			io.Writer
		}{strings.NewReader(input), &out}
		Serve(context.Background(), rw, secureCfg(&memAuth{box: newBox()}))
		for _, l := range strings.SplitAfter(out.String(), "\r\n") {
			if strings.Contains(strings.TrimSuffix(l, "\r\n"), "\n") {
				t.Fatalf("bare LF in output: %q", l)
			}
		}
	})
}
