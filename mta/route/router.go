package route

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tern-mail/tern/internal/address"
	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/internal/resolver"
)

// DefaultPort is SMTP's well-known port: where MX hosts are reached
// unless --smtp-port says otherwise.
const DefaultPort = 25

// MaxMX bounds the MX hosts of one domain that are looked up and tried,
// best first. Dropping the worse ones never hides a loop: RFC 5321 §5.1
// throws away our own entry and everything worse than it anyway.
const MaxMX = 16

// MaxAddrs bounds the addresses kept for one host, after ordering (so
// both families stay): a hostile DNS answer can hold thousands, and no
// client tries more than a few (Postfix's smtp_mx_address_limit is 5).
const MaxAddrs = 16

// Router finds the targets of a domain. Its fields are set once; it is
// safe for concurrent use, and used by pointer. Make a new one (it is
// cheap) when the control directory is read again and Hostname changes.
type Router struct {
	Resolver resolver.Resolver
	// Hostname is this host's name (the control directory's hostname):
	// an MX or route host of that name is this host.
	Hostname string
	// SelfAddrs returns this host's addresses: an MX host with one of
	// them is this host. Nil means the addresses of the machine's
	// interfaces, read again after SelfTTL (InterfaceAddrsEvery, one
	// list per Router: a caller making a Router per lookup passes its
	// own InterfaceAddrsEvery to share one).
	SelfAddrs func() ([]netip.Addr, error)
	// Port is where MX hosts, and routes without a port, are reached;
	// 0 means DefaultPort.
	Port int
	// Shuffle orders MX hosts of equal preference; nil means at random
	// (math/rand/v2's Shuffle).
	Shuffle func(n int, swap func(i, j int))

	selfOnce    sync.Once
	selfDefault func() ([]netip.Addr, error)
}

// SelfTTL is how long the interface addresses are used before they are
// read again: listing them costs a netlink round trip, as much as a
// routing decision from cached DNS answers; an address added to the
// machine is known within this time.
const SelfTTL = 5 * time.Second

type ifaceAddrs struct {
	addrs []netip.Addr
	at    time.Time
}

// InterfaceAddrsEvery returns a SelfAddrs that lists the machine's
// interface addresses (InterfaceAddrs) at most once every ttl. It is safe
// for concurrent use.
func InterfaceAddrsEvery(ttl time.Duration) func() ([]netip.Addr, error) {
	var last atomic.Pointer[ifaceAddrs]
	return func() ([]netip.Addr, error) {
		if c := last.Load(); c != nil && time.Since(c.at) < ttl {
			return slices.Clone(c.addrs), nil
		}
		as, err := InterfaceAddrs()
		if err != nil {
			return nil, err
		}
		last.Store(&ifaceAddrs{addrs: as, at: time.Now()})
		return slices.Clone(as), nil
	}
}

// InterfaceAddrs returns the addresses of the machine's network
// interfaces: the default SelfAddrs.
func InterfaceAddrs() ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list this host's addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out, nil
}

func (r *Router) port() int {
	if r.Port > 0 {
		return r.Port
	}
	return DefaultPort
}

