// Package imapd is the IMAP server of tern-imapd: RFC 9051 (IMAP4rev2)
// and RFC 3501 (IMAP4rev1) over tern's Maildir store.
//
// Why it is built this way: github.com/emersion/go-imap/v2's imapserver
// parses commands and writes responses, and a Session of ours serves them
// from maildir/. In front of imapserver sits a dispatcher of ours (the
// front, front.go) that reads each client command whole before imapserver
// sees it: imapserver's handling of literals has bugs that let a client
// hang a connection or smuggle commands, and it lacks STARTTLS policy, ID,
// COMPRESS and QUOTA. The two talk over an in-memory connection, which
// also carries the connection's state (who logged in, from where, over
// TLS or not) into the Session.
package imapd

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
)

// DefaultAppendLimit is the largest message APPEND takes unless the
// configuration says otherwise.
const DefaultAppendLimit = 64 << 20

// Config is one connection's server configuration.
type Config struct {
	// Greeting is the text of the greeting after the capabilities:
	// the host's name and the connection id.
	Greeting string
	Log      *slog.Logger
	// Remote is the client's address; a loopback client may log in
	// without TLS.
	Remote netip.Addr
	// TLS, when set, is offered with STARTTLS; StartTLS switches the
	// connection to TLS and IsTLS tells whether it is on.
	TLS      *tls.Config
	StartTLS func() error
	IsTLS    func() bool
	// InsecureAuth takes passwords without TLS from anywhere.
	InsecureAuth bool
	// AppendLimit is the largest message APPEND takes (APPENDLIMIT,
	// RFC 7889); 0 means DefaultAppendLimit.
	AppendLimit uint32
	// PreAuthIdle is how long a client that has not logged in may be
	// silent; 0 means DefaultPreAuthIdle.
	PreAuthIdle time.Duration
	// NewSession makes the session imapserver serves, before the
	// greeting; preauth greets the client as logged in already.
	NewSession func(st *ConnState) (s imapserver.Session, preauth bool, err error)
}

func (c *Config) greeting() string {
	if c.Greeting == "" {
		return "tern IMAP ready"
	}
	return c.Greeting
}

func (c *Config) isTLS() bool { return c.IsTLS != nil && c.IsTLS() }

// secure reports whether passwords may be taken now: over TLS, from a
// loopback client, or anywhere with InsecureAuth (RFC 9051 §11.1 says a
// server must not take them in the clear otherwise).
func (c *Config) secure() bool {
	return c.isTLS() || c.InsecureAuth || (c.Remote.IsValid() && c.Remote.Unmap().IsLoopback())
}

func (c *Config) preAuthIdle() time.Duration {
	if c.PreAuthIdle <= 0 {
		return DefaultPreAuthIdle
	}
	return c.PreAuthIdle
}

func (c *Config) appendLimit() uint32 {
	if c.AppendLimit == 0 {
		return DefaultAppendLimit
	}
	return c.AppendLimit
}

// ConnState is what a Session learns of its connection: it travels to
// imapserver's NewSession inside the net.Conn that imapserver serves.
type ConnState struct {
	Config *Config
	Log    *slog.Logger

	mu   sync.Mutex
	sess imapserver.Session
	// OnLogin, set by the session, runs when a LOGIN or AUTHENTICATE
	// has completed.
	onLogin func()
}

// SetOnLogin registers what runs once the client has logged in.
func (s *ConnState) SetOnLogin(fn func()) {
	s.mu.Lock()
	s.onLogin = fn
	s.mu.Unlock()
}

func (s *ConnState) session() imapserver.Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sess
}

func (s *ConnState) loggedIn() {
	s.mu.Lock()
	fn := s.onLogin
	s.mu.Unlock()
	if fn != nil {
		fn()
	}
}

// stateConn is imapserver's end of the in-memory connection.
type stateConn struct {
	net.Conn
	st   *ConnState
	done chan struct{}
	once sync.Once
}

// SetDeadline, SetReadDeadline and SetWriteDeadline do nothing:
// imapserver sets them around every response it writes (two of
// net.Pipe's timers a FETCH item, a tenth of a FETCH of 10,000 flags),
// and its own timeouts have no work here. The front hands it whole
// commands, and what bounds a silent or stalled client is the client
// connection's deadlines (internal/serve, and the front's own before
// login).
func (c *stateConn) SetDeadline(time.Time) error      { return nil }
func (c *stateConn) SetReadDeadline(time.Time) error  { return nil }
func (c *stateConn) SetWriteDeadline(time.Time) error { return nil }

