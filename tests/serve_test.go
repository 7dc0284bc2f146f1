package tests

// End-to-end tests of internal/serve under each way a server is started:
// tcpserver, a pipe pair, --listen (a process per connection, as root),
// and systemd's LISTEN_FDS. The protocol is echod, a line echo server kept
// under internal/serve/testdata: it is not a shipped program.

import (
	"bufio"
	"crypto/tls"
	"errors"
	"github.com/tern-mail/tern/internal/testcert"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var echodOnce struct {
	sync.Once
	err error
}

// needEchod builds echod into the programs' directory, once.
func needEchod(t *testing.T) {
	t.Helper()
	echodOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			echodOnce.err = err
			return
		}
		cmd := exec.Command("go", "build", "-o", Bin("echod"), "./internal/serve/testdata/echod")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			echodOnce.err = &buildError{err, string(out)}
		}
	})
	if echodOnce.err != nil {
		t.Fatal(echodOnce.err)
	}
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return "build echod: " + e.err.Error() + "\n" + e.out }

// line is one client connection to echod.
type line struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialEcho(t *testing.T, addr string) *line {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &line{t: t, c: c, r: bufio.NewReader(c)}
}

func (l *line) read() string {
	l.t.Helper()
	s, err := l.r.ReadString('\n')
	if err != nil {
		l.t.Fatalf("read: %v (got %q)", err, s)
	}
	return strings.TrimRight(s, "\r\n")
}

// cmd sends one line and returns the answer.
func (l *line) cmd(s string) string {
	l.t.Helper()
	if _, err := io.WriteString(l.c, s+"\r\n"); err != nil {
		l.t.Fatal(err)
	}
	return l.read()
}

// expectClosed checks that the server hangs up.
func (l *line) expectClosed() {
	l.t.Helper()
	s, err := l.r.ReadString('\n')
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		l.t.Fatalf("still open: got %q, %v", s, err)
	}
}

var greetingRE = regexp.MustCompile(`^\+OK echod cid=([a-z2-7]{16}) remote=(\S+) tls=(true|false)$`)

// greeting reads echod's first line and returns the cid and remote it
// names.
func (l *line) greeting() (cid, remote string) {
	l.t.Helper()
	g := l.read()
	m := greetingRE.FindStringSubmatch(g)
	if m == nil {
		l.t.Fatalf("greeting %q", g)
	}
	return m[1], m[2]
}

// startListen starts echod --listen 127.0.0.1:0 plus args and returns the
// process and the address it reported.
func startListen(t *testing.T, r *Root, args ...string) (*Proc, string) {
	t.Helper()
	needEchod(t)
	p := r.Start(nil, nil, "echod", append([]string{"--listen", "127.0.0.1:0"}, args...)...)
	re := regexp.MustCompile(`echod: info: listening addr=(\S+)`)
	var addr string
	Eventually(t, 10*time.Second, "echod reports its address", func() bool {
		if m := re.FindStringSubmatch(p.Stderr()); m != nil {
			addr = m[1]
			return true
		}
		return false
	})
	return p, addr
}

func TestServePipes(t *testing.T) {
	needEchod(t)
	r := NewRoot(t)
	res := r.Run("hello\r\nQUIT\r\n", []string{"TCPREMOTEIP=192.0.2.7", "TCPREMOTEPORT=4242", "TCPLOCALIP=192.0.2.1", "TCPLOCALPORT=110"}, "echod")
	if res.Code != 0 {
		t.Fatal(res)
	}
	lines := strings.Split(strings.TrimSpace(res.Stdout), "\r\n")
	m := greetingRE.FindStringSubmatch(lines[0])
	if m == nil || m[2] != "192.0.2.7:4242" || len(lines) != 3 || lines[1] != "+OK hello" || lines[2] != "+OK bye" {
		t.Fatalf("conversation:\n%s", res)
	}
	for _, want := range []string{
		"echod: info: connect cid=" + m[1] + " remote=192.0.2.7:4242 local=192.0.2.1:110\n",
		"echod: info: disconnect cid=" + m[1] + " remote=192.0.2.7:4242 tls=false duration=",
	} {
		if !strings.Contains(res.Stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, res.Stderr)
		}
	}
}

// A client on a pipe that stops sending is cut after the idle timeout:
// the pipes get deadlines too (non-blocking descriptors in the poller).
func TestServePipesIdle(t *testing.T) {
	needEchod(t)
	r := NewRoot(t)
	// An *os.File, so that the child gets the pipe itself (exec would
	// otherwise copy through a goroutine and Wait for it).
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	start := time.Now()
	p := r.Start(pr, nil, "echod", "--idle-timeout", "300ms")
	pr.Close()
	pw.Write([]byte("one\r\n"))
	res, ok := p.Wait(10 * time.Second)
	if !ok {
		t.Fatalf("still running 10s after the client went silent:\n%s", res)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("ended after %v, before the idle timeout", took)
	}
	if res.Code != 0 || !strings.Contains(res.Stderr, `err="client silent for 300ms"`) || !strings.Contains(res.Stdout, "+OK one\r\n") {
		t.Fatal(res)
	}
}