// Targets returns the hosts to try, in order, for mail to domain: rt's
// host when a route applies (rt != nil), else the domain's MX hosts (RFC
// 5321 §5.1). The error, when not nil, is an *Error that decides every
// recipient of the domain at once.
//
// The rules, written for tern-queue(8):
//   - A domain in Unicode is looked up by its A-labels (RFC 5891 §5,
//     x/net/idna's Lookup profile); an address literal ([192.0.2.1],
//     [IPv6:2001:db8::1]) is connected to as it is.
//   - A route's host is looked up for its addresses only, never for MX,
//     as qmail's smtproutes and Postfix's [host] do: the routes file
//     names a host, not a domain. An address literal needs no lookup. A
//     route host that does not resolve defers the mail (4.4.4, or 4.4.3
//     when the DNS failed): it is the administrator's to fix, and
//     bouncing would punish the sender for it.
//   - Otherwise the MX records, lowest preference first, equal ones in
//     random order, the first MaxMX hosts; a host listed twice counts at
//     its best preference. None (NODATA): the domain itself is the one host
//     (the implicit MX). A null MX "0 ." (RFC 7505): 5.1.10, permanent.
//     No such domain: 5.1.2, permanent. The DNS failing: 4.4.3,
//     temporary.
//   - An MX host whose name has no address (lame) is left out; one whose
//     lookup failed for now stays in the list with Err set. When no
//     host with an address is left: 4.4.3 if a lookup failed, else 4.4.4,
//     both temporary.
//   - An MX host that is this host (named Hostname, or with one of
//     SelfAddrs, or an unspecified address 0.0.0.0 or ::) ends the list:
//     it and every MX as bad or worse are dropped (RFC 5321 §5.1), so a
//     backup MX relays to the better ones. If none is better, the mail
//     would loop: 5.4.6, permanent, as Postfix says "mail for X loops
//     back to myself". A route or an implicit MX that is this host
//     loops the same way, except a route to another port than Port (a
//     content filter on [127.0.0.1]:10025 is not a loop).
//   - Each host's addresses come IPv6 first, then IPv4, alternating
//     (RFC 8305 §4), in the order the DNS gave within a family; an
//     address already listed for a better host is not listed again;
//     MaxAddrs at most.
func (r *Router) Targets(ctx context.Context, domain string, rt *conf.Route) ([]Target, error) {
	if rt != nil {
		return r.routeTargets(ctx, domain, rt)
	}
	if strings.HasPrefix(domain, "[") {
		a, err := parseLiteral(domain)
		if err != nil {
			return nil, &Error{Status: "5.1.2", Msg: fmt.Sprintf("bad destination address literal %q: %v", domain, err)}
		}
		if err := r.checkSelf(domain, "", []netip.Addr{a}); err != nil {
			return nil, err
		}
		return []Target{{Addrs: []netip.Addr{a}, Port: r.port()}}, nil
	}
	d, err := LookupName(domain)
	if err != nil {
		return nil, &Error{Status: "5.1.2", Msg: fmt.Sprintf("bad destination domain %q: %v", domain, err)}
	}
	mxs, _, err := resolver.LookupMX(ctx, r.Resolver, d)
	switch {
	case errors.Is(err, resolver.ErrNoData):
		return r.implicitMX(ctx, d)
	case err != nil:
		return nil, dnsError(d, err)
	}
	return r.mxTargets(ctx, d, mxs)
}

// LookupName returns domain as DNS is asked for it: A-labels, lower-case,
// without the final dot (address.ASCIIDomain), checked for what a query name
// may not hold.
func LookupName(domain string) (string, error) {
	d, err := address.ASCIIDomain(domain)
	if err != nil {
		return "", err
	}
	if len(d) == 0 || len(d) > 253 {
		return "", errors.New("empty or longer than 253 bytes")
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return "", errors.New("empty label or one longer than 63 bytes")
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; c <= ' ' || c >= 0x7f || c == '\\' || c == '[' || c == ']' {
				return "", fmt.Errorf("label %q holds %q", label, c)
			}
		}
	}
	return d, nil
}

// parseLiteral reads an address literal, "[192.0.2.1]" or
// "[IPv6:2001:db8::1]" (RFC 5321 §4.1.3).
func parseLiteral(s string) (netip.Addr, error) {
	if len(s) < 3 || s[0] != '[' || s[len(s)-1] != ']' {
		return netip.Addr{}, errors.New("want [address]")
	}
	lit := s[1 : len(s)-1]
	v6 := len(lit) > 5 && strings.EqualFold(lit[:5], "IPv6:")
	if v6 {
		lit = lit[5:]
	}
	a, err := netip.ParseAddr(lit)
	if err != nil || a.Zone() != "" || a.Is6() != v6 {
		return netip.Addr{}, errors.New("not an IPv4 address, or IPv6: and an IPv6 address")
	}
	return a, nil
}

