package serve

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"github.com/tern-mail/tern/internal/testcert"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tern-mail/tern/internal/logging"
	"github.com/tern-mail/tern/internal/sysexit"
	"github.com/tern-mail/tern/internal/tlsconf"
)

// pipeConn returns a Conn over one end of net.Pipe and the other end.
func testConn(t *testing.T, o Options) (*Conn, net.Conn) {
	t.Helper()
	o.setDefaults()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return newConn(a, "testcid", netip.MustParseAddrPort("192.0.2.1:1234"), netip.AddrPort{}, &o), b
}

// readAll reads c until an error and returns it with the time it took.
func readAll(c net.Conn) (time.Duration, error) {
	start := time.Now()
	buf := make([]byte, 64)
	for {
		if _, err := c.Read(buf); err != nil {
			return time.Since(start), err
		}
	}
}

// trickle writes one byte every step for n steps.
func trickle(c net.Conn, step time.Duration, n int) {
	for range n {
		time.Sleep(step)
		if _, err := c.Write([]byte{'x'}); err != nil {
			return
		}
	}
}

func TestSlowSteadyClientSurvivesIdle(t *testing.T) {
	c, client := testConn(t, Options{Idle: 400 * time.Millisecond, Total: time.Minute})
	// 24 bytes 50ms apart: 1.2s in all, three times the idle timeout,
	// but never silent for long (the margin is wide for loaded machines).
	go func() { trickle(client, 50*time.Millisecond, 24); client.Close() }()
	took, err := readAll(c)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("after %v: %v, want EOF (the client ended it)", took, err)
	}
	if took < time.Second {
		t.Fatalf("ended after %v, before the client did", took)
	}
}

func TestStalledClientCut(t *testing.T) {
	c, client := testConn(t, Options{Idle: 200 * time.Millisecond, Total: time.Minute})
	go trickle(client, 10*time.Millisecond, 3) // then silence
	took, err := readAll(c)
	var te *TimeoutError
	if !errors.As(err, &te) || te.What != "idle" || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v, want an idle timeout", err)
	}
	if took < 200*time.Millisecond || took > 2*time.Second {
		t.Fatalf("cut after %v, want about 230ms", took)
	}
	if got := err.Error(); got != "client silent for 200ms" {
		t.Errorf("error text %q", got)
	}
}

func TestTotalDeadline(t *testing.T) {
	c, client := testConn(t, Options{Idle: time.Second, Total: 400 * time.Millisecond})
	go trickle(client, 50*time.Millisecond, 100) // steady, for 5s
	took, err := readAll(c)
	var te *TimeoutError
	if !errors.As(err, &te) || te.What != "session" {
		t.Fatalf("got %v after %v, want the session timeout", err, took)
	}
	if took < 350*time.Millisecond || took > 2*time.Second {
		t.Fatalf("cut after %v, want about 400ms", took)
	}
	if _, err := c.Write([]byte("late\r\n")); !errors.As(err, &te) {
		t.Fatalf("write after the session ended: %v", err)
	}
}

func TestCallerDeadlineIsEarliest(t *testing.T) {
	c, _ := testConn(t, Options{Idle: time.Minute, Total: time.Hour})
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	took, err := readAll(c)
	var te *TimeoutError
	if !errors.As(err, &te) || te.What != "deadline" || took > time.Second {
		t.Fatalf("got %v after %v, want the caller's deadline", err, took)
	}
}

func TestWriteDeadline(t *testing.T) {
	// A client that never reads cannot hold a write forever.
	c, _ := testConn(t, Options{Idle: 150 * time.Millisecond, Total: time.Minute})
	_, err := c.Write([]byte("hello\r\n"))
	var te *TimeoutError
	if !errors.As(err, &te) || te.What != "idle" {
		t.Fatalf("write to a client that does not read: %v", err)
	}
}

func TestIDs(t *testing.T) {
	s := &ids{pid: 4194303}
	seen := map[string]bool{}
	now := time.Now()
	for range 5000 {
		id := s.next(now)
		if len(id) != 16 || !regexp.MustCompile(`^[a-z2-7]+$`).MatchString(id) {
			t.Fatalf("id %q", id)
		}
		if seen[id] {
			t.Fatalf("id %q repeated", id)
		}
		seen[id] = true
	}
	other := &ids{pid: 4194302}
	if id := other.next(now); seen[id] {
		t.Fatalf("another process made id %q too", id)
	}
}

