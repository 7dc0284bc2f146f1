// Package remote is tern-queue's SMTP transport: it delivers one message
// to a group of recipients that share a next hop (the routes file's host,
// else the domain's MX hosts), trying each host and each of its addresses
// in the order routing gave, and answers once per recipient.
//
// Why it is built this way (Postfix's smtp(8) and its connection cache):
// the transport decides nothing about where mail goes and keeps no queue
// state; it speaks SMTP well. What a host answers is kept per recipient;
// a failure to reach a host, or a temporary answer from it, moves the
// recipients still pending to the next one; and an idle connection is
// kept for the next message to the same place, which is most of the speed
// of a busy MTA.
package remote

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/mta/route"
	"github.com/tern-mail/tern/mta/smtpclient"
	"github.com/tern-mail/tern/mta/transport"
)

// Options configure the transport. Targets and Hostname are needed;
// the rest have defaults.
type Options struct {
	// Targets finds the hosts for a domain: the route's host when rt is
	// not nil, else the domain's MX hosts.
	Targets func(ctx context.Context, domain string, rt *conf.Route) ([]route.Target, error)
	// Dial opens a connection; nil means a net.Dialer's DialContext.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Now is the clock of the log's delay=; nil means time.Now. Idle
	// connections are timed by the real clock.
	Now func() time.Time
	// Hostname is this host's name, given in EHLO.
	Hostname string
	// Client holds the SMTP time limits; its Hostname is set from Hostname.
	Client smtpclient.Options
	// ConnectTimeout bounds the TCP connection to one address: 30 s.
	ConnectTimeout time.Duration
	// RootCAs checks certificates for tls=verify and REQUIRETLS; nil means
	// the system's roots.
	RootCAs *x509.CertPool
	// MaxMessagesPerConn is how many messages one connection carries
	// before it is closed: 100.
	MaxMessagesPerConn int
	// IdleTimeout is how long a connection waits for the next message
	// before QUIT: 5 s.
	IdleTimeout time.Duration
	// MaxIdle bounds the idle connections kept in all: 64.
	MaxIdle int
	// Log gets a line for each recipient and attempt (and for each host
	// passed over); nil discards them.
	Log *slog.Logger
}

// Defaults of Options.
const (
	DefaultConnectTimeout     = 30 * time.Second
	DefaultMaxMessagesPerConn = 100
	DefaultIdleTimeout        = 5 * time.Second
	DefaultMaxIdle            = 64
)

// Transport is the SMTP transport. It is safe for concurrent use.
type Transport struct {
	o Options

	mu     sync.Mutex
	idle   map[string][]*conn // by cache key, the most recently idle last
	nIdle  int
	closed bool
	quits  sync.WaitGroup // QUITs of connections let go
	// buffers lend the buffer a message's text is read into while it is
	// sent: no allocation a message, none held by an idle connection.
	buffers sync.Pool
}

// readBuffer is the size of the reads from the queue file.
const readBuffer = 32 << 10

var _ transport.Transport = (*Transport)(nil)