func TestServeTcpserver(t *testing.T) {
	Need(t, "tcpserver")
	needEchod(t)
	r := NewRoot(t)
	p, addr := r.StartTcpserver([]string{"-v", "-R", "-H", "-c", "2"}, Bin("echod"))
	l := dialEcho(t, addr)
	cid, remote := l.greeting()
	if remote != l.c.LocalAddr().String() {
		t.Fatalf("echod saw remote %s, the client is %s", remote, l.c.LocalAddr())
	}
	if got := l.cmd("over tcp"); got != "+OK over tcp" {
		t.Fatalf("got %q", got)
	}
	if got := l.cmd("QUIT"); got != "+OK bye" {
		t.Fatalf("got %q", got)
	}
	l.expectClosed()
	Eventually(t, 5*time.Second, "echod logs the end", func() bool {
		return strings.Contains(p.Stderr(), "echod: info: disconnect cid="+cid+" remote="+remote)
	})
	p.Signal(syscall.SIGTERM)
}

func TestServeListen(t *testing.T) {
	r := NewRoot(t)
	p, addr := startListen(t, r, "--max-per-ip", "2", "--drain-idle", "500ms")
	a := dialEcho(t, addr)
	cidA, remote := a.greeting()
	if remote != a.c.LocalAddr().String() {
		t.Fatalf("remote %s, client %s", remote, a.c.LocalAddr())
	}
	b := dialEcho(t, addr)
	cidB, _ := b.greeting()
	if cidA == cidB {
		t.Fatalf("two connections share cid %s", cidA)
	}
	// A third from the same address is refused with the protocol's line.
	c := dialEcho(t, addr)
	if got := c.read(); got != "-ERR too many connections" {
		t.Fatalf("third connection: %q", got)
	}
	c.expectClosed()
	Eventually(t, 5*time.Second, "the refusal is logged", func() bool {
		return strings.Contains(p.Stderr(), "echod: info: refused cid=")
	})
	// SIGTERM during a command: it finishes, then the server says goodbye;
	// the silent client is let go; the program ends with status 0.
	if _, err := io.WriteString(a.c, "SLEEP 1000\r\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := a.read(); got != "+OK slept" {
		t.Fatalf("the running command's answer: %q", got)
	}
	if got := a.read(); got != "-ERR shutting down" {
		t.Fatalf("after the command: %q", got)
	}
	a.expectClosed()
	b.expectClosed()
	res, ok := p.Wait(10 * time.Second)
	if !ok || res.Code != 0 {
		t.Fatalf("after SIGTERM (ended: %v):\n%s", ok, res)
	}
	for _, cid := range []string{cidA, cidB} {
		if !strings.Contains(res.Stderr, "disconnect cid="+cid) {
			t.Errorf("no disconnect line for %s:\n%s", cid, res.Stderr)
		}
	}
}

