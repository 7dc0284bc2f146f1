package conf

import (
	"io"
	"net/netip"
	"strings"
)

// Relay is the networks allowed to relay without AUTH.
type Relay []netip.Prefix

// ParseRelay reads the relay file: one network a line, CIDR
// ("192.0.2.0/24", "2001:db8::/32") or a bare address (a /32 or /128).
func ParseRelay(file string, r io.Reader) (Relay, error) {
	ls, err := lines(file, r)
	if err != nil {
		return nil, err
	}
	var rl Relay
	for _, l := range ls {
		var p netip.Prefix
		if strings.Contains(l.text, "/") {
			p, err = netip.ParsePrefix(l.text)
			if err == nil && p != p.Masked() {
				return nil, lineErr(file, l.n, "%s has host bits set; did you mean %s?", l.text, p.Masked())
			}
		} else {
			var a netip.Addr
			a, err = netip.ParseAddr(l.text)
			if err == nil {
				p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
			}
		}
		if err != nil {
			return nil, lineErr(file, l.n, "want an address or a network in CIDR form: %v", err)
		}
		if p.Addr().Zone() != "" {
			return nil, lineErr(file, l.n, "%s: zones are not allowed", l.text)
		}
		rl = append(rl, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()))
	}
	return rl, nil
}

// Contains reports whether addr is in one of the networks; an
// IPv4-mapped IPv6 address counts as its IPv4 address.
func (rl Relay) Contains(addr netip.Addr) bool {
	addr = addr.Unmap().WithZone("")
	for _, p := range rl {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