// New returns a transport.
func New(o Options) *Transport {
	if o.Dial == nil {
		var d net.Dialer
		o.Dial = d.DialContext
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.MaxMessagesPerConn <= 0 {
		o.MaxMessagesPerConn = DefaultMaxMessagesPerConn
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MaxIdle <= 0 {
		o.MaxIdle = DefaultMaxIdle
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	o.Client.Hostname = o.Hostname
	t := &Transport{o: o, idle: map[string][]*conn{}}
	t.buffers.New = func() any { b := make([]byte, readBuffer); return &b }
	return t
}

// conn is one SMTP connection to a host address.
type conn struct {
	cl       *smtpclient.Client
	key      string      // the cache key
	relay    string      // "mx.example.org[192.0.2.7]:25"
	tls      string      // "TLSv1.3", or "" in plaintext
	verified bool        // the certificate was checked against the host name
	closing  bool        // the server said 421: it is closing the connection
	sent     int         // messages carried
	since    time.Time   // idle since
	timer    *time.Timer // QUITs it when idle too long
}

// Close QUITs every idle connection and waits for them; a Deliver still
// running finishes, and its connection is then QUIT too.
func (t *Transport) Close() error {
	t.mu.Lock()
	t.closed = true
	var all []*conn
	for k, cs := range t.idle {
		all = append(all, cs...)
		delete(t.idle, k)
	}
	t.nIdle = 0
	t.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range all {
		c.timer.Stop()
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.cl.Quit()
		}()
	}
	wg.Wait()
	// No QUIT starts in the background once closed is set.
	t.quits.Wait()
	return nil
}

// quit sends QUIT, in the background while the transport is open: the
// server's reply is no one's business, and a slow one must not hold up a
// delivery.
func (t *Transport) quit(c *conn) {
	t.mu.Lock()
	closed := t.closed
	if !closed {
		t.quits.Add(1)
	}
	t.mu.Unlock()
	if closed {
		c.cl.Quit()
		return
	}
	go func() {
		defer t.quits.Done()
		c.cl.Quit()
	}()
}

// take returns an idle connection for key, or nil.
func (t *Transport) take(key string) *conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	cs := t.idle[key]
	if len(cs) == 0 {
		return nil
	}
	c := cs[len(cs)-1]
	cs[len(cs)-1] = nil
	if len(cs) == 1 {
		delete(t.idle, key)
	} else {
		t.idle[key] = cs[:len(cs)-1]
	}
	t.nIdle--
	c.timer.Stop()
	return c
}

// put keeps c for the next message to the same place, or QUITs it when
// it has carried enough, the cache is closed, or it is full (then the
// connection idle longest goes instead).
func (t *Transport) put(c *conn) {
	if c.sent >= t.o.MaxMessagesPerConn {
		t.quit(c)
		return
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		c.cl.Quit()
		return
	}
	var evict *conn
	if t.nIdle >= t.o.MaxIdle {
		evict = t.oldestLocked()
	}
	t.idle[c.key] = append(t.idle[c.key], c)
	t.nIdle++
	c.since = time.Now()
	if c.timer == nil {
		c.timer = time.AfterFunc(t.o.IdleTimeout, func() { t.expire(c) })
	} else {
		// One timer a connection: expire checks under the lock whether c
		// is still idle, so a late firing after take does nothing.
		c.timer.Reset(t.o.IdleTimeout)
	}
	t.mu.Unlock()
	if evict != nil {
		t.quit(evict)
	}
}

// oldestLocked removes and returns the connection idle longest: the first
// of some key's list. With MaxIdle connections at most, a scan is cheap.
func (t *Transport) oldestLocked() *conn {
	var best *conn
	var bestKey string
	for k, cs := range t.idle {
		if best == nil || cs[0].idleSince().Before(best.idleSince()) {
			best, bestKey = cs[0], k
		}
	}
	if best == nil {
		return nil
	}
	if cs := t.idle[bestKey]; len(cs) == 1 {
		delete(t.idle, bestKey)
	} else {
		t.idle[bestKey] = cs[1:]
	}
	t.nIdle--
	best.timer.Stop()
	return best
}

// expire QUITs c if it is still idle.
func (t *Transport) expire(c *conn) {
	t.mu.Lock()
	cs := t.idle[c.key]
	found := false
	for i, x := range cs {
		if x == c {
			cs = append(cs[:i], cs[i+1:]...)
			found = true
			break
		}
	}
	if found {
		if len(cs) == 0 {
			delete(t.idle, c.key)
		} else {
			t.idle[c.key] = cs
		}
		t.nIdle--
	}
	t.mu.Unlock()
	if found {
		t.quit(c)
	}
}

func (c *conn) idleSince() time.Time { return c.since }

// delivery is one Deliver call: a message, its recipients for one hop,
// and what has become of each.
type delivery struct {
	t     *Transport
	m     *transport.Message
	hop   transport.Hop
	rcpts []transport.Recipient
	start time.Time

	res     []transport.Result
	pending []int // indexes of the recipients not yet decided
	// reachedMail is set once some host took us as far as MAIL.
	reachedMail bool
	// sevenBitErr is the outcome of checking that the message can be made
	// 7-bit, done once, the first time a host without 8BITMIME is met.
	sevenBitChecked bool
	sevenBitErr     error
}

// Deliver sends m to rcpts at hop's destination. It never returns before
// each recipient has a result.
func (t *Transport) Deliver(ctx context.Context, m *transport.Message, hop transport.Hop, rcpts []transport.Recipient) []transport.Result {
	if len(rcpts) == 0 {
		return nil
	}
	d := &delivery{t: t, m: m, hop: hop, rcpts: rcpts, start: t.o.Now(), res: make([]transport.Result, len(rcpts))}
	for i := range rcpts {
		d.pending = append(d.pending, i)
	}
	d.run(ctx)
	for i, r := range d.res {
		t.logResult(d, rcpts[i], r)
	}
	return d.res
}

func (d *delivery) run(ctx context.Context) {
	targets, err := d.t.o.Targets(ctx, d.hop.Domain, d.hop.Route)
	var rerr *route.Error
	switch {
	case errors.As(err, &rerr):
		d.decideAll(transport.Result{Status: rerr.Status, Temporary: rerr.Temporary, Answer: rerr.Msg, Unreachable: rerr.Temporary})
		return
	case err != nil:
		d.decideAll(transport.Result{Status: "4.4.3", Temporary: true, Answer: "finding the hosts for " + d.hop.Domain + ": " + err.Error(), Unreachable: true})
		return
	case len(targets) == 0:
		d.decideAll(transport.Result{Status: "4.4.3", Temporary: true, Answer: "no hosts to deliver to for " + d.hop.Domain, Unreachable: true})
		return
	}
	last := transport.Result{Status: "4.4.1", Temporary: true, Answer: "no host of " + d.hop.Domain + " could be reached"}
	for _, tg := range targets {
		if tg.Err != nil {
			last = transport.Result{Status: "4.4.3", Temporary: true, Answer: "looking up " + tg.Host + ": " + tg.Err.Error()}
			continue
		}
		for _, a := range tg.Addrs {
			if len(d.pending) == 0 {
				return
			}
			if err := ctx.Err(); err != nil {
				d.decidePending(transport.Result{Status: "4.4.7", Temporary: true, Answer: "delivery cut short: " + err.Error()})
				return
			}
			if r, failed := d.tryAddr(ctx, tg, a); failed {
				last = r
				if len(d.pending) > 0 {
					// The recipients' own lines come at the end; this says
					// why a host was passed over.
					d.t.o.Log.Info("smtp host passed over", "qid", d.m.ID, "relay", r.RemoteMTA, "dsn", r.Status, "answer", r.Answer)
				}
			}
		}
	}
	if len(d.pending) > 0 {
		// Whatever the hosts left undecided is deferred with the last
		// thing that happened to it: a host's temporary answer, or the
		// failure of the last host tried.
		for _, i := range d.pending {
			if d.res[i].Status == "" {
				d.res[i] = last
			}
			// A permanent result left pending is REQUIRETLS that no host
			// met (RFC 8689 §5); it stays permanent.
			d.res[i].Unreachable = d.res[i].Temporary && !d.reachedMail
		}
		d.pending = nil
	}
}

func (d *delivery) decideAll(r transport.Result) {
	for i := range d.res {
		d.res[i] = r
	}
	d.pending = nil
}

// decidePending gives every recipient still pending the result r.
func (d *delivery) decidePending(r transport.Result) {
	for _, i := range d.pending {
		d.res[i] = r
	}
	d.pending = nil
}

// leave records r for each pending recipient, who stays pending for the
// next host.
func (d *delivery) leave(r transport.Result) {
	for _, i := range d.pending {
		d.res[i] = r
	}
}

func (d *delivery) decide(i int, r transport.Result) {
	d.res[i] = r
	for k, p := range d.pending {
		if p == i {
			d.pending = append(d.pending[:k], d.pending[k+1:]...)
			return
		}
	}
}

func (d *delivery) policy() conf.TLSPolicy {
	if d.hop.Route == nil || d.hop.Route.TLS == "" {
		return conf.TLSMay
	}
	return d.hop.Route.TLS
}

func (d *delivery) auth() *conf.RouteAuth {
	if d.hop.Route == nil {
		return nil
	}
	return d.hop.Route.Auth
}

// verifyName is the name a certificate must be valid for, and whether one
// must be: tls=verify checks against the route's host (RFC 6125 as
// Postfix's "verify" level does), a REQUIRETLS message against the MX
// host's name (RFC 8689 §4.2.1).
func (d *delivery) verifyName(tg route.Target) (string, bool) {
	switch {
	case d.policy() == conf.TLSVerify:
		if rt := d.hop.Route; rt != nil && rt.Host != "" {
			return rt.Host, true
		}
		return tg.Host, true
	case d.m.RequireTLS:
		return tg.Host, true
	}
	return tg.Host, false
}

// tryAddr delivers what is pending through one address of a host: an idle
// connection there if one is kept, else a new one. It reports the
// failure that left recipients pending, if any.
func (d *delivery) tryAddr(ctx context.Context, tg route.Target, a netip.Addr) (transport.Result, bool) {
	port := tg.Port
	if port == 0 {
		port = 25
	}
	addrPort := netip.AddrPortFrom(a, uint16(port)).String()
	_, verify := d.verifyName(tg)
	authFile := ""
	if au := d.auth(); au != nil {
		authFile = au.File + "\x00" + au.User
	}
	key := strings.Join([]string{d.hop.Key, addrPort, string(d.policy()), strconv.FormatBool(verify), authFile}, "\x00")
	// An idle connection first; if it turns out dead (its RSET fails), a
	// new one, with nothing lost.
	for c := d.t.take(key); c != nil; c = d.t.take(key) {
		r, failed, stale := d.session(ctx, c, true)
		if !stale {
			return r, failed
		}
	}
	c, r := d.connect(ctx, tg, a, port, key, false)
	if c == nil && r.tlsFailed && d.policy() == conf.TLSMay && !d.m.RequireTLS {
		// RFC 7435 §3 / Postfix: a broken handshake with a host that only
		// may use TLS is tried once more in plaintext.
		d.t.o.Log.Info("smtp TLS failed, trying again without TLS", "qid", d.m.ID, "relay", r.res.RemoteMTA, "reason", r.res.Answer)
		c, r = d.connect(ctx, tg, a, port, key, true)
	}
	if c == nil {
		if r.decided {
			d.decidePending(r.res)
			return transport.Result{}, false
		}
		d.leave(r.res)
		return r.res, true
	}
	res, failed, _ := d.session(ctx, c, false)
	return res, failed
}

// connectFailure is why connect gave no connection.
type connectFailure struct {
	res       transport.Result
	tlsFailed bool // the STARTTLS step failed: a may host is tried again without
	decided   bool // the failure is final for every pending recipient
}

func tlsName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return fmt.Sprintf("TLS-0x%04x", v)
}