func TestEnvAddr(t *testing.T) {
	for _, tc := range []struct{ ip, port, want string }{
		{"192.0.2.7", "25", "192.0.2.7:25"},
		{"::ffff:192.0.2.7", "25", "192.0.2.7:25"},
		{"2001:db8::1", "587", "[2001:db8::1]:587"},
		{"192.0.2.7", "", "192.0.2.7:0"},
		{"", "25", "invalid AddrPort"},
		{"mx.example", "25", "invalid AddrPort"},
	} {
		if got := envAddr(tc.ip, tc.port).String(); got != tc.want {
			t.Errorf("envAddr(%q, %q) = %s, want %s", tc.ip, tc.port, got, tc.want)
		}
	}
}

func TestChildEnv(t *testing.T) {
	env := childEnv([]string{"PATH=/bin", "LISTEN_PID=1", "LISTEN_FDS=2", "TCPREMOTEIP=10.0.0.1", "TERN_ACCEPTED=old"},
		"newcid", netip.MustParseAddrPort("192.0.2.9:4000"), netip.MustParseAddrPort("127.0.0.1:25"))
	got := strings.Join(env, " ")
	want := "PATH=/bin PROTO=TCP TCPREMOTEIP=192.0.2.9 TCPREMOTEPORT=4000 TCPLOCALIP=127.0.0.1 TCPLOCALPORT=25 TERN_ACCEPTED=newcid"
	if got != want {
		t.Fatalf("child env\n got %s\nwant %s", got, want)
	}
}

