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
	"sync"
	"sync/atomic"
	"time"

	"github.com/tern-mail/tern/internal/auth"
)

// Conn is one client connection, whatever way it arrived: a socket from
// an accept loop, a socket on fd 0 (inetd, tcpserver, systemd Accept=yes),
// or a pair of pipes on fd 0 and 1 (behind a TLS wrapper such as stunnel
// or s6-tlsserver).
//
// Every Read waits at most the idle timeout for data and never past the
// end of the session (the total timeout); the idle deadline is renewed by
// each read, not by each command, so a client sending a large message
// slowly but steadily is served, and one that stops sending is cut.
// Writes have the same bounds, so a client that stops reading cannot hold
// a server forever (RFC 5321 §4.5.3.2 asks for such timeouts in SMTP).
type Conn struct {
	// ID names the connection on every log line (cid=); it is unique
	// across processes and over time.
	ID string
	// Remote and Local are the client's and our address: from the socket
	// when it is TCP, else from TCPREMOTEIP, TCPREMOTEPORT, TCPLOCALIP
	// and TCPLOCALPORT as tcpserver sets them. They are the zero value
	// when nothing tells them.
	Remote, Local netip.AddrPort
	// Log carries cid= on every line.
	Log *slog.Logger
	// Start is when the connection was taken.
	Start time.Time

	t   *timed
	cur net.Conn // t, or the TLS connection over it
	tls *tls.Conn

	// trustOnce tells the listener once that the client has shown it is
	// no idle squatter; trustPipe carries it from a per-connection
	// process.
	trustOnce sync.Once
	trustPipe *os.File
}

// Trust says the client has authenticated (or, on an SMTP port that
// takes mail from anyone, begun a transaction with MAIL): when the server
// is near its connection limit, connections not trusted get short
// timeouts and are the ones closed to make room, as Postfix's stress mode
// does, so that idle connections from a few addresses cannot lock every
// other client out.
func (c *Conn) Trust() {
	c.trustOnce.Do(func() {
		c.t.trusted.Store(true)
		if c.trustPipe != nil {
			_, _ = c.trustPipe.Write([]byte{'t'})
			c.trustPipe.Close()
		}
	})
}

func newConn(raw net.Conn, id string, remote, local netip.AddrPort, o *Options) *Conn {
	now := time.Now()
	t := &timed{raw: raw, idle: o.Idle, total: o.Total, drainIdle: o.DrainIdle, stressIdle: o.StressIdle, stress: o.stressed}
	if o.Total > 0 {
		t.end = now.Add(o.Total)
	}
	return &Conn{
		ID: id, Remote: remote, Local: local, Start: now,
		Log: o.Log.With("cid", id),
		t:   t, cur: t,
	}
}

// Read reads from the client, in the clear or through TLS.
func (c *Conn) Read(p []byte) (int, error) { return c.cur.Read(p) }

// Write writes to the client.
func (c *Conn) Write(p []byte) (int, error) { return c.cur.Write(p) }

// Close closes the connection (after a TLS close_notify if TLS is on).
func (c *Conn) Close() error { return c.cur.Close() }

// LocalAddr is Local as a *net.TCPAddr, or the socket's own address when
// Local is unknown.
func (c *Conn) LocalAddr() net.Addr {
	if c.Local.IsValid() {
		return net.TCPAddrFromAddrPort(c.Local)
	}
	return c.t.raw.LocalAddr()
}

// RemoteAddr is Remote as a *net.TCPAddr, or the socket's own peer address
// when Remote is unknown.
func (c *Conn) RemoteAddr() net.Addr {
	if c.Remote.IsValid() {
		return net.TCPAddrFromAddrPort(c.Remote)
	}
	return c.t.raw.RemoteAddr()
}

// SetDeadline, SetReadDeadline and SetWriteDeadline add a deadline of the
// caller's (a protocol library's own timeout) to the idle and total ones:
// the earliest applies.
func (c *Conn) SetDeadline(d time.Time) error {
	c.t.setUser(&c.t.userRead, d)
	c.t.setUser(&c.t.userWrite, d)
	return nil
}

// SetReadDeadline: see SetDeadline.
func (c *Conn) SetReadDeadline(d time.Time) error { c.t.setUser(&c.t.userRead, d); return nil }

