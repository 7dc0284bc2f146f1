package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// DefaultResolvConf is where the system's name servers are listed.
const DefaultResolvConf = "/etc/resolv.conf"

const (
	// udpSize is the EDNS0 buffer size we offer: the size the DNS Flag
	// Day 2020 settled on, which avoids IP fragmentation; a larger answer
	// comes truncated and is asked for again over TCP (RFC 7766 §5).
	udpSize = 1232
	// maxCNAMEs bounds a CNAME chain (RFC 1034 §3.6.2 wants a bound; BIND
	// and Unbound stop near here).
	maxCNAMEs = 8
	// Cache bounds: a removed record is trusted for at most an hour,
	// a negative answer for five minutes (so a domain being set up is
	// not refused for long, RFC 2308 §5 allows any cap).
	maxPositiveTTL = time.Hour
	maxNegativeTTL = 5 * time.Minute
	// DefaultCacheSize is the number of answers kept when Config says 0.
	DefaultCacheSize = 4096
)

// Config says where and how a Client asks.
type Config struct {
	// Servers are "ADDR:PORT" (see ParseServer); when empty, the
	// nameserver lines of ResolvConf, on port 53.
	Servers    []string
	ResolvConf string // "" means DefaultResolvConf
	// Timeout is one query to one server; 0 means resolv.conf's
	// "options timeout:" (5 s by default).
	Timeout time.Duration
	// Attempts is how many rounds over the servers one question gets;
	// 0 means resolv.conf's "options attempts:" (2 by default).
	Attempts int
	// Total bounds one Query, CNAMEs and retries included; 0 means 30 s.
	Total time.Duration
	// CacheSize is the number of answers kept; 0 means DefaultCacheSize,
	// a negative number keeps none.
	CacheSize int
	Now       func() time.Time // nil means time.Now
}

// Client is a DNS stub resolver: it asks recursive servers, over UDP with
// TCP when an answer is truncated, and keeps answers for their TTL. It is
// safe for concurrent use.
type Client struct {
	servers  []string
	timeout  time.Duration
	attempts int
	total    time.Duration
	now      func() time.Time
	cache    *cache // nil: no cache

	mu       sync.Mutex
	inflight map[cacheKey]*flight
}

// flight is a question on its way to the servers: the same question asked
// meanwhile waits for its answer instead of going out again, so that a
// burst of mail to one new domain asks for its MX once. (x/sync's
// singleflight does this too, but is not a requirement of ours for a
// dozen lines.)
type flight struct {
	done chan struct{}
	e    *entry
	err  error
}

// ParseServer reads a --dns value: "ADDR:PORT", "[V6ADDR]:PORT", or a bare
// address meaning port 53. Names are refused: finding the DNS server
// must not need DNS.
func ParseServer(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		host, port = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), "53"
	}
	addr, perr := netipParse(host)
	if perr != nil {
		return "", fmt.Errorf("DNS server %q: want ADDR:PORT with an IP address, as 127.0.0.1:53 or [::1]:53", s)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return "", fmt.Errorf("DNS server %q: port %q is not a number from 1 to 65535", s, port)
	}
	return net.JoinHostPort(addr, strconv.FormatUint(p, 10)), nil
}

// New returns a Client for c.
func New(c Config) (*Client, error) {
	cl := &Client{timeout: c.Timeout, attempts: c.Attempts, total: c.Total, now: c.Now, inflight: map[cacheKey]*flight{}}
	if cl.now == nil {
		cl.now = time.Now
	}
	for _, s := range c.Servers {
		addr, err := ParseServer(s)
		if err != nil {
			return nil, err
		}
		cl.servers = append(cl.servers, addr)
	}
	if len(cl.servers) == 0 || cl.timeout == 0 || cl.attempts == 0 {
		path := c.ResolvConf
		if path == "" {
			path = DefaultResolvConf
		}
		rc, err := dns.ClientConfigFromFile(path)
		if err != nil && len(cl.servers) == 0 {
			return nil, fmt.Errorf("read name servers: %w (name a DNS server with --dns ADDR:PORT)", err)
		}
		if err == nil {
			if len(cl.servers) == 0 {
				for _, s := range rc.Servers {
					addr, err := ParseServer(net.JoinHostPort(s, rc.Port))
					if err != nil {
						return nil, fmt.Errorf("%s: nameserver %s: %w", path, s, err)
					}
					cl.servers = append(cl.servers, addr)
				}
				if len(cl.servers) == 0 {
					return nil, fmt.Errorf("%s names no nameserver (name a DNS server with --dns ADDR:PORT)", path)
				}
			}
			if cl.timeout == 0 {
				cl.timeout = time.Duration(rc.Timeout) * time.Second
			}
			if cl.attempts == 0 {
				cl.attempts = rc.Attempts
			}
		}
	}
	if cl.timeout <= 0 {
		cl.timeout = 5 * time.Second
	}
	if cl.attempts <= 0 {
		cl.attempts = 2
	}
	if cl.total <= 0 {
		cl.total = 30 * time.Second
	}
	switch {
	case c.CacheSize == 0:
		cl.cache = newCache(DefaultCacheSize)
	case c.CacheSize > 0:
		cl.cache = newCache(c.CacheSize)
	}
	return cl, nil
}