func (r *Router) routeTargets(ctx context.Context, domain string, rt *conf.Route) ([]Target, error) {
	port := r.port()
	if rt.Port > 0 {
		port = rt.Port
	}
	// A route to another port of this host is a filter or a second
	// server, not our own SMTP: only the SMTP port can loop.
	checkSelf := func(host string, addrs []netip.Addr) error {
		if port != r.port() {
			return nil
		}
		return r.checkSelf(domain, host, addrs)
	}
	if rt.Addr.IsValid() {
		if err := checkSelf("", []netip.Addr{rt.Addr}); err != nil {
			return nil, err
		}
		return []Target{{Addrs: []netip.Addr{rt.Addr}, Port: port}}, nil
	}
	addrs, _, err := resolver.LookupIP(ctx, r.Resolver, rt.Host)
	switch {
	case resolver.IsTemporary(err):
		return nil, dnsError(rt.Host, err)
	case err != nil:
		return nil, &Error{Status: "4.4.4", Temporary: true, Msg: fmt.Sprintf("route host %s for %s has no address (%v): fix line %d of the routes file", rt.Host, domain, err, rt.Line)}
	}
	if err := checkSelf(rt.Host, addrs); err != nil {
		return nil, err
	}
	return []Target{{Host: rt.Host, Addrs: order(addrs, nil), Port: port}}, nil
}

// implicitMX is RFC 5321 §5.1's rule for a domain without MX records: the
// domain itself is the host.
func (r *Router) implicitMX(ctx context.Context, domain string) ([]Target, error) {
	addrs, _, err := resolver.LookupIP(ctx, r.Resolver, domain)
	switch {
	case errors.Is(err, resolver.ErrNoData):
		return nil, &Error{Status: "5.4.4", Msg: fmt.Sprintf("%s has no MX record and no address: no host to send to", domain)}
	case err != nil:
		return nil, dnsError(domain, err)
	}
	if err := r.checkSelf(domain, domain, addrs); err != nil {
		return nil, err
	}
	return []Target{{Host: domain, Addrs: order(addrs, nil), Port: r.port()}}, nil
}

// mx is one MX host on its way to a Target.
type mx struct {
	resolver.MX
	addrs []netip.Addr
	err   error
}

func (r *Router) mxTargets(ctx context.Context, domain string, records []resolver.MX) ([]Target, error) {
	// RFC 7505 §3: a null MX is the domain's only MX record; one among
	// others is ignored as the unusable host it is.
	var hosts []mx
	for _, rec := range records {
		if rec.Host != "" {
			hosts = append(hosts, mx{MX: rec})
		}
	}
	if len(hosts) == 0 {
		return nil, &Error{Status: "5.1.10", Msg: fmt.Sprintf("%s accepts no mail: it publishes a null MX (RFC 7505)", domain)}
	}
	// RFC 5321 §5.1: by preference, equal ones in random order to
	// spread the load.
	shuffle := r.Shuffle
	if shuffle == nil {
		shuffle = rand.Shuffle
	}
	shuffle(len(hosts), func(i, j int) { hosts[i], hosts[j] = hosts[j], hosts[i] })
	slices.SortStableFunc(hosts, func(a, b mx) int { return cmp.Compare(a.Pref, b.Pref) })
	// A host listed twice is tried at its best preference only.
	kept := hosts[:0]
	for _, h := range hosts {
		if len(kept) == MaxMX {
			break
		}
		if !slices.ContainsFunc(kept, func(k mx) bool { return k.Host == h.Host }) {
			kept = append(kept, h)
		}
	}
	hosts = kept
	var wg sync.WaitGroup
	for i := range hosts {
		wg.Go(func() {
			hosts[i].addrs, _, hosts[i].err = resolver.LookupIP(ctx, r.Resolver, hosts[i].Host)
		})
	}
	wg.Wait()

	self, err := r.selfSet()
	if err != nil {
		return nil, &Error{Status: "4.4.3", Temporary: true, Msg: err.Error()}
	}
	for i, h := range hosts {
		if r.isHostname(h.Host) || slices.ContainsFunc(h.addrs, self.has) {
			// Everything as bad as our own entry, or worse, goes.
			n := i
			for n > 0 && hosts[n-1].Pref == h.Pref {
				n--
			}
			if n == 0 {
				return nil, loopError(domain, h.Host)
			}
			hosts = hosts[:n]
			break
		}
	}

	var out []Target
	var seen []netip.Addr
	failed := false
	for _, h := range hosts {
		switch {
		case h.err != nil && resolver.IsTemporary(h.err):
			failed = true
			out = append(out, Target{Host: h.Host, Port: r.port(), Err: dnsError(h.Host, h.err)})
			continue
		case h.err != nil:
			continue // lame: the name has no address
		}
		addrs := order(h.addrs, seen)
		if len(addrs) == 0 {
			continue
		}
		seen = append(seen, addrs...)
		out = append(out, Target{Host: h.Host, Addrs: addrs, Port: r.port()})
	}
	if len(seen) == 0 {
		if failed {
			return nil, &Error{Status: "4.4.3", Temporary: true, Msg: fmt.Sprintf("no MX host of %s could be looked up: %v", domain, out[0].Err)}
		}
		return nil, &Error{Status: "4.4.4", Temporary: true, Msg: fmt.Sprintf("no MX host of %s has an address", domain)}
	}
	return out, nil
}

