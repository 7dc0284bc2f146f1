package resolver

import (
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// entry is one question's outcome: records, a CNAME chain to follow
// further, or a lookup failure.
type entry struct {
	qtype     uint16
	owner     string // where the chain ended, lower-case, no final dot
	records   []dns.RR
	authentic bool
	server    string
	hops      int    // CNAMEs followed inside this answer
	next      string // FQDN to ask next when the chain ended without records
	kind      error  // a lookup failure's kind, or nil
	rcode     int
	err       error
	ttl       time.Duration
	expires   time.Time
}

func (e *entry) answer() (*Answer, *pending, error) {
	switch {
	case e.kind != nil:
		return nil, nil, &Error{Kind: e.kind, Name: e.owner, Type: e.qtype, Rcode: e.rcode, Server: e.server, Err: e.err}
	case e.next != "":
		return nil, &pending{name: e.next, hops: e.hops, authentic: e.authentic}, nil
	}
	// A copy of the slice: callers may sort or trim what they get.
	return &Answer{Name: e.owner, Records: append([]dns.RR(nil), e.records...), Authentic: e.authentic}, nil, nil
}

type cacheKey struct {
	name  string // lower-case FQDN
	qtype uint16
}

// cache keeps answers until their TTL runs out. Temporary failures are
// never kept: the next question goes to the servers again.
type cache struct {
	mu   sync.Mutex
	size int
	m    map[cacheKey]*entry
}

func newCache(size int) *cache { return &cache{size: size, m: make(map[cacheKey]*entry)} }

func (c *cache) get(k cacheKey, now time.Time) (*entry, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return nil, false
	}
	if !now.Before(e.expires) {
		delete(c.m, k)
		return nil, false
	}
	return e, true
}

func (c *cache) put(k cacheKey, e *entry, now time.Time) {
	e.qtype = k.qtype
	if c == nil || e.kind == ErrTemporary || e.ttl <= 0 {
		return
	}
	limit := maxPositiveTTL
	if e.kind != nil {
		limit = maxNegativeTTL
	}
	e.expires = now.Add(min(e.ttl, limit))
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.size {
		c.evict(now)
	}
	c.m[k] = e
}

// evict makes room: the expired entries go, and when none had expired,
// an eighth of the others (Go's map order is random enough for a cache
// this small; an LRU list would cost a lock-held write on every hit).
func (c *cache) evict(now time.Time) {
	for k, e := range c.m {
		if !now.Before(e.expires) {
			delete(c.m, k)
		}
	}
	drop := len(c.m) - c.size + 1
	if drop <= 0 {
		return
	}
	drop = max(drop, c.size/8)
	for k := range c.m {
		if drop == 0 {
			break
		}
		delete(c.m, k)
		drop--
	}
}

func (c *cache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

func netipParse(s string) (string, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return "", err
	}
	return a.String(), nil
}