// Servers returns the servers asked, in order.
func (c *Client) Servers() []string { return append([]string(nil), c.servers...) }

// Query asks for name's records of type qtype, following CNAMEs.
func (c *Client) Query(ctx context.Context, name string, qtype uint16) (*Answer, error) {
	fq, err := checkName(name, qtype)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.total)
	defer cancel()
	authentic := true
	cur := fq
	for hops := 0; ; {
		ans, next, err := c.step(ctx, cur, qtype)
		if err != nil {
			return nil, err
		}
		if ans != nil {
			ans.Authentic = ans.Authentic && authentic
			return ans, nil
		}
		// The answer ended in a CNAME whose target it did not hold:
		// ask for the target ourselves (RFC 1034 §5.3.3).
		authentic = authentic && next.authentic
		hops += next.hops
		if hops > maxCNAMEs {
			return nil, &Error{Kind: ErrTemporary, Name: trimDot(fq), Type: qtype, Rcode: -1, Err: fmt.Errorf("CNAME chain longer than %d", maxCNAMEs)}
		}
		cur = next.name
	}
}

// pending is where a CNAME chain left off.
type pending struct {
	name      string
	hops      int
	authentic bool
}

// step answers one question from the cache or a server: the records, or
// the name a CNAME chain leads to when the answer stops there.
func (c *Client) step(ctx context.Context, name string, qtype uint16) (*Answer, *pending, error) {
	key := cacheKey{name, qtype}
	if e, ok := c.cache.get(key, c.now()); ok {
		return e.answer()
	}
	c.mu.Lock()
	if f, ok := c.inflight[key]; ok {
		c.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, nil, &Error{Kind: ErrTemporary, Name: trimDot(name), Type: qtype, Rcode: -1, Err: ctx.Err()}
		}
		if f.err != nil {
			return nil, nil, f.err
		}
		return f.e.answer()
	}
	f := &flight{done: make(chan struct{})}
	c.inflight[key] = f
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.inflight, key)
		c.mu.Unlock()
		close(f.done)
	}()
	m, server, err := c.exchange(ctx, name, qtype)
	if err != nil {
		f.err = err
		return nil, nil, err
	}
	f.e = interpret(m, name, qtype, server)
	c.cache.put(key, f.e, c.now())
	return f.e.answer()
}

