package remote

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/internal/logging"
	"github.com/tern-mail/tern/internal/testcert"
	"github.com/tern-mail/tern/mta/route"
	"github.com/tern-mail/tern/mta/transport"
)

// received is one message as an MX host in a test got it.
type received struct {
	From     string
	Opts     smtp.MailOptions
	Rcpts    []string
	RcptOpts []smtp.RcptOptions
	Data     []byte
	TLS      bool
	Helo     string // the name in the last EHLO or HELO
	Len      int64  // with sink: the text's length
	Sum      string // with sink: its SHA-256, hex
}

// mx is a go-smtp server on a loopback address acting as an MX host,
// keeping what it received and what the client wrote, byte for byte.
type mx struct {
	t   *testing.T
	ap  netip.AddrPort
	srv *smtp.Server
	l   net.Listener
	// serving starts the server once; hooks are set before.
	serving sync.Once
	hide    []string // EHLO keywords the server's replies say otherwise: "8BITMIME"

	// Hooks deciding answers; nil accepts.
	mail func(from string) error
	rcpt func(to string) error
	data func(body []byte) error

	user, pass string // AUTH PLAIN credentials, when set
	// sink keeps only the length and SHA-256 of each text, for big ones.
	sink bool

	mu         sync.Mutex
	msgs       []received
	conns      int
	transcript bytes.Buffer // what clients wrote, before any TLS
	auths      []string     // "user tls=true"
}

type mxOpt func(*mx)

func withTLS(cfg *tls.Config) mxOpt { return func(m *mx) { m.srv.TLSConfig = cfg } }

// newMX starts an MX host on ip (port 0: any).
func newMX(t *testing.T, ip string, port int, opts ...mxOpt) *mx {
	t.Helper()
	m := &mx{t: t}
	m.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &mxSession{m: m, c: c}, nil }))
	m.srv.Domain = "mx.test"
	m.srv.ReadTimeout = 10 * time.Second
	m.srv.WriteTimeout = 10 * time.Second
	for _, o := range opts {
		o(m)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("listen on %s:%d: %v", ip, port, err)
	}
	m.ap = netip.MustParseAddrPort(l.Addr().String())
	m.l = &recordingListener{Listener: l, m: m}
	t.Cleanup(func() { m.srv.Close(); l.Close() })
	return m
}

// target is the host as routing would give it; it starts the server, so
// a test sets the hooks first.
func (m *mx) target(host string) route.Target {
	m.serving.Do(func() { go m.srv.Serve(m.l) })
	return route.Target{Host: host, Addrs: []netip.Addr{m.ap.Addr()}, Port: int(m.ap.Port())}
}

func (m *mx) received() []received {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]received(nil), m.msgs...)
}

func (m *mx) connCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.conns
}

func (m *mx) written() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.transcript.String()
}

type recordingListener struct {
	net.Listener
	m *mx
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.m.mu.Lock()
	l.m.conns++
	l.m.mu.Unlock()
	return &recordingConn{Conn: c, m: l.m}, nil
}

type recordingConn struct {
	net.Conn
	m *mx
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.m.mu.Lock()
	if !c.m.sink {
		c.m.transcript.Write(p[:n])
	}
	c.m.mu.Unlock()
	return n, err
}

func (c *recordingConn) Write(p []byte) (int, error) {
	// go-smtp writes each reply line in a write of its own: a hidden
	// keyword's line becomes one no client knows.
	for _, h := range c.m.hide {
		if len(p) > 4 && string(p[:3]) == "250" && string(p[4:]) == h+"\r\n" {
			if _, err := c.Conn.Write([]byte(string(p[:4]) + "X-HIDDEN\r\n")); err != nil {
				return 0, err
			}
			return len(p), nil
		}
	}
	return c.Conn.Write(p)
}

type mxSession struct {
	m   *mx
	c   *smtp.Conn
	msg received
}

func (s *mxSession) Reset()        { s.msg = received{} }
func (s *mxSession) Logout() error { return nil }

func (s *mxSession) Mail(from string, opts *smtp.MailOptions) error {
	if s.m.mail != nil {
		if err := s.m.mail(from); err != nil {
			return err
		}
	}
	s.msg = received{From: from, Helo: s.c.Hostname()}
	if opts != nil {
		s.msg.Opts = *opts
	}
	return nil
}

func (s *mxSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	if s.m.rcpt != nil {
		if err := s.m.rcpt(to); err != nil {
			return err
		}
	}
	s.msg.Rcpts = append(s.msg.Rcpts, to)
	if opts != nil {
		s.msg.RcptOpts = append(s.msg.RcptOpts, *opts)
	} else {
		s.msg.RcptOpts = append(s.msg.RcptOpts, smtp.RcptOptions{})
	}
	return nil
}