// lockedBuffer collects log output written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// listen runs Run with --listen 127.0.0.1:0, in process (as if not root),
// and returns the bound address, the log and a function that stops the
// server and returns Run's error.
func listen(t *testing.T, o Options, h Handler) (string, *lockedBuffer, func() error) {
	t.Helper()
	logs := &lockedBuffer{}
	o.Log = logging.New("test", logs, nil)
	o.Listen = []string{"127.0.0.1:0"}
	o.euid = func() int { return 1000 }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o, h) }()
	re := regexp.MustCompile(`listening addr=(\S+)`)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if m := re.FindStringSubmatch(logs.String()); m != nil {
			stop := func() error {
				cancel()
				select {
				case err := <-done:
					return err
				case <-time.After(10 * time.Second):
					t.Fatal("Run did not return 10s after cancel")
					return nil
				}
			}
			t.Cleanup(func() { cancel() })
			return m[1], logs, stop
		}
		select {
		case err := <-done:
			t.Fatalf("Run: %v\n%s", err, logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no listening line:\n%s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lineHandler answers each line with "ok <line>", "SLOW" after 500ms, and
// says "bye" when told to stop between commands.
func lineHandler(ctx context.Context, c *Conn) error {
	r := bufio.NewReader(c)
	io.WriteString(c, "hello "+c.ID+" "+c.Remote.Addr().String()+"\r\n")
	for {
		if ctx.Err() != nil {
			io.WriteString(c, "bye\r\n")
			return nil
		}
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		line = strings.TrimSpace(line)
		if line == "SLOW" {
			time.Sleep(500 * time.Millisecond)
		}
		if line == "TRUST" {
			c.Trust()
		}
		io.WriteString(c, "ok "+line+"\r\n")
	}
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v (got %q)", err, line)
	}
	return strings.TrimRight(line, "\r\n")
}

func TestListenServesAndLogs(t *testing.T) {
	addr, logs, stop := listen(t, Options{}, lineHandler)
	c, r := dial(t, addr)
	hello := readLine(t, r)
	if !strings.HasPrefix(hello, "hello ") || !strings.HasSuffix(hello, " 127.0.0.1") {
		t.Fatalf("greeting %q", hello)
	}
	cid := strings.Fields(hello)[1]
	io.WriteString(c, "one\r\n")
	if got := readLine(t, r); got != "ok one" {
		t.Fatalf("got %q", got)
	}
	c.Close()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"test: info: connect cid=" + cid + " remote=127.0.0.1:", "test: info: disconnect cid=" + cid + " remote=127.0.0.1:"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if !regexp.MustCompile(`disconnect cid=\S+ remote=\S+ tls=false duration=\S+`).MatchString(logs.String()) {
		t.Errorf("disconnect line without duration:\n%s", logs)
	}
}

func TestPerAddressLimit(t *testing.T) {
	busy := func(c net.Conn) { io.WriteString(c, "421 too many\r\n") }
	addr, logs, _ := listen(t, Options{MaxPerIP: 2, Busy: busy}, lineHandler)
	var held []net.Conn
	for range 2 {
		c, r := dial(t, addr)
		if got := readLine(t, r); !strings.HasPrefix(got, "hello ") {
			t.Fatalf("greeting %q", got)
		}
		held = append(held, c)
	}
	_, r := dial(t, addr)
	if got := readLine(t, r); got != "421 too many" {
		t.Fatalf("third connection got %q, want the busy line", got)
	}
	if _, err := r.ReadString('\n'); !errors.Is(err, io.EOF) {
		t.Fatalf("after the busy line: %v, want EOF", err)
	}
	if !strings.Contains(logs.String(), "reason=\"2 connections from this address\"") {
		t.Errorf("no refusal logged:\n%s", logs)
	}
	// One leaves; a new one is let in.
	held[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, r := dial(t, addr)
		got := readLine(t, r)
		if strings.HasPrefix(got, "hello ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused after a connection closed: %q", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTotalLimit: at MaxConns, a connection whose client is trusted
// (authenticated) keeps its place and a new client is refused Busy...
func TestTotalLimit(t *testing.T) {
	busy := func(c net.Conn) { io.WriteString(c, "busy\r\n") }
	addr, _, _ := listen(t, Options{MaxConns: 1, MaxPerIP: 5, Busy: busy}, lineHandler)
	c, r := dial(t, addr)
	readLine(t, r)
	io.WriteString(c, "TRUST\r\n")
	readLine(t, r)
	_, r2 := dial(t, addr)
	if got := readLine(t, r2); got != "busy" {
		t.Fatalf("second connection got %q", got)
	}
}

// TestTotalLimitEvicts: ...while one not trusted is made to go (its read
// times out at once), the oldest first, and the new client is served.
func TestTotalLimitEvicts(t *testing.T) {
	busy := func(c net.Conn) { io.WriteString(c, "busy\r\n") }
	addr, logs, _ := listen(t, Options{MaxConns: 2, MaxPerIP: 5, Busy: busy}, lineHandler)
	_, old := dial(t, addr)
	readLine(t, old)
	time.Sleep(10 * time.Millisecond)
	_, younger := dial(t, addr)
	readLine(t, younger)
	_, r := dial(t, addr)
	if got := readLine(t, r); !strings.HasPrefix(got, "hello ") {
		t.Fatalf("new connection at the limit got %q", got)
	}
	if _, err := old.ReadString('\n'); !errors.Is(err, io.EOF) {
		t.Fatalf("the oldest idle connection: %v, want EOF", err)
	}
	if !strings.Contains(logs.String(), "evicted") {
		t.Errorf("no eviction logged:\n%s", logs)
	}
}

func TestShutdownFinishesCommand(t *testing.T) {
	addr, _, stop := listen(t, Options{DrainIdle: 300 * time.Millisecond}, lineHandler)
	busy, br := dial(t, addr)
	readLine(t, br)
	_, ir := dial(t, addr) // idle between commands
	readLine(t, ir)
	io.WriteString(busy, "SLOW\r\n")
	time.Sleep(100 * time.Millisecond) // the command is running
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("stopping took %v", took)
	}
	if got := readLine(t, br); got != "ok SLOW" {
		t.Fatalf("the running command's answer: %q", got)
	}
	if got := readLine(t, br); got != "bye" {
		t.Fatalf("after the command: %q, want bye", got)
	}
	// The idle client's read was cut after DrainIdle: closed without a
	// word (the handler's read failed).
	if _, err := ir.ReadString('\n'); !errors.Is(err, io.EOF) {
		t.Fatalf("idle client: %v, want EOF", err)
	}
	// Nothing listens any more.
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("still accepting after stop")
	}
}

func TestGraceOver(t *testing.T) {
	// A handler that ignores ctx and keeps reading from a client that
	// keeps sending: only closing the socket after the grace ends it.
	addr, logs, stop := listen(t, Options{Grace: 300 * time.Millisecond, DrainIdle: time.Minute}, func(ctx context.Context, c *Conn) error {
		_, err := io.Copy(io.Discard, c)
		return err
	})
	c, _ := dial(t, addr)
	go func() {
		for {
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 300*time.Millisecond || took > 3*time.Second {
		t.Fatalf("stop took %v, want about the 300ms grace", took)
	}
	if !strings.Contains(logs.String(), "grace period over") {
		t.Errorf("no grace line:\n%s", logs)
	}
}

// writeCert writes a self-signed certificate with serial into dir.
func writeCert(t *testing.T, dir string, serial int64) { testcert.Write(t, dir, serial) }

func tlsHandler(cfg *tls.Config) Handler {
	return func(ctx context.Context, c *Conn) error {
		r := bufio.NewReader(c)
		io.WriteString(c, "ready\r\n")
		if line, _ := r.ReadString('\n'); line != "STARTTLS\r\n" {
			return errors.New("no STARTTLS")
		}
		io.WriteString(c, "go ahead\r\n")
		if err := c.StartTLS(cfg); err != nil {
			return err
		}
		st, ok := c.TLSState()
		if !ok || !c.IsTLS() || st.Version < tls.VersionTLS12 {
			return errors.New("no TLS state after StartTLS")
		}
		return lineHandler(ctx, c)
	}
}

func TestStartTLS(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir, 7)
	cert, err := tlsconf.LoadDir(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, logs, stop := listen(t, Options{}, tlsHandler(cert.Config()))
	c, r := dial(t, addr)
	readLine(t, r)
	io.WriteString(c, "STARTTLS\r\n")
	readLine(t, r)
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	tr := bufio.NewReader(tc)
	if got := readLine(t, tr); !strings.HasPrefix(got, "hello ") {
		t.Fatalf("through TLS: %q", got)
	}
	if s := tc.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); s != 7 {
		t.Fatalf("serial %d", s)
	}
	io.WriteString(tc, "secret\r\n")
	if got := readLine(t, tr); got != "ok secret" {
		t.Fatalf("got %q", got)
	}
	tc.Close()
	stop()
	if !strings.Contains(logs.String(), "tls=true") {
		t.Errorf("disconnect line without tls=true:\n%s", logs)
	}

	// TLS 1.1 is refused.
	addr, _, _ = listen(t, Options{}, tlsHandler(cert.Config()))
	c, r = dial(t, addr)
	readLine(t, r)
	io.WriteString(c, "STARTTLS\r\n")
	readLine(t, r)
	old := tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err := old.Handshake(); err == nil {
		t.Fatal("TLS 1.1 handshake succeeded")
	}
}

func TestImplicitTLS(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir, 1)
	cert, err := tlsconf.LoadDir(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, _, _ := listen(t, Options{ImplicitTLS: true, TLS: cert.Config()}, lineHandler)
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if got := readLine(t, bufio.NewReader(c)); !strings.HasPrefix(got, "hello ") {
		t.Fatalf("got %q", got)
	}
	if err := Run(context.Background(), Options{ImplicitTLS: true, Listen: []string{"127.0.0.1:0"}}, lineHandler); err == nil {
		t.Fatal("implicit TLS without a certificate was accepted")
	}
}

func TestSharedCalledOnceInProcess(t *testing.T) {
	var calls atomic.Int32
	addr, _, stop := listen(t, Options{Shared: func() { calls.Add(1) }}, lineHandler)
	for range 3 {
		c, r := dial(t, addr)
		readLine(t, r)
		c.Close()
	}
	stop()
	if n := calls.Load(); n != 1 {
		t.Errorf("Shared called %d times serving in one process, want 1", n)
	}
	// A process per connection: nothing is shared, and Run must not say so.
	calls.Store(0)
	o := Options{Listen: []string{"127.0.0.1:0"}, euid: func() int { return 0 }, Shared: func() { calls.Add(1) },
		Args: []string{"true"}, Exe: "/bin/true", Log: logging.New("test", io.Discard, nil)}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // serves no connection, returns at once
	if err := Run(ctx, o, lineHandler); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("Shared called %d times with Fork", n)
	}
}

func TestRootForcesFork(t *testing.T) {
	// As root with no command line to re-run, Run must refuse rather
	// than serve every connection in one root process.
	o := Options{Listen: []string{"127.0.0.1:0"}, euid: func() int { return 0 }}
	if err := Run(context.Background(), o, lineHandler); err == nil || !strings.Contains(err.Error(), "per process") {
		t.Fatalf("Run as root without Args: %v", err)
	}
}

func TestOneShotListener(t *testing.T) {
	c, _ := testConn(t, Options{})
	ln := Listener(c)
	got, err := ln.Accept()
	if err != nil || got != c {
		t.Fatalf("first Accept: %v, %v", got, err)
	}
	go func() { time.Sleep(50 * time.Millisecond); ln.Close() }()
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Accept: %v", err)
	}
}

func FuzzEnvAddr(f *testing.F) {
	for _, s := range [][2]string{{"192.0.2.7", "25"}, {"::ffff:10.0.0.1", "65535"}, {"fe80::1%eth0", "1"}, {"", ""}, {"1.2.3.4", "99999"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, ip, port string) {
		ap := envAddr(ip, port)
		if !ap.IsValid() {
			return
		}
		if ap.Addr().Is4In6() {
			t.Fatalf("%q: mapped address %s kept", ip, ap)
		}
		if back, err := netip.ParseAddrPort(ap.String()); err != nil || back != ap {
			t.Fatalf("%q %q: %s does not round-trip: %v", ip, port, ap, err)
		}
	})
}

func TestListenUnixSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s")
	// A stale socket from a server that died: bound, never answered.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	logs := &lockedBuffer{}
	o := Options{Log: logging.New("test", logs, nil), Listen: []string{"unix:" + path}, SocketMode: 0o660, MaxPerIP: 1,
		euid: func() int { return 1000 }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o, lineHandler) }()
	var conns []net.Conn
	for i := range 3 {
		var c net.Conn
		for try := 0; ; try++ {
			if c, err = net.Dial("unix", path); err == nil {
				break
			}
			if try > 200 {
				t.Fatalf("dial %s: %v\n%s", path, err, logs)
			}
			time.Sleep(10 * time.Millisecond)
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		// Unix clients have no address, so --max-per-ip does not
		// lump them together.
		if got := readLine(t, r); !strings.HasPrefix(got, "hello ") {
			t.Fatalf("connection %d: greeting %q\n%s", i, got, logs)
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want 0660", st.Mode().Perm())
	}
	// A second server on the same live socket is refused.
	if err := Run(context.Background(), Options{Listen: []string{"unix:" + path}}, lineHandler); sysexit.Code(err) != sysexit.Unavailable {
		t.Errorf("second listener on a live socket: %v", err)
	}
	for _, c := range conns {
		c.Close()
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket left behind after stop: %v", err)
	}
	// A file that is not a socket is never removed.
	os.WriteFile(path, []byte("x"), 0o600)
	if err := Run(context.Background(), Options{Listen: []string{"unix:" + path}}, lineHandler); sysexit.Code(err) != sysexit.Config {
		t.Errorf("listen over a plain file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "x" {
		t.Error("a plain file in the way was removed")
	}
}

// TestListenFDsMalformed: systemd's variables naming this process with a
// LISTEN_FDS that is not a count are a configuration error (78), not a
// reason to serve fd 0 as if no socket had been passed; variables naming
// another process are not ours and are left alone.
func TestListenFDsMalformed(t *testing.T) {
	pid := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		env  []string
		code int
	}{
		{[]string{"LISTEN_PID=" + pid, "LISTEN_FDS=x"}, sysexit.Config},
		{[]string{"LISTEN_PID=" + pid, "LISTEN_FDS=0"}, sysexit.Config},
		{[]string{"LISTEN_PID=" + pid, "LISTEN_FDS=100000"}, sysexit.Config},
		{[]string{"LISTEN_PID=1", "LISTEN_FDS=x"}, sysexit.OK},
		{[]string{"LISTEN_FDS=1"}, sysexit.OK},
	} {
		o := Options{Env: tc.env}
		lns, fd, err := listenFDs(&o)
		if code := sysexit.Code(err); err != nil && code != tc.code || err == nil && tc.code != sysexit.OK || lns != nil || fd != -1 {
			t.Errorf("%v: %v, %d, %v (status %d); want status %d and nothing taken", tc.env, lns, fd, err, sysexit.Code(err), tc.code)
		}
	}
}
