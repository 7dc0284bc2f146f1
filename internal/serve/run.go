// Package serve runs a protocol on client connections however the server
// was started: with the connection on fd 0 and 1 (inetd, tcpserver,
// systemd Accept=yes, or two pipes behind a TLS wrapper), with its own
// listeners (--listen, repeatable), or with listening sockets passed by
// systemd (LISTEN_FDS, Accept=no). tern-smtpd, tern-pop3d and tern-imapd
// all start here; man/tern-serve.7 describes it for administrators.
//
// A server started as root must become the account whose mailbox it
// serves, and a process can change its user only once, for all its
// goroutines; so when the listener runs as root, each accepted connection
// is served by a new process of the same program with the socket as fd 0
// and 1 and TCPREMOTEIP and friends set, exactly as under tcpserver. That
// is the recommended way; --fork asks for it when not root too. Otherwise
// connections are served by goroutines of the listening process.
package serve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tern-mail/tern/internal/privdrop"
	"github.com/tern-mail/tern/internal/sysexit"
	"golang.org/x/sys/unix"
)

// Handler serves one connection. ctx is cancelled when the server is told
// to stop (SIGTERM): the handler should finish the command at hand, say
// goodbye in its protocol and return. The connection is closed after it
// returns.
type Handler func(ctx context.Context, c *Conn) error

// Options says how to take connections. The zero value serves the
// connection on fd 0 and 1 with the default limits.
type Options struct {
	// Listen is the addresses to listen on (host:port, or unix:PATH for
	// a socket in the file system); empty means the connection is on fd
	// 0 and 1, unless systemd passed listening sockets (LISTEN_FDS),
	// which are used instead.
	Listen []string
	// SocketMode is the permission bits of the unix sockets Listen
	// makes; zero means 0600 (only the listening user may connect).
	SocketMode os.FileMode
	// ImplicitTLS makes every connection TLS from the first byte (ports
	// 465, 993, 995; RFC 8314 §3). It needs TLS.
	ImplicitTLS bool
	// TLS is the server TLS configuration; handlers offer STARTTLS when
	// it is set.
	TLS *tls.Config
	// User, if set, is the system account to become once the listeners
	// are open (or at once, for a connection on fd 0).
	User string
	// Fork serves each accepted connection in a process of its own. It is
	// always on when the listener runs as root, unless StayRoot is set.
	Fork bool
	// StayRoot says the handler never changes the process's user: it
	// acts for each account on a thread of its own (privdrop.AsUser), so
	// a listener running as root may serve every connection itself.
	StayRoot bool
	// Shared, if set, is called once when this process is about to serve
	// every connection itself (listening, without Fork), as the user it
	// serves as: the moment to set up what many connections share.
	Shared func()
	// MaxConns and MaxPerIP limit concurrent connections in all and from
	// one client address; over the limit a client gets Busy and is
	// closed. Zero means the defaults, 100 and 10.
	MaxConns, MaxPerIP int
	// Idle is how long a read or write waits for the client; Total is the
	// longest a session may last. Zero means the defaults, 10 minutes and
	// 1 hour.
	Idle, Total time.Duration
	// Grace is how long handlers get to finish after ctx is cancelled
	// before their connections are closed under them (30s by default).
	// DrainIdle is how long, once stopping, a read waits for a client
	// (2s by default).
	Grace, DrainIdle time.Duration
	// SessionMemory, when set, is the soft memory limit (Go's
	// runtime/debug.SetMemoryLimit) of a process that serves one
	// connection: the garbage collector then works harder rather than
	// let one session's heap grow to twice what it keeps alive. A
	// GOMEMLIMIT in the environment wins. A listener serving many
	// connections in one process is not limited.
	SessionMemory int64
	// StressIdle is the idle timeout of connections not trusted (see
	// Conn.Trust) while the server is near MaxConns: 10s by default,
	// Postfix's smtpd_timeout under stress.
	StressIdle time.Duration
	// Busy, if set, writes the protocol's one-line refusal to a client
	// over a limit ("421 4.7.0 too many connections").
	Busy func(c net.Conn)
	// Log gets the connection and listener lines; handlers get it with
	// cid= attached as Conn.Log.
	Log *slog.Logger
	// Env is the process environment as os.Environ gives it: it carries
	// TCPREMOTEIP and friends, LISTEN_FDS and LISTEN_PID, and is passed
	// on to per-connection processes.
	Env []string
	// Args is the program's command line (os.Args), re-run for each
	// connection with Fork. Exe is the program; os.Executable by default.
	Args []string
	Exe  string
	// Stderr is the per-connection processes' stderr (os.Stderr by
	// default); they log there themselves.
	Stderr *os.File

	euid func() int // os.Geteuid; replaced by in-package tests
	// stressed says whether the server is near MaxConns: the listener's
	// count, or what a per-connection process was told at its start.
	stressed func() bool
}