// SetWriteDeadline: see SetDeadline.
func (c *Conn) SetWriteDeadline(d time.Time) error { c.t.setUser(&c.t.userWrite, d); return nil }

// NetConn returns the connection under TLS and the deadlines.
func (c *Conn) NetConn() net.Conn { return c.t.raw }

// StartTLS runs a server TLS handshake on the connection and from then on
// reads and writes through TLS; it is STARTTLS (RFC 3207), STLS (RFC 2595
// §4) and STARTTLS in IMAP (RFC 9051 §6.2.1). The handshake has the same
// deadlines as any read.
//
// The caller must throw away anything it has buffered from the client
// before the handshake: commands sent in the clear after STARTTLS must not
// be taken as coming through TLS (CVE-2011-0411, RFC 3207 §4.2).
func (c *Conn) StartTLS(cfg *tls.Config) error {
	if c.tls != nil {
		return errors.New("start TLS: TLS is already on")
	}
	s := tls.Server(c.t, cfg)
	if err := s.Handshake(); err != nil {
		return fmt.Errorf("TLS handshake with %s: %w", c.RemoteAddr(), err)
	}
	c.tls, c.cur = s, s
	return nil
}

// IsTLS reports whether the connection runs over TLS.
func (c *Conn) IsTLS() bool { return c.tls != nil }

// TLSState returns the TLS connection state, if TLS is on.
func (c *Conn) TLSState() (tls.ConnectionState, bool) {
	if c.tls == nil {
		return tls.ConnectionState{}, false
	}
	return c.tls.ConnectionState(), true
}

// TimeoutError is the error of a read or write cut by a deadline; it
// matches os.ErrDeadlineExceeded and is a net.Error with Timeout true.
type TimeoutError struct {
	What  string // "idle", "session" or "deadline" (the caller's own)
	After time.Duration
}

func (e *TimeoutError) Error() string {
	switch e.What {
	case "idle":
		return fmt.Sprintf("client silent for %v", e.After)
	case "session":
		return fmt.Sprintf("session longer than %v", e.After)
	}
	return "deadline exceeded"
}
func (e *TimeoutError) Timeout() bool   { return true }
func (e *TimeoutError) Temporary() bool { return true }
func (e *TimeoutError) Is(target error) bool {
	return target == os.ErrDeadlineExceeded
}

// timed puts the idle and total deadlines on every read and write of raw.
type timed struct {
	raw              net.Conn
	idle, total      time.Duration
	end              time.Time // zero: no total limit
	drainIdle        time.Duration
	draining         atomic.Bool
	stressIdle       time.Duration
	stress           func() bool // the server is near its connection limit
	trusted          atomic.Bool
	mu               sync.Mutex
	userRead         time.Time
	userWrite        time.Time
	readDL, writeDL  time.Time // what raw has now
	readWhy, wrWhy   string
	readIdle, wrIdle time.Duration
}

func (t *timed) setUser(p *time.Time, d time.Time) {
	t.mu.Lock()
	*p = d
	t.mu.Unlock()
}

// deadline picks the earliest of now+idle, the end of the session and the
// caller's deadline, and says which it was.
func (t *timed) deadline(now time.Time, idle time.Duration, user time.Time, end time.Time) (time.Time, string) {
	var d time.Time
	why := ""
	if idle > 0 {
		d, why = now.Add(idle), "idle"
	}
	if !end.IsZero() && (d.IsZero() || end.Before(d)) {
		d, why = end, "session"
	}
	if !user.IsZero() && (d.IsZero() || user.Before(d)) {
		d, why = user, "deadline"
	}
	return d, why
}

// readIdleNow is the idle timeout of the next read; stressed says the
// server is near its limit (asked before t.mu is taken: the server's lock
// is taken before t.mu when it evicts).
func (t *timed) readIdleNow(stressed bool) time.Duration {
	idle := t.idle
	if t.draining.Load() && (idle <= 0 || t.drainIdle < idle) {
		idle = t.drainIdle
	}
	if stressed && !t.trusted.Load() && (idle <= 0 || t.stressIdle < idle) {
		idle = t.stressIdle
	}
	return idle
}

