// Package resolver is tern's one DNS stub resolver, over
// github.com/miekg/dns: tern-queue's MX routing uses it now, and SPF, DKIM,
// DMARC, MTA-STS and DANE are to use it later.
//
// Why it is its own and not net.Resolver: mail must tell "no such domain"
// (bounce now) from "no records of that type" (try the next rule) from
// "the DNS is broken" (try again later), and the standard library says
// the last two only in English text; DANE needs the AD bit, which
// net.Resolver never shows; and tests point tern at a DNS server of their
// own (--dns ADDR:PORT), which the standard library can only do through a
// dialer hook that keeps its own retry and search-domain rules.
//
// A Resolver answers one question (a name and a type) with the records of
// that type, after following CNAMEs (RFC 1034 §3.6.2). The Lookup
// functions give the typed views callers want (MX, addresses, TXT, PTR,
// TLSA) over any Resolver, so tests and callers can replace the resolver
// by anything with a Query method.
package resolver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// Resolver answers DNS questions. Name is a domain name in ASCII (A-labels),
// with or without the final dot, in any case.
type Resolver interface {
	Query(ctx context.Context, name string, qtype uint16) (*Answer, error)
}

// Answer is the records of one type for one name.
type Answer struct {
	// Name is the owner of Records: the name asked for after any CNAMEs,
	// lower-case, without the final dot.
	Name    string
	Records []dns.RR // all of the type asked for; never empty
	// Authentic is set when every response that led to Records had the
	// AD bit (RFC 4035 §3.2.3): the resolver validated them with DNSSEC.
	// It means something only when that resolver is trusted and the path
	// to it is safe (RFC 6698 §4.1), which is the administrator's call.
	Authentic bool
}

// The kinds of lookup failure. Every *Error matches exactly one of them
// with errors.Is, so callers never look at an error's text.
var (
	// ErrNXDomain: the name does not exist (RCODE 3, RFC 1035 §4.1.1).
	ErrNXDomain = errors.New("no such domain")
	// ErrNoData: the name exists but has no record of the type asked
	// for (RFC 2308 §2.2).
	ErrNoData = errors.New("no record of that type")
	// ErrTemporary: no usable answer now (SERVFAIL, REFUSED, a timeout,
	// an unreachable server, a truncated or malformed answer, a CNAME
	// chain too long): ask again later.
	ErrTemporary = errors.New("temporary DNS failure")
	// ErrBadName: the name cannot be asked for (not a domain name in
	// ASCII, too long): no answer would ever come.
	ErrBadName = errors.New("not a valid domain name")
)

// Error is a failed lookup.
type Error struct {
	Kind   error  // ErrNXDomain, ErrNoData, ErrTemporary or ErrBadName
	Name   string // the name that failed: the one asked for, or the end of its CNAME chain
	Type   uint16 // the record type asked for
	Rcode  int    // the answer's RCODE; -1 when there was no answer
	Server string // the server that answered last, "" if none did
	Err    error  // the cause below the DNS, such as a timeout; or nil
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "DNS lookup of %s %s: %v", e.Name, dns.TypeToString[e.Type], e.Kind)
	if e.Rcode > 0 {
		if rc, ok := dns.RcodeToString[e.Rcode]; ok {
			fmt.Fprintf(&b, " (%s", rc)
		} else {
			fmt.Fprintf(&b, " (RCODE %d", e.Rcode)
		}
		if e.Server != "" {
			fmt.Fprintf(&b, " from %s", e.Server)
		}
		b.WriteString(")")
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Unwrap lets errors.Is see both the kind and the cause.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// Temporary reports whether asking again later may give another answer.
func (e *Error) Temporary() bool { return e.Kind == ErrTemporary }

// IsNotFound reports whether err says the records do not exist
// (NXDOMAIN or NODATA), as opposed to a failure to find out.
func IsNotFound(err error) bool {
	return errors.Is(err, ErrNXDomain) || errors.Is(err, ErrNoData)
}

// IsTemporary reports whether err is a failure to find out, to retry
// later. An error that is not an *Error is temporary: a failure nobody
// classified is never a reason to bounce mail.
func IsTemporary(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind == ErrTemporary
	}
	return err != nil
}

// checkName returns name as a lower-case FQDN, or an ErrBadName error.
// Underscores are allowed: SRV, TLSA and DKIM names hold them (RFC 2181
// §11: any octet is legal in a DNS label; host-name rules are the
// callers').
func checkName(name string, qtype uint16) (string, error) {
	fq := dns.Fqdn(strings.ToLower(name))
	bad := func(why string) error {
		return &Error{Kind: ErrBadName, Name: name, Type: qtype, Rcode: -1, Err: errors.New(why)}
	}
	if name == "" || fq == "." {
		return "", bad("empty name")
	}
	if len(fq) > 254 {
		return "", bad("longer than 253 bytes")
	}
	for i := 0; i < len(fq); i++ {
		if c := fq[i]; c <= ' ' || c >= 0x7f || c == '\\' {
			return "", bad("holds a byte that is not printable ASCII: write IDNs as A-labels")
		}
	}
	if _, ok := dns.IsDomainName(fq); !ok || strings.Contains(fq, "..") {
		return "", bad("empty label or one longer than 63 bytes")
	}
	return fq, nil
}