func (s *mxSession) Data(r io.Reader) error {
	if s.m.sink {
		h := sha256.New()
		n, err := io.Copy(h, r)
		if err != nil {
			return err
		}
		s.msg.Len, s.msg.Sum = n, hex.EncodeToString(h.Sum(nil))
		s.m.mu.Lock()
		s.m.msgs = append(s.m.msgs, s.msg)
		s.m.mu.Unlock()
		return nil
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if s.m.data != nil {
		if err := s.m.data(b); err != nil {
			return err
		}
	}
	s.msg.Data = b
	_, s.msg.TLS = s.c.TLSConnectionState()
	s.m.mu.Lock()
	s.m.msgs = append(s.m.msgs, s.msg)
	s.m.mu.Unlock()
	return nil
}

func (s *mxSession) AuthMechanisms() []string {
	if s.m.user == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *mxSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		_, isTLS := s.c.TLSConnectionState()
		s.m.mu.Lock()
		s.m.auths = append(s.m.auths, user+" tls="+strconv.FormatBool(isTLS))
		s.m.mu.Unlock()
		if user != s.m.user || pass != s.m.pass {
			return smtp.ErrAuthFailed
		}
		return nil
	}), nil
}

// testTLS makes a certificate for mx.test, a server config with it and a
// pool that trusts it.
func testTLS(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	testcert.Write(t, dir, 1)
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := os.ReadFile(filepath.Join(dir, "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pemBytes)
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return &tls.Config{Certificates: []tls.Certificate{cert}}, pool
}

// scripted is a server that misbehaves as a test needs: it runs serve on
// every connection.
func scripted(t *testing.T, ip string, serve func(c net.Conn, r *bufio.Reader)) (route.Target, *atomic.Int32) {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	n := new(atomic.Int32)
	var wg sync.WaitGroup
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			n.Add(1)
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	ap := netip.MustParseAddrPort(l.Addr().String())
	return route.Target{Host: "scripted.test", Addrs: []netip.Addr{ap.Addr()}, Port: int(ap.Port())}, n
}

// refusedTarget is an address where nothing listens.
func refusedTarget(t *testing.T, ip string) route.Target {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(l.Addr().String())
	l.Close()
	return route.Target{Host: "refused.test", Addrs: []netip.Addr{ap.Addr()}, Port: int(ap.Port())}
}

// dialLog counts the connections a transport opens and keeps each Write
// the client made, to see what went out in one write.
type dialLog struct {
	mu     sync.Mutex
	dials  []string
	writes []string
}

func (d *dialLog) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.dials = append(d.dials, addr)
	d.mu.Unlock()
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &writeLogConn{Conn: c, d: d}, nil
}

func (d *dialLog) writeList() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.writes...)
}

type writeLogConn struct {
	net.Conn
	d *dialLog
}

func (c *writeLogConn) Write(p []byte) (int, error) {
	if len(p) < 4096 { // commands, not the text
		c.d.mu.Lock()
		c.d.writes = append(c.d.writes, string(p))
		c.d.mu.Unlock()
	}
	return c.Conn.Write(p)
}

// harness is a transport with fake routing and a log kept in memory.
type harness struct {
	t       *testing.T
	tr      *Transport
	dl      *dialLog
	targets []route.Target
	rerr    error
	log     *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newHarness(t *testing.T, targets []route.Target, tweak func(*Options)) *harness {
	t.Helper()
	h := &harness{t: t, dl: &dialLog{}, targets: targets, log: &syncBuffer{}}
	o := Options{
		Targets: func(ctx context.Context, domain string, rt *conf.Route) ([]route.Target, error) {
			if h.rerr != nil {
				return nil, h.rerr
			}
			return h.targets, nil
		},
		Dial:     h.dl.dial,
		Hostname: "tern.test",
		Log:      logging.New("tern-queue", h.log, slog.LevelDebug),
	}
	o.Client.GreetingTimeout = 5 * time.Second
	o.Client.CommandTimeout = 5 * time.Second
	o.ConnectTimeout = 5 * time.Second
	if tweak != nil {
		tweak(&o)
	}
	h.tr = New(o)
	t.Cleanup(func() { h.tr.Close() })
	return h
}

// message is a queued message held in memory.
func message(id, sender, text string) *transport.Message {
	return &transport.Message{
		ID: id, Sender: sender, Size: int64(len(text)),
		Open:     func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(text)), nil },
		EightBit: strings.ContainsFunc(text, func(r rune) bool { return r >= 0x80 }),
	}
}

func rcpts(addrs ...string) []transport.Recipient {
	var rs []transport.Recipient
	for _, a := range addrs {
		rs = append(rs, transport.Recipient{Addr: a})
	}
	return rs
}

func (h *harness) deliver(m *transport.Message, hop transport.Hop, rs []transport.Recipient) []transport.Result {
	h.t.Helper()
	if hop.Kind == "" {
		hop.Kind = transport.SMTP
	}
	if hop.Domain == "" {
		hop.Domain = "example.org"
	}
	if hop.Key == "" {
		hop.Key = "smtp:" + hop.Domain
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res := h.tr.Deliver(ctx, m, hop, rs)
	if len(res) != len(rs) {
		h.t.Fatalf("%d results for %d recipients", len(res), len(rs))
	}
	return res
}

// crlf is the text as it travels in DATA, and as a server stores it.
func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

var errTemp = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again"}
var errPerm = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