// connect opens a connection to one address, reads the greeting, says
// EHLO, makes TLS as the route's policy asks, and authenticates when the
// route has credentials.
func (d *delivery) connect(ctx context.Context, tg route.Target, a netip.Addr, port int, key string, plain bool) (*conn, connectFailure) {
	host := tg.Host
	if host == "" {
		host = a.String()
	}
	relay := host + "[" + a.String() + "]:" + strconv.Itoa(port)
	fail := func(status, answer string) (*conn, connectFailure) {
		return nil, connectFailure{res: transport.Result{Status: status, Temporary: true, Answer: answer, RemoteMTA: relay}}
	}
	dctx, cancel := context.WithTimeout(ctx, d.t.o.ConnectTimeout)
	nc, err := d.t.o.Dial(dctx, "tcp", netip.AddrPortFrom(a, uint16(port)).String())
	cancel()
	if err != nil {
		return fail("4.4.1", "connect to "+relay+": "+err.Error())
	}
	if ctx.Err() != nil {
		nc.Close()
		return fail("4.4.7", "delivery cut short: "+ctx.Err().Error())
	}
	// A cancelled context reaches a blocked read through the deadline:
	// the connection's while the greeting is awaited, the client's after.
	stopGreeting := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	cl, err := smtpclient.New(nc, d.t.o.Client)
	stopGreeting()
	if err == nil {
		stop := context.AfterFunc(ctx, cl.Abort)
		defer stop()
	}
	if err != nil {
		var re *smtpclient.ReplyError
		if errors.As(err, &re) {
			r := replyResult(re.Reply, relay, "")
			r.Status, r.Temporary = "4"+r.Status[1:], true
			r.Answer = "host " + relay + " greeted us with " + re.Reply.String()
			return nil, connectFailure{res: r}
		}
		return fail("4.4.2", "conversation with "+relay+": "+err.Error())
	}
	c := &conn{cl: cl, key: key, relay: relay}
	bad := func(status, answer string) (*conn, connectFailure) {
		cl.Quit()
		return fail(status, answer)
	}
	if err := cl.Hello(); err != nil {
		cl.Close()
		return fail(helloStatus(err), "host "+relay+" refused EHLO and HELO: "+errText(err))
	}
	policy := d.policy()
	name, verify := d.verifyName(tg)
	ext := cl.Extensions()
	switch {
	case policy == conf.TLSNone || plain:
	case !ext.StartTLS && (policy == conf.TLSEncrypt || policy == conf.TLSVerify):
		return bad("4.7.4", "TLS is required, but host "+relay+" does not offer STARTTLS")
	case !ext.StartTLS:
	case verify && name == "":
		return bad("4.7.5", "a certificate cannot be verified for an address literal: "+relay)
	default:
		cfg := &tls.Config{ServerName: name, RootCAs: d.t.o.RootCAs}
		if !verify {
			// RFC 7435: opportunistic TLS is better than none, whoever the
			// certificate names.
			cfg.InsecureSkipVerify = true
		}
		if err := cl.StartTLS(cfg); err != nil {
			cl.Close()
			_, r := fail("4.7.5", "TLS with "+relay+" failed: "+errText(err))
			r.tlsFailed = true
			if d.m.RequireTLS {
				// RFC 8689 §5: what cannot go over verified TLS fails.
				r.res.Status, r.res.Temporary = "5.7.30", false
				r.res.Answer = "REQUIRETLS: " + r.res.Answer
			}
			return nil, r
		}
		c.tls = tlsName(cl.TLS().Version)
		c.verified = verify
	}
	if au := d.auth(); au != nil {
		switch {
		case c.tls == "":
			return bad("4.7.0", "credentials for "+relay+" not sent: the connection is not encrypted")
		case !cl.Extensions().HasAuth("PLAIN"):
			return bad("4.7.0", "host "+relay+" does not offer AUTH PLAIN")
		}
		if err := cl.Auth(sasl.NewPlainClient("", au.User, au.Password)); err != nil {
			var re *smtpclient.ReplyError
			if errors.As(err, &re) {
				r := replyResult(re.Reply, relay, c.tls)
				r.Status, r.Temporary = "4"+r.Status[1:], true
				r.Answer = "authentication as " + au.User + " at " + relay + " failed: " + re.Reply.String()
				cl.Quit()
				return nil, connectFailure{res: r}
			}
			cl.Close()
			return fail("4.7.0", "authentication at "+relay+" failed: "+err.Error())
		}
	}
	return c, connectFailure{}
}

func helloStatus(err error) string {
	var re *smtpclient.ReplyError
	if errors.As(err, &re) && re.Reply.Code >= 400 {
		return "4" + re.Reply.Status()[1:]
	}
	return "4.4.2"
}

func errText(err error) string {
	var re *smtpclient.ReplyError
	if errors.As(err, &re) {
		return re.Reply.String()
	}
	return err.Error()
}

// replyResult is a recipient's result from the reply that decided it.
func replyResult(r smtpclient.Reply, relay, tlsVersion string) transport.Result {
	return transport.Result{
		Status:    r.Status(),
		Temporary: r.Code/100 == 4,
		Answer:    r.String(),
		Reply:     r.Code,
		RemoteMTA: relay,
		DiagType:  "smtp",
		TLS:       tlsVersion,
	}
}