// Defaults.
const (
	DefaultMaxConns   = 100
	DefaultMaxPerIP   = 10
	DefaultIdle       = 10 * time.Minute
	DefaultTotal      = time.Hour
	DefaultGrace      = 30 * time.Second
	DefaultDrainIdle  = 2 * time.Second
	DefaultStressIdle = 10 * time.Second
)

// envStress tells a per-connection process that the listener was near
// its limit when it started; envTrustFD names the pipe on which it says
// that its client is trusted.
const (
	envStress  = "TERN_STRESS"
	envTrustFD = "TERN_TRUST_FD"
)

// envAccepted marks a per-connection process and carries its cid.
const envAccepted = "TERN_ACCEPTED"

func (o *Options) setDefaults() {
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.MaxPerIP <= 0 {
		o.MaxPerIP = DefaultMaxPerIP
	}
	if o.Idle <= 0 {
		o.Idle = DefaultIdle
	}
	if o.Total <= 0 {
		o.Total = DefaultTotal
	}
	if o.Grace <= 0 {
		o.Grace = DefaultGrace
	}
	if o.DrainIdle <= 0 {
		o.DrainIdle = DefaultDrainIdle
	}
	if o.StressIdle <= 0 {
		o.StressIdle = DefaultStressIdle
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.euid == nil {
		o.euid = os.Geteuid
	}
}

func (o *Options) getenv(k string) string {
	for i := len(o.Env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(o.Env[i], k+"="); ok {
			return v
		}
	}
	return ""
}

// Run takes connections as opts says and serves each with h until ctx is
// cancelled (listeners) or the one connection ends (fd 0 and 1). Errors of
// a single connection are logged, not returned; Run fails only when it
// cannot take connections at all.
func Run(ctx context.Context, opts Options, h Handler) error {
	o := &opts
	o.setDefaults()
	if o.ImplicitTLS && o.TLS == nil {
		return sysexit.New(sysexit.Config, "implicit TLS needs a certificate (tls.crt and tls.key)")
	}
	src := &ids{pid: uint32(os.Getpid())}
	if cid := o.getenv(envAccepted); cid != "" {
		// A per-connection process started by our own listener.
		return serveFD(ctx, o, h, 0, 1, cid)
	}
	lns, connFD, err := listenFDs(o)
	if err != nil {
		return err
	}
	if connFD >= 0 {
		// systemd Accept=yes without StandardInput=socket: the
		// connection is fd 3.
		return serveFD(ctx, o, h, connFD, connFD, src.next(time.Now()))
	}
	if len(lns) == 0 {
		for _, addr := range o.Listen {
			ln, err := openListener(addr, o.SocketMode)
			if err != nil {
				closeAll(lns)
				return err
			}
			lns = append(lns, ln)
		}
	} else if len(o.Listen) > 0 {
		o.Log.Warn("using the sockets systemd passed; ignoring --listen", "listen", strings.Join(o.Listen, ","))
	}
	if len(lns) == 0 {
		return serveFD(ctx, o, h, 0, 1, src.next(time.Now()))
	}
	// Listeners are open (a privileged port needs root), now give root up.
	if o.User != "" {
		if err := privdrop.ToUser(o.User); err != nil {
			closeAll(lns)
			return sysexit.Wrap(sysexit.NoPerm, err)
		}
	}
	if o.euid() == 0 && !o.StayRoot {
		o.Fork = true
	}
	if o.Fork && len(o.Args) == 0 {
		closeAll(lns)
		return sysexit.New(sysexit.Software, "serving a connection per process needs the program's command line (Options.Args)")
	}
	if o.Fork && o.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			closeAll(lns)
			return sysexit.Wrap(sysexit.OSErr, fmt.Errorf("find this program to run per connection: %w", err))
		}
		o.Exe = exe
	}
	if !o.Fork && o.Shared != nil {
		o.Shared()
	}
	s := &server{o: o, h: h, ids: src, perIP: map[netip.Addr]int{}, conns: map[*Conn]bool{}, procs: map[*os.Process]*child{}, evicted: map[any]bool{}}
	o.stressed = s.stressed
	return s.serve(ctx, lns)
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}

