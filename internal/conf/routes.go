package conf

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tern-mail/tern/internal/sysexit"
)

// Route sends mail for a domain to a fixed host instead of its MX.
type Route struct {
	Domain string     // lower-cased; "*" for every domain; ".example.org" for its subdomains
	Host   string     // host name, lower-cased, or "" when Addr is set
	Addr   netip.Addr // for a literal host "[192.0.2.1]": connect there, no MX or A lookup
	Port   int        // 0: the default, tern-queue's --smtp-port (25)
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

// String names the file only, so that a route printed into a log never
// shows the password.
func (a *RouteAuth) String() string {
	if a == nil {
		return "<nil>"
	}
	return "auth=" + a.File
}

// GoString keeps the password out of %#v as well.
func (a *RouteAuth) GoString() string { return a.String() }

// LogValue keeps the password out of slog.
func (a *RouteAuth) LogValue() slog.Value { return slog.StringValue(a.String()) }

// Routes is the routes file in order.
type Routes []Route

// ParseRoutes reads the routes file: "domain host[:port] [option...]" a
// line, where domain is a domain, ".domain" for its subdomains, or "*" for
// all, and host is a name or an address literal "[192.0.2.1]" /
// "[IPv6:2001:db8::1]" (RFC 5321 §4.1.3). This is qmail's smtproutes with
// a blank for a colon. The options are tls=may|encrypt|verify|none and
// auth=FILE; FILE is taken from the routes file's directory when it is not
// absolute, and is not read here (see LoadRouteAuth).
func ParseRoutes(file string, r io.Reader) (Routes, error) {
	ls, err := lines(file, r)
	if err != nil {
		return nil, err
	}
	var rs Routes
	seen := map[string]int{}
	for _, l := range ls {
		f := strings.Fields(l.text)
		if len(f) < 2 {
			return nil, lineErr(file, l.n, `want "domain host[:port] [tls=may|encrypt|verify|none] [auth=FILE]"`)
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
		if err := parseRouteOptions(file, f[2:], &rt); err != nil {
			return nil, lineErr(file, l.n, "%v", err)
		}
		rs = append(rs, rt)
	}
	return rs, nil
}

func parseRouteOptions(file string, opts []string, rt *Route) error {
	for _, o := range opts {
		key, val, ok := strings.Cut(o, "=")
		if !ok || val == "" {
			return fmt.Errorf("option %q: want tls=POLICY or auth=FILE", o)
		}
		switch key {
		case "tls":
			if rt.TLS != "" {
				return errors.New("tls= given twice")
			}
			switch p := TLSPolicy(val); p {
			case TLSMay, TLSEncrypt, TLSVerify, TLSNone:
				rt.TLS = p
			default:
				return fmt.Errorf("tls=%s: want may, encrypt, verify or none", val)
			}
		case "auth":
			if rt.Auth != nil {
				return errors.New("auth= given twice")
			}
			path := val
			if !filepath.IsAbs(path) {
				path = filepath.Join(filepath.Dir(file), path)
			}
			rt.Auth = &RouteAuth{File: path}
		default:
			return fmt.Errorf("unknown option %q: the options are tls= and auth=", key)
		}
	}
	if rt.Auth != nil && rt.TLS == TLSNone {
		return errors.New("auth= with tls=none: credentials are never sent without TLS")
	}
	return nil
}

// maxAuthFile bounds an auth file: one line of credentials, comments.
const maxAuthFile = 16 << 10

// LoadRouteAuth reads the credentials of every route with auth=FILE. The
// file must be readable by its owner alone (mode 0600 or 0400), as ssh
// wants of a private key: an error otherwise, named by the routes file's
// line. Errors never hold the password.
func (rs Routes) LoadRouteAuth(routesFile string) error {
	for i := range rs {
		rt := &rs[i]
		if rt.Auth == nil {
			continue
		}
		if err := loadRouteAuth(rt.Auth); err != nil {
			var le *LineError
			if errors.As(err, &le) {
				return sysexit.Wrap(sysexit.Config, err)
			}
			return lineErr(routesFile, rt.Line, "%v", err)
		}
	}
	return nil
}

func loadRouteAuth(a *RouteAuth) error {
	f, err := os.Open(a.File)
	if err != nil {
		return fmt.Errorf("auth file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("auth file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("auth file %s is not a regular file", a.File)
	}
	if st.Size() > maxAuthFile {
		return fmt.Errorf("auth file %s is larger than %d bytes: it holds one line", a.File, maxAuthFile)
	}
	if perm := st.Mode().Perm(); perm&0o044 != 0 {
		return fmt.Errorf("auth file %s is readable by others than its owner (mode %04o): chmod 600 %s", a.File, perm, a.File)
	}
	ls, err := lines(a.File, io.LimitReader(f, maxAuthFile))
	if err != nil {
		return err
	}
	switch {
	case len(ls) == 0:
		return fmt.Errorf(`auth file %s holds no "user password" line`, a.File)
	case len(ls) > 1:
		return lineErr(a.File, ls[1].n, `one "user password" line only (the first is on line %d)`, ls[0].n)
	}
	// The password runs to the end of the line: it may hold blanks, but
	// not at either end (lines trims them).
	text := ls[0].text
	i := strings.IndexAny(text, " \t")
	if i <= 0 || strings.TrimLeft(text[i:], " \t") == "" {
		return lineErr(a.File, ls[0].n, `want "user password"`)
	}
	user, pass := text[:i], strings.TrimLeft(text[i:], " \t")
	if strings.ContainsFunc(user+pass, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return lineErr(a.File, ls[0].n, "user or password holds a control character")
	}
	a.User, a.Password = user, pass
	return nil
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