func (t *timed) Read(p []byte) (int, error) {
	now := time.Now()
	if !t.end.IsZero() && !now.Before(t.end) {
		return 0, &TimeoutError{What: "session", After: t.total}
	}
	stressed := t.stress != nil && !t.trusted.Load() && t.stress()
	t.mu.Lock()
	idle := t.readIdleNow(stressed)
	d, why := t.deadline(now, idle, t.userRead, t.end)
	t.readDL, t.readWhy, t.readIdle = d, why, idle
	err := t.raw.SetReadDeadline(d)
	t.mu.Unlock()
	if err != nil && !errors.Is(err, os.ErrNoDeadline) {
		return 0, err
	}
	n, err := t.raw.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		t.mu.Lock()
		err = t.timeout(t.readWhy, t.readIdle)
		t.mu.Unlock()
	}
	return n, err
}

// farewell is how long past the end of the session writes may go on: a
// server is to say why it closes (SMTP's 421, RFC 5321 s. 4.5.3.2; POP3's
// and IMAP's BYE), and a session cut at its end had no time left for it.
const farewell = 5 * time.Second

func (t *timed) Write(p []byte) (int, error) {
	now := time.Now()
	end := t.end
	if !end.IsZero() {
		end = end.Add(farewell)
	}
	if !end.IsZero() && !now.Before(end) {
		return 0, &TimeoutError{What: "session", After: t.total}
	}
	t.mu.Lock()
	d, why := t.deadline(now, t.idle, t.userWrite, end)
	t.writeDL, t.wrWhy, t.wrIdle = d, why, t.idle
	err := t.raw.SetWriteDeadline(d)
	t.mu.Unlock()
	if err != nil && !errors.Is(err, os.ErrNoDeadline) {
		return 0, err
	}
	n, err := t.raw.Write(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		t.mu.Lock()
		err = t.timeout(t.wrWhy, t.wrIdle)
		t.mu.Unlock()
	}
	return n, err
}

func (t *timed) timeout(why string, idle time.Duration) error {
	switch why {
	case "idle":
		return &TimeoutError{What: why, After: idle}
	case "session":
		return &TimeoutError{What: why, After: t.total}
	}
	return &TimeoutError{What: "deadline"}
}

// drain is called when the server is asked to stop: from now on a read
// waits at most drainIdle for the client, and a read already waiting is
// cut short to that. A client in the middle of a command that keeps
// sending is unaffected; one that is silent is let go.
func (t *timed) drain() {
	t.draining.Store(true)
	t.mu.Lock()
	defer t.mu.Unlock()
	d := time.Now().Add(t.drainIdle)
	if t.readDL.IsZero() || d.Before(t.readDL) {
		t.readDL, t.readWhy, t.readIdle = d, "idle", t.drainIdle
		_ = t.raw.SetReadDeadline(d)
	}
}

// evict cuts short a read waiting for an untrusted client, to make room
// for a new one: the handler sees an idle timeout and says goodbye.
func (t *timed) evict() {
	t.mu.Lock()
	defer t.mu.Unlock()
	d := time.Now()
	t.readDL, t.readWhy, t.readIdle = d, "idle", t.stressIdle
	_ = t.raw.SetReadDeadline(d)
}

func (t *timed) Close() error         { return t.raw.Close() }
func (t *timed) LocalAddr() net.Addr  { return t.raw.LocalAddr() }
func (t *timed) RemoteAddr() net.Addr { return t.raw.RemoteAddr() }
func (t *timed) SetDeadline(d time.Time) error {
	t.setUser(&t.userRead, d)
	t.setUser(&t.userWrite, d)
	return nil
}
func (t *timed) SetReadDeadline(d time.Time) error  { t.setUser(&t.userRead, d); return nil }
func (t *timed) SetWriteDeadline(d time.Time) error { t.setUser(&t.userWrite, d); return nil }

// TrustOnLogin wraps a server's password check so that a login that
// succeeds marks c trusted (see Conn.Trust).
func TrustOnLogin(a auth.Authenticator, c *Conn) auth.Authenticator {
	if a == nil {
		return nil
	}
	return trustOnLogin{a, c}
}

type trustOnLogin struct {
	auth.Authenticator
	c *Conn
}

func (t trustOnLogin) Authenticate(ctx context.Context, user, pass string, remote netip.Addr) (*auth.Account, error) {
	acct, err := t.Authenticator.Authenticate(ctx, user, pass, remote)
	if err == nil && acct != nil {
		t.c.Trust()
	}
	return acct, err
}