// serveFD serves the one connection on rfd and wfd.
func serveFD(ctx context.Context, o *Options, h Handler, rfd, wfd int, cid string) error {
	if o.SessionMemory > 0 && o.getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(o.SessionMemory)
	}
	if o.User != "" {
		if err := privdrop.ToUser(o.User); err != nil {
			return sysexit.Wrap(sysexit.NoPerm, err)
		}
	}
	raw, err := fdConn(rfd, wfd)
	if err != nil {
		return sysexit.Wrap(sysexit.OSErr, fmt.Errorf("take the connection: %w", err))
	}
	remote, local := addrs(raw, o.getenv)
	if o.getenv(envStress) == "1" {
		o.stressed = func() bool { return true }
	}
	c := newConn(raw, cid, remote, local, o)
	if fd, err := strconv.Atoi(o.getenv(envTrustFD)); err == nil && fd > 2 {
		c.trustPipe = os.NewFile(uintptr(fd), "trust")
		unix.CloseOnExec(fd)
	}
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		// Stopping: let the handler finish, then cut the connection.
		c.t.drain()
		select {
		case <-done:
		case <-time.After(o.Grace):
			raw.Close()
		}
	})
	defer stop()
	serveConn(ctx, o, h, c)
	close(done)
	return nil
}

// serveConn runs the handler on c, with the connection's log lines.
func serveConn(ctx context.Context, o *Options, h Handler, c *Conn) {
	attrs := []any{"remote", addrString(c.Remote)}
	if c.Local.IsValid() {
		attrs = append(attrs, "local", c.Local.String())
	}
	c.Log.Info("connect", attrs...)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var err error
	if o.ImplicitTLS {
		err = c.StartTLS(o.TLS)
	}
	if err == nil {
		err = runHandler(ctx, h, c)
	}
	cerr := c.Close()
	if err == nil && cerr != nil && !errors.Is(cerr, net.ErrClosed) {
		err = cerr
	}
	attrs = []any{"remote", addrString(c.Remote), "tls", c.IsTLS(), "duration", time.Since(c.Start).Round(time.Millisecond)}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	c.Log.Info("disconnect", attrs...)
}

// addrString is the address for a log line; "unknown" when neither the
// socket nor the environment told it.
func addrString(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return "unknown"
	}
	return ap.String()
}

// runHandler turns a handler's panic into an error: one bad conversation
// must not end a listener's other connections.
func runHandler(ctx context.Context, h Handler, c *Conn) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panic: %v", p)
		}
	}()
	return h(ctx, c)
}

// listenFDs returns the sockets systemd passed (sd_listen_fds(3)): the
// listening ones, or the one connection of an Accept=yes service (then
// connFD is its descriptor, else -1). LISTEN_PID must name this process,
// as the protocol requires, so that descriptors meant for a parent are not
// taken by a child that inherited the variables.
//
// Written here rather than with go-systemd's activation.Files (v22.7.0),
// for two reasons: it reads os.Getenv, where Options.Env is the
// environment a test or a caller gives; and for a LISTEN_FDS that is not a
// count it returns no files and no error, so a server started with a bad
// unit would take fd 0 as its connection instead of saying what is wrong.
// Telling a listener from an Accept=yes connection (SO_ACCEPTCONN) is ours
// either way.
func listenFDs(o *Options) (lns []net.Listener, connFD int, err error) {
	connFD = -1
	if pid, _ := strconv.Atoi(o.getenv("LISTEN_PID")); pid == 0 || pid != os.Getpid() {
		return nil, -1, nil
	}
	n, err := strconv.Atoi(o.getenv("LISTEN_FDS"))
	if err != nil || n < 1 || n > 1024 {
		return nil, -1, sysexit.New(sysexit.Config, "LISTEN_FDS=%q: not a count of descriptors", o.getenv("LISTEN_FDS"))
	}
	const first = 3 // SD_LISTEN_FDS_START
	for fd := first; fd < first+n; fd++ {
		unix.CloseOnExec(fd)
		acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		if err != nil {
			closeAll(lns)
			return nil, -1, sysexit.Wrap(sysexit.Config, fmt.Errorf("LISTEN_FDS: fd %d: not a socket: %w", fd, err))
		}
		if acc == 0 {
			if n != 1 {
				closeAll(lns)
				return nil, -1, sysexit.New(sysexit.Config, "LISTEN_FDS: fd %d is a connection among %d descriptors", fd, n)
			}
			return nil, fd, nil
		}
		f := os.NewFile(uintptr(fd), "listen-fd"+strconv.Itoa(fd))
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			closeAll(lns)
			return nil, -1, sysexit.Wrap(sysexit.Config, fmt.Errorf("LISTEN_FDS: fd %d: %w", fd, err))
		}
		lns = append(lns, ln)
	}
	return lns, -1, nil
}