// systemd passes listening sockets from fd 3 with LISTEN_FDS and
// LISTEN_PID, the pid of the process meant to use them. Go's exec cannot
// set a variable to the child's own pid, so a shell does it: $$ is its
// pid, and exec keeps it.
func listenFDsCmd(r *Root, f *os.File, prog string, args ...string) *exec.Cmd {
	cmd := exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`, Bin(prog)}, args...)...)
	cmd.Env = r.Env()
	cmd.ExtraFiles = []*os.File{f}
	return cmd
}

// startListenFDs starts prog with a listening socket on a free loopback
// port as systemd passes it (Accept=no), and returns its address.
func startListenFDs(t *testing.T, r *Root, prog string, args ...string) (*Proc, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // the program holds its own copy
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return StartCmd(t, listenFDsCmd(r, f, prog, args...), nil), ln.Addr().String()
}

func TestServeListenFDs(t *testing.T) {
	needEchod(t)
	r := NewRoot(t)
	p, addr := startListenFDs(t, r, "echod", "--drain-idle", "200ms")
	for i := range 2 {
		l := dialEcho(t, addr)
		l.greeting()
		if got := l.cmd("via systemd " + strconv.Itoa(i)); got != "+OK via systemd "+strconv.Itoa(i) {
			t.Fatalf("got %q", got)
		}
	}
	if !strings.Contains(p.Stderr(), "listening addr="+addr) {
		t.Errorf("no listening line for %s:\n%s", addr, p.Stderr())
	}
	p.Signal(syscall.SIGTERM)
	if res, ok := p.Wait(10 * time.Second); !ok || res.Code != 0 {
		t.Fatalf("after SIGTERM:\n%s", res)
	}
}

// systemd Accept=yes without StandardInput=socket: the connection itself is
// fd 3, LISTEN_FDS=1.
func TestServeListenFDsAccepted(t *testing.T) {
	needEchod(t)
	r := NewRoot(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l := dialEcho(t, ln.Addr().String())
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f, err := sc.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	sc.Close()
	p := StartCmd(t, listenFDsCmd(r, f, "echod", "--drain-idle", "200ms"), nil)
	f.Close()
	_, remote := l.greeting()
	if remote != l.c.LocalAddr().String() {
		t.Fatalf("remote %s, client %s", remote, l.c.LocalAddr())
	}
	if got := l.cmd("QUIT"); got != "+OK bye" {
		t.Fatalf("got %q", got)
	}
	if res, ok := p.Wait(10 * time.Second); !ok || res.Code != 0 {
		t.Fatalf("(ended: %v)\n%s", ok, res)
	}
}

// writeTestCert writes a self-signed certificate with serial as the
// control directory's tls.crt and tls.key.
func writeTestCert(t *testing.T, dir string, serial int64) { testcert.Write(t, dir, serial) }

// startTLS runs STARTTLS on a fresh connection and returns the TLS
// client, or the handshake error.
func startTLS(t *testing.T, addr string, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	l := dialEcho(t, addr)
	l.greeting()
	if got := l.cmd("STARTTLS"); got != "+OK begin TLS" {
		t.Fatalf("STARTTLS: %q", got)
	}
	tc := tls.Client(l.c, cfg)
	return tc, tc.Handshake()
}

func TestServeStartTLSReload(t *testing.T) {
	r := NewRoot(t)
	writeTestCert(t, r.Conf, 1)
	_, addr := startListen(t, r, "--conf", r.Conf)
	cfg := &tls.Config{InsecureSkipVerify: true}
	tc, err := startTLS(t, addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s := tc.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); s != 1 {
		t.Fatalf("serial %d, want 1", s)
	}
	tl := &line{t: t, c: tc, r: bufio.NewReader(tc)}
	if got := tl.cmd("TLS"); !strings.HasPrefix(got, "+OK tls=true version=030") {
		t.Fatalf("through TLS: %q", got)
	}
	// Renewed on disk: the next handshake gets the new certificate, with
	// no restart.
	writeTestCert(t, r.Conf, 2)
	tc2, err := startTLS(t, addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s := tc2.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); s != 2 {
		t.Fatalf("after renewal: serial %d, want 2", s)
	}
	// TLS 1.1 is refused.
	if _, err := startTLS(t, addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}); err == nil {
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
}

func TestServeImplicitTLS(t *testing.T) {
	r := NewRoot(t)
	writeTestCert(t, r.Conf, 5)
	_, addr := startListen(t, r, "--conf", r.Conf, "--tls")
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	l := &line{t: t, c: c, r: bufio.NewReader(c)}
	if _, _ = l.greeting(); !strings.Contains(l.cmd("TLS"), "tls=true") {
		t.Fatal("not TLS")
	}
	// Without a certificate --tls is a configuration error (78).
	res := NewRoot(t).Run("", nil, "echod", "--tls", "--listen", "127.0.0.1:0")
	if res.Code != 78 || !strings.Contains(res.Stderr, "echod: fatal: implicit TLS needs a certificate") {
		t.Fatal(res)
	}
}

// As root, the listener serves each connection in its own process, which
// becomes the user at login and cannot become root.
func TestServePrivdrop(t *testing.T) {
	NeedRoot(t)
	r := NewRoot(t)
	_, addr := startListen(t, r)
	l := dialEcho(t, addr)
	l.greeting()
	if got := l.cmd("UID"); got != "+OK uid=0 gid=0" {
		t.Fatalf("before login: %q", got)
	}
	if got := l.cmd("LOGIN nobody"); got != "+OK" {
		t.Fatalf("LOGIN nobody: %q", got)
	}
	if got := l.cmd("UID"); got != "+OK uid=65534 gid=65534" {
		t.Fatalf("after login: %q", got)
	}
	// Another connection is another process: still root until it logs in.
	l2 := dialEcho(t, addr)
	l2.greeting()
	if got := l2.cmd("UID"); got != "+OK uid=0 gid=0" {
		t.Fatalf("second connection: %q", got)
	}
	// Dropping to root is refused and the connection closed (fail closed).
	if got := l2.cmd("LOGIN root"); !strings.HasPrefix(got, "-ERR") || !strings.Contains(got, "refusing to run as root") {
		t.Fatalf("LOGIN root: %q", got)
	}
	l2.expectClosed()

	// --user drops the whole server at start, after binding.
	_, addr = startListen(t, NewRoot(t), "--user", "nobody")
	l3 := dialEcho(t, addr)
	l3.greeting()
	if got := l3.cmd("UID"); got != "+OK uid=65534 gid=65534" {
		t.Fatalf("with --user nobody: %q", got)
	}
}
