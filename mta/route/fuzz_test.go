package route

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/tern-mail/tern/internal/resolver"
)

// fakeDNS is a Resolver made from fuzz input: MX records of "fuzz.example"
// and the addresses of hosts h0..h7.
type fakeDNS struct {
	mx    []resolver.MX
	addrs map[string][]netip.Addr
	fail  map[string]error // a host's lookup failure
}

func (f *fakeDNS) Query(_ context.Context, name string, qtype uint16) (*resolver.Answer, error) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if err := f.fail[name]; err != nil {
		return nil, err
	}
	var rrs []dns.RR
	switch qtype {
	case dns.TypeMX:
		if name == "fuzz.example" {
			for _, m := range f.mx {
				rrs = append(rrs, &dns.MX{Hdr: dns.RR_Header{Name: name + ".", Rrtype: dns.TypeMX, Class: dns.ClassINET}, Preference: m.Pref, Mx: dns.Fqdn(m.Host)})
			}
		}
	case dns.TypeA, dns.TypeAAAA:
		for _, a := range f.addrs[name] {
			h := dns.RR_Header{Name: name + ".", Rrtype: qtype, Class: dns.ClassINET}
			switch {
			case a.Is4() && qtype == dns.TypeA:
				rrs = append(rrs, &dns.A{Hdr: h, A: a.AsSlice()})
			case a.Is6() && qtype == dns.TypeAAAA:
				rrs = append(rrs, &dns.AAAA{Hdr: h, AAAA: a.AsSlice()})
			}
		}
	}
	if len(rrs) == 0 {
		return nil, &resolver.Error{Kind: resolver.ErrNoData, Name: name, Type: qtype, Rcode: -1}
	}
	return &resolver.Answer{Name: name, Records: rrs}, nil
}

// FuzzTargets checks the MX rules on arbitrary MX lists and addresses:
// whatever the DNS says, the targets come by preference, never hold this
// host or anything as bad as it, never list an address twice, and a
// failure is one of the documented ones.
func FuzzTargets(f *testing.F) {
	f.Add([]byte{10, 0, 20, 1, 1, 2, 3, 0, 4, 5})
	f.Add([]byte{10, 0, 10, 6, 30, 2, 1, 0xff, 2, 9, 9})
	f.Add([]byte{0, 0xf8})
	self := []netip.Addr{netip.MustParseAddr("192.0.2.100"), netip.MustParseAddr("2001:db8::100")}
	pool := []netip.Addr{
		netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8::1"),
		netip.MustParseAddr("2001:db8::2"), self[0], self[1], netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("::ffff:192.0.2.1"),
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		// The first byte counts MX records, two bytes each: preference,
		// and host (low 3 bits; 0xf8 set: the root, a null MX). Then
		// per host h0..h7: a count byte (0xfe: NXDOMAIN, 0xff:
		// SERVFAIL) and that many indexes into pool.
		fd := &fakeDNS{addrs: map[string][]netip.Addr{}, fail: map[string]error{}}
		next := func() (byte, bool) {
			if len(in) == 0 {
				return 0, false
			}
			b := in[0]
			in = in[1:]
			return b, true
		}
		n, _ := next()
		for range int(n % 20) {
			p, ok1 := next()
			h, ok2 := next()
			if !ok1 || !ok2 {
				break
			}
			host := fmt.Sprintf("h%d.example", h&7)
			if h&0xf8 == 0xf8 {
				host = ""
			}
			fd.mx = append(fd.mx, resolver.MX{Pref: uint16(p), Host: host})
		}
		for h := range 8 {
			host := fmt.Sprintf("h%d.example", h)
			c, ok := next()
			if !ok {
				break
			}
			switch c {
			case 0xfe:
				fd.fail[host] = &resolver.Error{Kind: resolver.ErrNXDomain, Name: host, Rcode: 3}
				continue
			case 0xff:
				fd.fail[host] = &resolver.Error{Kind: resolver.ErrTemporary, Name: host, Rcode: 2}
				continue
			}
			for range int(c % 8) {
				i, ok := next()
				if !ok {
					break
				}
				fd.addrs[host] = append(fd.addrs[host], pool[int(i)%len(pool)])
			}
		}
		r := &Router{Resolver: fd, Hostname: "h7.example", SelfAddrs: func() ([]netip.Addr, error) { return slices.Clone(self), nil }}
		ts, err := r.Targets(context.Background(), "fuzz.example", nil)

		pref := map[string]uint16{}
		selfPref := -1
		for _, m := range fd.mx {
			if old, ok := pref[m.Host]; !ok || m.Pref < old {
				pref[m.Host] = m.Pref
			}
		}
		for _, m := range fd.mx {
			isSelf := m.Host == "h7.example"
			for _, a := range fd.addrs[m.Host] {
				isSelf = isSelf || a.IsUnspecified() || slices.Contains(self, a.Unmap())
			}
			if isSelf && fd.fail[m.Host] == nil && (selfPref < 0 || int(m.Pref) < selfPref) {
				selfPref = int(m.Pref)
			}
			if isSelf && m.Host == "h7.example" && (selfPref < 0 || int(m.Pref) < selfPref) {
				selfPref = int(m.Pref)
			}
		}
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || ts != nil {
				t.Fatalf("unclassified %T %v", err, err)
			}
			if !slices.Contains([]string{"5.1.10", "5.4.6", "5.4.4", "4.4.3", "4.4.4", "5.1.2"}, e.Status) || e.Temporary != (e.Status[0] == '4') {
				t.Fatalf("failure %+v", e)
			}
			return
		}
		if len(fd.mx) == 0 {
			// Implicit MX: fuzz.example has no address in the fake.
			t.Fatalf("targets %v for a domain without MX or address", ts)
		}
		var seen []netip.Addr
		last, withAddrs := -1, false
		for _, tg := range ts {
			p := int(pref[tg.Host])
			if p < last {
				t.Fatalf("%s (preference %d) after preference %d", tg.Host, p, last)
			}
			last = p
			if selfPref >= 0 && p >= selfPref {
				t.Fatalf("%s (preference %d) kept with this host at %d", tg.Host, p, selfPref)
			}
			if tg.Host == r.Hostname || len(tg.Addrs) > MaxAddrs || (tg.Err == nil) == (len(tg.Addrs) == 0) {
				t.Fatalf("target %+v", tg)
			}
			for _, a := range tg.Addrs {
				if slices.Contains(seen, a) || slices.Contains(self, a) || a.IsUnspecified() || a.Is4In6() {
					t.Fatalf("address %s in %v", a, ts)
				}
				seen = append(seen, a)
				withAddrs = true
			}
		}
		if !withAddrs {
			t.Fatalf("no target with an address and no error: %v", ts)
		}
	})
}