func (c *stateConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.done) })
	return err
}

func newReader(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, 16<<10) }
func newWriter(w io.Writer) *bufio.Writer { return bufio.NewWriterSize(w, 16<<10) }

// oneConn is a listener that yields one connection, then blocks until
// closed: imapserver serves only listeners.
type oneConn struct {
	c      chan net.Conn
	closed chan struct{}
	once   sync.Once
	addr   net.Addr
}

func (l *oneConn) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *oneConn) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConn) Addr() net.Addr { return l.addr }

// libCaps are the capabilities imapserver is told about: they switch on
// its code for them. What the client is told is the front's list.
var libCaps = imap.CapSet{
	imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}, imap.CapNamespace: {},
	imap.CapUIDPlus: {}, imap.CapESearch: {}, imap.CapSearchRes: {},
	imap.CapListExtended: {}, imap.CapListStatus: {}, imap.CapMove: {},
	imap.CapStatusSize: {}, imap.CapBinary: {}, imap.CapChildren: {},
	imap.CapSpecialUse: {}, imap.CapCreateSpecialUse: {},
	// LITERAL+ lets imapserver take the non-synchronising literals the
	// front never sends it; without it the front's checks would be the
	// only ones, as they are meant to be, but imapserver would answer
	// differently in corner cases.
	imap.CapLiteralPlus: {},
}

// logWriter turns imapserver's log lines into ours.
type logWriter struct{ log *slog.Logger }

func (l logWriter) Printf(format string, v ...any) {
	l.log.Warn("imapserver", "msg", fmt.Sprintf(format, v...))
}

// Serve serves one IMAP connection until the client logs out or goes,
// or ctx is cancelled. conn is the client; its reads and writes have
// their own deadlines (internal/serve).
func Serve(ctx context.Context, conn io.ReadWriteCloser, cfg Config) error {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	st := &ConnState{Config: &cfg, Log: cfg.Log}
	ours, theirs := memPipe()
	ln := &oneConn{c: make(chan net.Conn, 1), closed: make(chan struct{}), addr: theirs.LocalAddr()}
	libDone := make(chan struct{})
	ln.c <- &stateConn{Conn: theirs, st: st, done: libDone}
	var newErr error
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			sc := c.NetConn().(*stateConn)
			s, preauth, err := cfg.NewSession(sc.st)
			if err != nil {
				newErr = err
				return nil, nil, &imap.Error{Type: imap.StatusResponseTypeBye, Code: imap.ResponseCodeUnavailable, Text: "cannot serve this connection now, try again later"}
			}
			sc.st.mu.Lock()
			sc.st.sess = s
			sc.st.mu.Unlock()
			return s, &imapserver.GreetingData{PreAuth: preauth}, nil
		},
		Caps:         libCaps,
		Logger:       logWriter{cfg.Log},
		InsecureAuth: true, // the front decides (front.caps, front.command)
	})
	served := make(chan struct{})
	go func() {
		srv.Serve(ln)
		close(served)
	}()
	f := &front{
		cfg:    &cfg,
		st:     st,
		conn:   conn,
		lib:    ours,
		libR:   newReader(ours),
		libW:   newWriter(ours),
		events: make(chan event, 1),
		// The greeting is the first line imapserver writes, and the
		// relay must know to report it before it reads it.
		waitTag: "*",
	}
	f.in = newReader(conn)
	f.out = &clientOut{w: newWriter(conn)}
	go f.relay()
	err := f.serve(ctx)
	if errors.Is(err, errClientGone) {
		err = nil
	}
	// Closing our end ends imapserver's connection, which closes the
	// session; the relay sees it and stops.
	ours.Close()
	for range f.events {
	}
	ln.Close()
	// imapserver closes its end after the session's Close: wait for
	// it, so that a mailbox is let go before the process goes on.
	select {
	case <-libDone:
	case <-time.After(10 * time.Second):
		cfg.Log.Warn("the session did not close within 10s")
	}
	<-served
	if err == nil && newErr != nil {
		err = newErr
	}
	return err
}
