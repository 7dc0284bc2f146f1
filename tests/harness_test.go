// Package tests holds tern's end-to-end tests: the programs are built once
// per `go test` run and driven through real pipes and sockets, each test in
// a temporary root of its own (control directory, queue, home directories).
package tests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binDir holds the programs built for this run.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tern-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "tests:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Tests run programs as other users (nobody) too.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "tests:", err)
		return 1
	}
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tests:", err)
		return 1
	}
	// Built as the Makefile builds them (static, no cli docs).
	build := exec.Command("go", "build", "-tags", "urfave_cli_no_docs", "-o", dir+string(filepath.Separator), "./cmd/...")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "tests: building the programs:", err)
		return 1
	}
	binDir = dir
	return m.Run()
}

func moduleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot find the source directory")
	}
	return filepath.Dir(filepath.Dir(file)), nil
}

// Bin returns the path of a built program.
func Bin(name string) string { return filepath.Join(binDir, name) }

// Root is one test's private world.
type Root struct {
	T     testing.TB
	Dir   string // the root itself
	Conf  string // control directory (TERN_CONF)
	Queue string // queue directory (TERN_QUEUE)
	Home  string // parent of the home directories
}

// NewRoot makes a fresh root under the test's temporary directory.
func NewRoot(t testing.TB) *Root {
	t.Helper()
	dir := t.TempDir()
	r := &Root{T: t, Dir: dir, Conf: filepath.Join(dir, "etc", "tern"), Queue: filepath.Join(dir, "spool"), Home: filepath.Join(dir, "home")}
	for _, d := range []string{r.Conf, r.Queue, r.Home} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// OpenUp makes the root reachable by other users (the test's temporary
// directories are 0700), for programs that drop to an account's uid.
func (r *Root) OpenUp() {
	r.T.Helper()
	for _, d := range []string{filepath.Dir(r.Dir), r.Dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			r.T.Fatal(err)
		}
	}
}

// Path joins rel to the root.
func (r *Root) Path(rel ...string) string { return filepath.Join(append([]string{r.Dir}, rel...)...) }

// WriteFile writes a file below the root, making its directories.
func (r *Root) WriteFile(rel, content string) string {
	r.T.Helper()
	p := r.Path(rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		r.T.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		r.T.Fatal(err)
	}
	return p
}

// Env is the environment programs run with: a clean one pointing at this
// root, plus extra "K=V" entries (which override).
func (r *Root) Env(extra ...string) []string {
	env := []string{
		"PATH=" + binDir + ":/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
		"TERN_CONF=" + r.Conf,
		"TERN_QUEUE=" + r.Queue,
		"HOME=" + filepath.Join(r.Home, "nobody"),
		"LANG=C.UTF-8",
		// No test asks the real DNS: a remote recipient is deferred
		// (nothing answers on this port) unless the test gives its own
		// server (internal/testdns) with --dns.
		"TERN_DNS=127.0.0.1:9",
	}
	return overrideEnv(env, extra)
}

func overrideEnv(env, extra []string) []string {
	out := make([]string, 0, len(env)+len(extra))
	seen := map[string]bool{}
	for i := len(extra) - 1; i >= 0; i-- {
		k, _, _ := strings.Cut(extra[i], "=")
		if !seen[k] {
			seen[k] = true
			out = append(out, extra[i])
		}
	}
	for _, e := range env {
		k, _, _ := strings.Cut(e, "=")
		if !seen[k] {
			out = append(out, e)
		}
	}
	return out
}

// Result is what a finished program left.
type Result struct {
	Code           int
	Stdout, Stderr string
}

func (res Result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", res.Code, res.Stdout, res.Stderr)
}

// Cmd prepares a program with this root's environment; extra env entries
// may be set on the returned command's Env before it starts.
func (r *Root) Cmd(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(Bin(name), args...)
	cmd.Env = r.Env()
	cmd.Dir = r.Dir
	return cmd
}

// Run runs a program to the end with stdin and returns its result; a
// program that runs longer than a minute is killed and fails the test.
func (r *Root) Run(stdin string, env []string, name string, args ...string) Result {
	r.T.Helper()
	cmd := r.Cmd(name, args...)
	cmd.Env = overrideEnv(cmd.Env, env)
	return RunCmd(r.T, cmd, stdin)
}

// RunCmd runs a prepared command with stdin and a one-minute limit.
func RunCmd(t testing.TB, cmd *exec.Cmd, stdin string) Result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%s %v: still running after a minute; killed", filepath.Base(cmd.Path), cmd.Args[1:])
	}
	res := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		res.Code = exit.ExitCode()
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.Code = 128 + int(ws.Signal())
		}
	default:
		t.Fatalf("run %s: %v", cmd.Path, err)
	}
	return res
}