// order puts IPv6 and IPv4 addresses in alternation, IPv6 first, each in
// the order given, leaving out those in skip, MaxAddrs at most.
//
// Postfix's smtp_address_preference=any picks the first family at
// random; this alternation instead tries both families early on every
// host, so a host whose IPv6 path is broken costs one failed connection,
// and the order is the same on every try, which a log reader can follow.
func order(addrs, skip []netip.Addr) []netip.Addr {
	var v6, v4 []netip.Addr
	for _, a := range addrs {
		if len(v6) >= MaxAddrs && len(v4) >= MaxAddrs {
			break
		}
		switch {
		case slices.Contains(skip, a):
		case a.Is4():
			v4 = append(v4, a)
		default:
			v6 = append(v6, a)
		}
	}
	out := make([]netip.Addr, 0, min(len(v6)+len(v4), MaxAddrs))
	for i := 0; (i < len(v6) || i < len(v4)) && len(out) < MaxAddrs; i++ {
		if i < len(v6) {
			out = append(out, v6[i])
		}
		if i < len(v4) && len(out) < MaxAddrs {
			out = append(out, v4[i])
		}
	}
	return out
}

// selfAddrs is this host's address set.
type selfAddrs []netip.Addr

// has reports whether a is one of this host's addresses. An unspecified
// address (0.0.0.0, ::) reaches this host too when connected to.
func (s selfAddrs) has(a netip.Addr) bool {
	return a.IsUnspecified() || slices.Contains(s, a.Unmap())
}

func (r *Router) selfSet() (selfAddrs, error) {
	f := r.SelfAddrs
	if f == nil {
		r.selfOnce.Do(func() { r.selfDefault = InterfaceAddrsEvery(SelfTTL) })
		f = r.selfDefault
	}
	as, err := f()
	if err != nil {
		return nil, err
	}
	for i := range as {
		as[i] = as[i].Unmap()
	}
	return as, nil
}

// checkSelf fails with a loop when host or one of addrs is this host.
func (r *Router) checkSelf(domain, host string, addrs []netip.Addr) error {
	self, err := r.selfSet()
	if err != nil {
		return &Error{Status: "4.4.3", Temporary: true, Msg: err.Error()}
	}
	if r.isHostname(host) || slices.ContainsFunc(addrs, self.has) {
		return loopError(domain, host)
	}
	return nil
}

func (r *Router) isHostname(host string) bool {
	h := strings.TrimSuffix(r.Hostname, ".")
	return host != "" && h != "" && strings.EqualFold(host, h)
}

func loopError(domain, host string) error {
	if host == "" {
		host = "the address"
	}
	return &Error{Status: "5.4.6", Msg: fmt.Sprintf("mail for %s loops back to myself: %s is this host", domain, host)}
}

// dnsError turns a failed lookup for name into the routing failure it
// decides: the name does not exist (5.1.2), or the DNS failed (4.4.3).
func dnsError(name string, err error) error {
	switch {
	case errors.Is(err, resolver.ErrNXDomain):
		return &Error{Status: "5.1.2", Msg: fmt.Sprintf("domain %s does not exist (NXDOMAIN)", name)}
	case errors.Is(err, resolver.ErrBadName):
		return &Error{Status: "5.1.2", Msg: fmt.Sprintf("bad destination domain: %v", err)}
	case errors.Is(err, resolver.ErrNoData):
		return &Error{Status: "5.4.4", Msg: fmt.Sprintf("%s: %v", name, err)}
	}
	return &Error{Status: "4.4.3", Temporary: true, Msg: fmt.Sprintf("DNS failure, will try again: %v", err)}
}
