package conf

import (
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// Route sends mail for a domain to a fixed host instead of its MX.
type Route struct {
	Domain string     // lower-cased; "*" for every domain; ".example.org" for its subdomains
	Host   string     // host name, lower-cased, or "" when Addr is set
	Addr   netip.Addr // for a literal host "[192.0.2.1]": connect there, no MX or A lookup
	Port   int        // 0: the default (25)
	Line   int
	TLS    TLSPolicy  // tls= after the host; "" means TLSMay
	Auth   *RouteAuth // auth=FILE after the host: credentials for the smarthost, or nil
}

// TLSPolicy is a route's tls= option: how much TLS the next hop must give.
type TLSPolicy string

// TLS policies of a route.
const (
	TLSMay     TLSPolicy = "may"     // STARTTLS when offered, certificate not checked (RFC 7435); plaintext if it fails
	TLSEncrypt TLSPolicy = "encrypt" // STARTTLS required, certificate not checked
	TLSVerify  TLSPolicy = "verify"  // STARTTLS required, certificate valid for the route's host name
	TLSNone    TLSPolicy = "none"    // never STARTTLS
)

// RouteAuth is what a route's auth=FILE holds: "user password" on one line.
// It is sent only over TLS.
type RouteAuth struct {
	File     string
	User     string
	Password string
}

// Routes is the routes file in order.
type Routes []Route

// ParseRoutes reads the routes file: "domain host[:port]" a line, where
// domain is a domain, ".domain" for its subdomains, or "*" for all, and
// host is a name or an address literal "[192.0.2.1]" / "[IPv6:2001:db8::1]"
// (RFC 5321 §4.1.3). This is qmail's smtproutes with a blank for a colon.
func ParseRoutes(file string, r io.Reader) (Routes, error) {
	ls, err := lines(file, r)
	if err != nil {
		return nil, err
	}
	var rs Routes
	seen := map[string]int{}
	for _, l := range ls {
		f := strings.Fields(l.text)
		if len(f) != 2 {
			return nil, lineErr(file, l.n, `want "domain host[:port]"`)
		}
		rt := Route{Line: l.n}
		switch d := f[0]; {
		case d == "*":
			rt.Domain = "*"
		case strings.HasPrefix(d, "."):
			n, err := normalizeDomain(d[1:])
			if err != nil {
				return nil, lineErr(file, l.n, "%v", err)
			}
			rt.Domain = "." + n
		default:
			n, err := normalizeDomain(d)
			if err != nil {
				return nil, lineErr(file, l.n, "%v", err)
			}
			rt.Domain = n
		}
		if prev, dup := seen[rt.Domain]; dup {
			return nil, lineErr(file, l.n, "route for %s is already on line %d", rt.Domain, prev)
		}
		seen[rt.Domain] = l.n
		if err := parseRouteHost(f[1], &rt); err != nil {
			return nil, lineErr(file, l.n, "%v", err)
		}
		rs = append(rs, rt)
	}
	return rs, nil
}

func parseRouteHost(s string, rt *Route) error {
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return fmt.Errorf("address literal %q without ']'", s)
		}
		lit := s[1:end]
		if rest := s[end+1:]; rest != "" {
			if rest[0] != ':' {
				return fmt.Errorf("junk after address literal in %q", s)
			}
			port = rest[1:]
		}
		if len(lit) > 5 && strings.EqualFold(lit[:5], "IPv6:") {
			lit = lit[5:]
		}
		a, err := netip.ParseAddr(lit)
		if err != nil || a.Zone() != "" {
			return fmt.Errorf("address literal %q: not an IP address", s)
		}
		rt.Addr = a.Unmap()
	} else {
		if i := strings.LastIndexByte(s, ':'); i >= 0 {
			host, port = s[:i], s[i+1:]
		}
		n, err := normalizeDomain(host)
		if err != nil {
			return fmt.Errorf("host: %v", err)
		}
		rt.Host = n
	}
	if port != "" || strings.HasSuffix(s, ":") {
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 {
			return fmt.Errorf("port %q is not a number from 1 to 65535", port)
		}
		rt.Port = int(p)
	}
	return nil
}

// Lookup returns the route for domain: an exact entry, else the entry of
// the nearest parent written ".parent", else "*".
func (rs Routes) Lookup(domain string) (Route, bool) {
	d, err := normalizeDomain(domain)
	if err != nil {
		d = strings.ToLower(domain)
	}
	var best *Route
	bestLen := -1
	for i := range rs {
		r := &rs[i]
		switch {
		case r.Domain == d:
			return *r, true
		case strings.HasPrefix(r.Domain, ".") && strings.HasSuffix(d, r.Domain) && len(r.Domain) > bestLen:
			best, bestLen = r, len(r.Domain)
		case r.Domain == "*" && bestLen < 0:
			best, bestLen = r, 0
		}
	}
	if best == nil {
		return Route{}, false
	}
	return *best, true
}