func trimDot(s string) string { return strings.TrimSuffix(strings.ToLower(s), ".") }

// MX is one mail exchanger (RFC 1035 §3.3.9).
type MX struct {
	Pref uint16
	Host string // lower-case, no final dot; "" for the root, as in a null MX (RFC 7505)
}

// LookupMX returns domain's MX records in the order the server gave.
func LookupMX(ctx context.Context, r Resolver, domain string) ([]MX, bool, error) {
	a, err := r.Query(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, false, err
	}
	out := make([]MX, 0, len(a.Records))
	for _, rr := range a.Records {
		if mx, ok := rr.(*dns.MX); ok {
			out = append(out, MX{Pref: mx.Preference, Host: trimDot(mx.Mx)})
		}
	}
	return out, a.Authentic, nil
}

// LookupIP returns host's IPv6 (AAAA) and IPv4 (A) addresses, asked for
// at the same time, AAAA's first, each in the server's order. One family
// failing does not hide the other's addresses. With none, the error says
// why: NXDOMAIN from either (the name does not exist), else a temporary
// failure of either, else NODATA.
func LookupIP(ctx context.Context, r Resolver, host string) ([]netip.Addr, bool, error) {
	type result struct {
		a   *Answer
		err error
	}
	var res [2]result
	var wg sync.WaitGroup
	for i, t := range [2]uint16{dns.TypeAAAA, dns.TypeA} {
		wg.Go(func() {
			res[i].a, res[i].err = r.Query(ctx, host, t)
		})
	}
	wg.Wait()
	var addrs []netip.Addr
	seen := map[netip.Addr]bool{}
	authentic := true
	for _, x := range res {
		if x.err != nil {
			continue
		}
		authentic = authentic && x.a.Authentic
		for _, rr := range x.a.Records {
			var ip []byte
			switch rr := rr.(type) {
			case *dns.A:
				ip = rr.A
			case *dns.AAAA:
				ip = rr.AAAA
			}
			if a, ok := netip.AddrFromSlice(ip); ok && !seen[a.Unmap()] {
				seen[a.Unmap()] = true
				addrs = append(addrs, a.Unmap())
			}
		}
	}
	if len(addrs) > 0 {
		return addrs, authentic, nil
	}
	for _, kind := range []error{ErrNXDomain, ErrTemporary, ErrBadName, ErrNoData} {
		for _, x := range res {
			if errors.Is(x.err, kind) {
				return nil, false, x.err
			}
		}
	}
	for _, x := range res {
		if x.err != nil {
			return nil, false, x.err
		}
	}
	// Both answers held only records of other types: NODATA.
	return nil, false, &Error{Kind: ErrNoData, Name: trimDot(host), Type: dns.TypeA, Rcode: -1}
}

// LookupTXT returns name's TXT records, each one's strings joined as
// SPF and DKIM read them (RFC 7208 §3.3, RFC 6376 §3.6.2.2).
func LookupTXT(ctx context.Context, r Resolver, name string) ([]string, bool, error) {
	a, err := r.Query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, false, err
	}
	var out []string
	for _, rr := range a.Records {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	return out, a.Authentic, nil
}

// LookupPTR returns the names an address maps back to (RFC 1035 §3.5,
// RFC 3596 §2.5), lower-case, without the final dot.
func LookupPTR(ctx context.Context, r Resolver, addr netip.Addr) ([]string, bool, error) {
	arpa, err := dns.ReverseAddr(addr.Unmap().WithZone("").String())
	if err != nil {
		return nil, false, &Error{Kind: ErrBadName, Name: addr.String(), Type: dns.TypePTR, Rcode: -1, Err: err}
	}
	a, err := r.Query(ctx, arpa, dns.TypePTR)
	if err != nil {
		return nil, false, err
	}
	var out []string
	for _, rr := range a.Records {
		if p, ok := rr.(*dns.PTR); ok {
			out = append(out, trimDot(p.Ptr))
		}
	}
	return out, a.Authentic, nil
}

// LookupTLSA returns the TLSA records for a TCP service on host
// ("_25._tcp.mx.example.org", RFC 6698 §3). DANE may use them only when
// the answer is Authentic (RFC 7672 §2.2).
func LookupTLSA(ctx context.Context, r Resolver, port int, host string) ([]*dns.TLSA, bool, error) {
	a, err := r.Query(ctx, "_"+strconv.Itoa(port)+"._tcp."+host, dns.TypeTLSA)
	if err != nil {
		return nil, false, err
	}
	var out []*dns.TLSA
	for _, rr := range a.Records {
		if t, ok := rr.(*dns.TLSA); ok {
			out = append(out, t)
		}
	}
	return out, a.Authentic, nil
}