// interpret reads a response to (name, qtype) into a cache entry.
func interpret(m *dns.Msg, name string, qtype uint16, server string) *entry {
	e := &entry{authentic: m.AuthenticatedData, server: server}
	// Follow the chain inside the answer section; RFC 6604 §2.1: the
	// RCODE speaks of the last name of the chain.
	cur := name
	ttl := uint32(1<<31 - 1)
	for {
		var recs []dns.RR
		var cname *dns.CNAME
		for _, rr := range m.Answer {
			h := rr.Header()
			if h.Class != dns.ClassINET || !strings.EqualFold(h.Name, cur) {
				continue
			}
			switch {
			case h.Rrtype == qtype:
				recs = append(recs, rr)
			case h.Rrtype == dns.TypeCNAME && cname == nil:
				cname = rr.(*dns.CNAME)
			}
		}
		if len(recs) > 0 {
			for _, rr := range recs {
				ttl = min(ttl, rr.Header().Ttl)
			}
			e.records, e.owner, e.ttl = recs, trimDot(cur), time.Duration(ttl)*time.Second
			return e
		}
		if cname == nil || e.hops >= maxCNAMEs {
			break
		}
		ttl = min(ttl, cname.Hdr.Ttl)
		cur = dns.Fqdn(strings.ToLower(cname.Target))
		e.hops++
	}
	e.owner = trimDot(cur)
	e.rcode = m.Rcode
	switch {
	case m.Rcode == dns.RcodeNameError:
		e.kind = ErrNXDomain
	case e.hops > 0 && e.hops < maxCNAMEs:
		// NOERROR and a chain without its end: the rest is ours to ask.
		e.next = cur
		e.ttl = time.Duration(ttl) * time.Second
		return e
	case e.hops >= maxCNAMEs:
		e.kind = ErrTemporary
		e.err = fmt.Errorf("CNAME chain longer than %d", maxCNAMEs)
		return e
	case isReferral(m):
		e.kind = ErrTemporary
		e.err = errors.New("a referral, not an answer: the server does not recurse; name a recursive resolver")
		return e
	default:
		e.kind = ErrNoData
	}
	// RFC 2308 §5: a negative answer lives for the SOA's TTL or its
	// MINIMUM field, whichever is less; without a SOA it is not kept.
	for _, rr := range m.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			e.ttl = time.Duration(min(soa.Hdr.Ttl, soa.Minttl, ttl)) * time.Second
			break
		}
	}
	return e
}

// isReferral tells a referral from NODATA (RFC 2308 §2.2: NODATA has a
// SOA in the authority section, or no NS there). A server that answers
// with referrals is an authoritative one, not a resolver: taking its empty
// answer for NODATA would make a domain's MX records vanish.
func isReferral(m *dns.Msg) bool {
	ns := false
	for _, rr := range m.Ns {
		switch rr.Header().Rrtype {
		case dns.TypeSOA:
			return false
		case dns.TypeNS:
			ns = true
		}
	}
	return ns
}

// exchange asks the servers in turn, for the configured rounds, until one
// gives an answer that is NOERROR or NXDOMAIN. Any other RCODE (SERVFAIL,
// REFUSED...) sends the question to the next server, as the C library's
// resolver does.
func (c *Client) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, string, error) {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.RecursionDesired = true
	// RFC 6840 §5.7: a validating resolver sets AD in its answer when
	// the query had AD set; DO would bring RRSIGs we do not check.
	q.AuthenticatedData = true
	q.SetEdns0(udpSize, false)
	last := &Error{Kind: ErrTemporary, Name: trimDot(name), Type: qtype, Rcode: -1}
	for round := 0; round < c.attempts; round++ {
		for _, server := range c.servers {
			if err := ctx.Err(); err != nil {
				if last.Err == nil {
					last.Err = err
				}
				return nil, "", last
			}
			m, err := c.exchangeOne(ctx, q, server)
			if err != nil {
				last.Rcode, last.Server, last.Err = -1, server, err
				continue
			}
			if m.Rcode == dns.RcodeSuccess || m.Rcode == dns.RcodeNameError {
				return m, server, nil
			}
			last.Rcode, last.Server, last.Err = m.Rcode, server, nil
		}
	}
	return nil, "", last
}

// errTruncated is a TCP answer still marked truncated: nothing more can
// be had.
var errTruncated = errors.New("answer truncated over TCP")

// exchangeOne asks one server once: over UDP, and again over TCP when the
// answer comes truncated (RFC 1035 §4.2.1, RFC 7766 §5).
func (c *Client) exchangeOne(ctx context.Context, q *dns.Msg, server string) (*dns.Msg, error) {
	q = q.Copy()
	q.Id = dns.Id()
	udp := &dns.Client{Net: "udp", Timeout: c.timeout, UDPSize: udpSize}
	m, _, err := udp.ExchangeContext(ctx, q, server)
	if m != nil && m.Truncated {
		tcp := &dns.Client{Net: "tcp", Timeout: c.timeout}
		m, _, err = tcp.ExchangeContext(ctx, q, server)
		if err == nil && m.Truncated {
			return nil, errTruncated
		}
	}
	if err != nil {
		return nil, err
	}
	// The ID is checked by the library; a spoofed or stray answer to
	// another question is refused here.
	if !m.Response || len(m.Question) != 1 || !strings.EqualFold(m.Question[0].Name, q.Question[0].Name) ||
		m.Question[0].Qtype != q.Question[0].Qtype {
		return nil, errors.New("answer does not match the question")
	}
	return m, nil
}