// server is the accept side: listeners, limits, and the connections or
// processes serving them.
type server struct {
	o   *Options
	h   Handler
	ids *ids

	mu    sync.Mutex
	total int
	perIP map[netip.Addr]int
	conns map[*Conn]bool         // in-process connections
	procs map[*os.Process]*child // per-connection processes
	wg    sync.WaitGroup
	// evicted counts connections told to go to make room, not yet gone:
	// total may exceed MaxConns by that many.
	evicted map[any]bool
}

// child is a per-connection process as the listener knows it.
type child struct {
	start   time.Time
	trusted atomic.Bool
}

// stressed says whether the server is near its limit: three quarters of
// MaxConns taken. Untrusted connections then wait StressIdle at most.
func (s *server) stressed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stressedLocked()
}

func (s *server) stressedLocked() bool { return s.total*4 >= s.o.MaxConns*3 }

// evictLocked makes room at the limit: it tells the oldest connection
// whose client is not trusted to go (an in-process one has its read cut
// short, a process is sent SIGTERM; either says goodbye in its protocol),
// and reports whether there was one.
func (s *server) evictLocked() bool {
	var victim any
	var oldest time.Time
	for c := range s.conns {
		if !c.t.trusted.Load() && !s.evicted[c] && (victim == nil || c.Start.Before(oldest)) {
			victim, oldest = c, c.Start
		}
	}
	for p, ch := range s.procs {
		if !ch.trusted.Load() && !s.evicted[p] && (victim == nil || ch.start.Before(oldest)) {
			victim, oldest = p, ch.start
		}
	}
	switch v := victim.(type) {
	case *Conn:
		s.evicted[v] = true
		v.Log.Info("evicted", "reason", "connection limit, client not authenticated")
		v.t.evict()
	case *os.Process:
		s.evicted[v] = true
		s.o.Log.Info("evicted", "pid", v.Pid, "reason", "connection limit, client not authenticated")
		_ = v.Signal(syscall.SIGTERM)
	default:
		return false
	}
	return true
}

func (s *server) serve(ctx context.Context, lns []net.Listener) error {
	var accepting sync.WaitGroup
	for _, ln := range lns {
		s.o.Log.Info("listening", "addr", ln.Addr().String(), "fork", s.o.Fork, "tls", s.o.ImplicitTLS)
		accepting.Add(1)
		go func() {
			defer accepting.Done()
			s.accept(ctx, ln)
		}()
	}
	<-ctx.Done()
	closeAll(lns)
	accepting.Wait()
	s.mu.Lock()
	for c := range s.conns {
		c.t.drain()
	}
	for p := range s.procs {
		_ = p.Signal(syscall.SIGTERM)
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(s.o.Grace):
	}
	s.mu.Lock()
	n := len(s.conns) + len(s.procs)
	for c := range s.conns {
		c.t.raw.Close()
	}
	for p := range s.procs {
		_ = p.Kill()
	}
	s.mu.Unlock()
	s.o.Log.Warn("grace period over; connections closed", "grace", s.o.Grace, "connections", n)
	<-done
	return nil
}

func (s *server) accept(ctx context.Context, ln net.Listener) {
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors or memory: wait, as net/http does,
			// rather than spin or give up the listener.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.o.Log.Warn("accept failed", "addr", ln.Addr().String(), "err", err, "retry", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		// A unix socket's client has no address: it is limited by
		// MaxConns alone (perIP keys it by the zero Addr, never counted).
		var remote, local netip.AddrPort
		if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
			remote = unmap(a.AddrPort())
		}
		if a, ok := nc.LocalAddr().(*net.TCPAddr); ok {
			local = unmap(a.AddrPort())
		}
		cid := s.ids.next(time.Now())
		if why := s.acquire(remote.Addr()); why != "" {
			s.o.Log.Info("refused", "cid", cid, "remote", addrString(remote), "reason", why)
			go s.refuse(nc)
			continue
		}
		if s.o.Fork {
			s.spawn(ctx, nc, cid, remote, local)
			continue
		}
		c := newConn(nc, cid, remote, local, s.o)
		s.mu.Lock()
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			serveConn(ctx, s.o, s.h, c)
			s.mu.Lock()
			delete(s.conns, c)
			delete(s.evicted, c)
			s.mu.Unlock()
			s.release(remote.Addr())
		}()
	}
}