// Proc is a program running in the background.
type Proc struct {
	Cmd    *exec.Cmd
	stdout lockedBuffer
	stderr lockedBuffer
	done   chan struct{}
	err    error
}

// Start starts a program in the background; it is killed when the test
// ends if it is still running.
func (r *Root) Start(stdin io.Reader, env []string, name string, args ...string) *Proc {
	r.T.Helper()
	cmd := r.Cmd(name, args...)
	cmd.Env = overrideEnv(cmd.Env, env)
	return StartCmd(r.T, cmd, stdin)
}

// StartCmd starts a prepared command in the background; a nil stdin
// keeps what the command has (a StdinPipe, say).
func StartCmd(t testing.TB, cmd *exec.Cmd, stdin io.Reader) *Proc {
	t.Helper()
	p := &Proc{Cmd: cmd, done: make(chan struct{})}
	if stdin != nil {
		cmd.Stdin = stdin
	}
	if cmd.Stdout == nil {
		cmd.Stdout = &p.stdout
	}
	if cmd.Stderr == nil {
		cmd.Stderr = &p.stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.Cmd.Process.Signal(sig) }

// Kill sends SIGKILL.
func (p *Proc) Kill() { _ = p.Cmd.Process.Kill() }

// Wait waits up to d for the process to end and returns its result; ok is
// false if it was still running.
func (p *Proc) Wait(d time.Duration) (res Result, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	select {
	case <-p.done:
	case <-ctx.Done():
		return Result{Code: -1, Stdout: p.stdout.String(), Stderr: p.stderr.String()}, false
	}
	res = Result{Stdout: p.stdout.String(), Stderr: p.stderr.String()}
	var exit *exec.ExitError
	if errors.As(p.err, &exit) {
		res.Code = exit.ExitCode()
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.Code = 128 + int(ws.Signal())
		}
	}
	return res, true
}

// Stderr returns what the process has written to stderr so far.
func (p *Proc) Stderr() string { return p.stderr.String() }

// Stdout returns what the process has written to stdout so far.
func (p *Proc) Stdout() string { return p.stdout.String() }

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

// debianPackage names the Debian package that brings each program a test
// drives, so that a skip says what to install. .ci/run installs them all.
var debianPackage = map[string]string{
	"fetchmail":   "fetchmail",
	"getmail":     "getmail6",
	"go":          "golang-go, or Go from go.dev at go.mod's version",
	"make":        "make",
	"man":         "man-db",
	"mbsync":      "isync",
	"munpack":     "mpack",
	"offlineimap": "offlineimap3",
	"python3":     "python3",
	"setpriv":     "util-linux",
	"swaks":       "swaks",
	"tcpserver":   "ucspi-tcp",
	"time":        "time",
}

// Need skips the test, loudly, when a program it drives is not installed,
// naming the Debian package that brings it.
func Need(t testing.TB, progs ...string) {
	t.Helper()
	for _, p := range progs {
		pkg, ok := debianPackage[p]
		if !ok {
			t.Fatalf("Need(%q): add the program's Debian package to debianPackage (and to .ci/run)", p)
		}
		if _, err := exec.LookPath(p); err != nil {
			skipLoudly(t, "%s is not installed (Debian package %s; .ci/run installs it)", p, pkg)
		}
	}
}

// NeedRoot skips a test that must run as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipLoudly(t, "this test needs root (it mounts a file system or changes users)")
	}
}

// skipLoudly skips a test with its reason; `make test` lists every skip
// and its reason at the end.
func skipLoudly(t testing.TB, format string, args ...any) {
	t.Helper()
	t.Skip("SKIP: " + fmt.Sprintf(format, args...))
}

// Eventually polls cond every 20ms for up to d.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartTcpserver runs prog under ucspi-tcp's tcpserver, with tcpserver's
// options opts, on a free loopback port, and returns the process and the
// address once a connection is accepted. tcpserver does not say which
// port it got for port 0, so a free one is chosen first; another program
// may take it in between, hence the retries.
func (r *Root) StartTcpserver(opts []string, prog string, args ...string) (*Proc, string) {
	r.T.Helper()
	Need(r.T, "tcpserver")
	for try := 0; ; try++ {
		port := strconv.Itoa(freePort(r.T))
		argv := append(append(append([]string{}, opts...), "127.0.0.1", port, prog), args...)
		cmd := exec.Command("tcpserver", argv...)
		cmd.Env = r.Env()
		p := StartCmd(r.T, cmd, nil)
		addr := "127.0.0.1:" + port
		var dialErr error
		Eventually(r.T, 10*time.Second, "tcpserver binds or fails", func() bool {
			if _, ended := p.Wait(0); ended {
				return true
			}
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
			}
			dialErr = err
			return err == nil
		})
		if dialErr == nil {
			return p, addr
		}
		if try == 3 {
			r.T.Fatalf("tcpserver never listened: %v\n%s", dialErr, p.Stderr())
		}
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