// acquire counts a new connection from a, or says why it is refused.
func (s *server) acquire(a netip.Addr) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a.IsValid() && s.perIP[a] >= s.o.MaxPerIP {
		return fmt.Sprintf("%d connections from this address", s.perIP[a])
	}
	if s.total-len(s.evicted) >= s.o.MaxConns && !s.evictLocked() {
		return fmt.Sprintf("%d connections in all", s.total)
	}
	s.total++
	if a.IsValid() {
		s.perIP[a]++
	}
	return ""
}

func (s *server) release(a netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	if !a.IsValid() {
		return
	}
	if s.perIP[a]--; s.perIP[a] <= 0 {
		delete(s.perIP, a)
	}
}

// refuse tells a client over the limits so, briefly, and hangs up.
func (s *server) refuse(nc net.Conn) {
	defer nc.Close()
	if s.o.Busy != nil {
		_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
		s.o.Busy(nc)
	}
}

// spawn serves nc in a new process of this program, the socket on its fd
// 0 and 1 and the UCSPI variables set, as tcpserver would.
func (s *server) spawn(ctx context.Context, nc net.Conn, cid string, remote, local netip.AddrPort) {
	fail := func(err error) {
		s.o.Log.Error("cannot start a process for the connection", "cid", cid, "remote", remote, "err", err)
		nc.Close()
		s.release(remote.Addr())
	}
	fc, ok := nc.(interface{ File() (*os.File, error) })
	if !ok {
		fail(fmt.Errorf("%T has no descriptor", nc))
		return
	}
	f, err := fc.File()
	nc.Close()
	if err != nil {
		fail(err)
		return
	}
	defer f.Close()
	// The process says on this pipe when its client is trusted.
	tr, tw, err := os.Pipe()
	if err != nil {
		fail(err)
		return
	}
	defer tw.Close()
	env := childEnv(s.o.Env, cid, remote, local)
	env = append(env, envTrustFD+"=3")
	if s.stressed() {
		env = append(env, envStress+"=1")
	}
	cmd := &exec.Cmd{Path: s.o.Exe, Args: s.o.Args, Env: env, Stdin: f, Stdout: f, Stderr: s.o.Stderr, ExtraFiles: []*os.File{tw}}
	ch := &child{start: time.Now()}
	s.mu.Lock()
	if ctx.Err() != nil {
		s.mu.Unlock()
		fail(errors.New("stopping"))
		return
	}
	err = cmd.Start()
	if err == nil {
		s.procs[cmd.Process] = ch
		s.wg.Add(1)
	}
	s.mu.Unlock()
	if err != nil {
		tr.Close()
		fail(err)
		return
	}
	go func() {
		defer tr.Close()
		var b [1]byte
		if n, _ := tr.Read(b[:]); n == 1 {
			ch.trusted.Store(true)
		}
	}()
	go func() {
		defer s.wg.Done()
		err := cmd.Wait()
		s.mu.Lock()
		delete(s.procs, cmd.Process)
		delete(s.evicted, cmd.Process)
		s.mu.Unlock()
		s.release(remote.Addr())
		if err != nil {
			s.o.Log.Warn("connection process failed", "cid", cid, "remote", remote, "err", err)
		}
	}()
}

// childEnv is the environment of a per-connection process: ours without
// systemd's and tcpserver's variables, plus tcpserver's for this
// connection (PROTO, TCPREMOTEIP, TCPREMOTEPORT, TCPLOCALIP, TCPLOCALPORT)
// and the connection id.
func childEnv(env []string, cid string, remote, local netip.AddrPort) []string {
	drop := map[string]bool{"LISTEN_PID": true, "LISTEN_FDS": true, "LISTEN_FDNAMES": true, envAccepted: true, envStress: true, envTrustFD: true,
		"PROTO": true, "TCPREMOTEIP": true, "TCPREMOTEPORT": true, "TCPREMOTEHOST": true, "TCPREMOTEINFO": true,
		"TCPLOCALIP": true, "TCPLOCALPORT": true, "TCPLOCALHOST": true}
	out := make([]string, 0, len(env)+7)
	for _, e := range env {
		k, _, _ := strings.Cut(e, "=")
		if !drop[k] {
			out = append(out, e)
		}
	}
	if !remote.IsValid() {
		// A unix socket: ucspi-unix's PROTO, and no addresses to tell.
		return append(out, "PROTO=UNIX", envAccepted+"="+cid)
	}
	out = append(out, "PROTO=TCP",
		"TCPREMOTEIP="+remote.Addr().String(), "TCPREMOTEPORT="+strconv.Itoa(int(remote.Port())),
		"TCPLOCALIP="+local.Addr().String(), "TCPLOCALPORT="+strconv.Itoa(int(local.Port())),
		envAccepted+"="+cid)
	return out
}
