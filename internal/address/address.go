// Package address is the syntax of envelope addresses (RFC 5321 §4.1.2):
// the check tern-enqueue applies to every address, domains in A-labels,
// and splitting at the "@". It imports nothing of tern's, so that both the
// transfer side (mta/...) and local delivery (mda/...) use it without one
// importing the other.
package address

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// MaxLen bounds an envelope address: RFC 5321 §4.5.3.1.3 allows a path
// of 256 octets including the angle brackets.
const MaxLen = 254

// NullSender is how the queue writes the empty reverse-path "<>" of
// RFC 5321 §4.5.5, the sender of bounces.
const NullSender = "<>"

// Check checks an envelope address against RFC 5321 §4.1.2
// (Mailbox = Local-part "@" ( Domain / address-literal )) and returns it
// in the form the queue stores: angle brackets removed, the domain
// lower-cased and, when internationalised, converted to A-labels
// (RFC 5890 §2.3.2.1). A bare local part without "@" is accepted: it means
// a user of this host, as sendmail and qmail-inject take it. UTF-8 in the
// local part is accepted (RFC 6531 §3.3); it is delivered locally as is.
func Check(addr string) (string, error) {
	a := strings.TrimSpace(addr)
	if strings.HasPrefix(a, "<") && strings.HasSuffix(a, ">") {
		a = a[1 : len(a)-1]
	}
	if a == "" {
		return "", errors.New("empty address")
	}
	if !utf8.ValidString(a) {
		return "", fmt.Errorf("address %q is not valid UTF-8", addr)
	}
	for _, r := range a {
		if r < 0x20 || r == 0x7f {
			return "", fmt.Errorf("address %q has a control character", addr)
		}
	}
	at := strings.LastIndexByte(a, '@')
	local, domain := a, ""
	if at >= 0 {
		local, domain = a[:at], a[at+1:]
	}
	if err := checkLocalPart(local); err != nil {
		return "", fmt.Errorf("address %q: %w", addr, err)
	}
	if at < 0 {
		return local, nil
	}
	d, err := CheckDomain(domain)
	if err != nil {
		return "", fmt.Errorf("address %q: %w", addr, err)
	}
	out := local + "@" + d
	if len(out) > MaxLen {
		return "", fmt.Errorf("address %q is longer than %d octets (RFC 5321 section 4.5.3.1.3)", addr, MaxLen)
	}
	return out, nil
}

// IsAtext says whether r may stand in an atom (RFC 5322 §3.2.3 atext,
// with RFC 6531 §3.3's UTF8-non-ascii).
func IsAtext(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	case r >= 0x80:
		return true // RFC 6531 §3.3: UTF8-non-ascii is atext
	}
	return strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", r)
}

// checkLocalPart: Local-part = Dot-string / Quoted-string (RFC 5321 §4.1.2),
// at most 64 octets (§4.5.3.1.1).
func checkLocalPart(l string) error {
	if l == "" {
		return errors.New("empty local part")
	}
	if len(l) > 64 {
		return errors.New("local part longer than 64 octets (RFC 5321 section 4.5.3.1.1)")
	}
	if l[0] == '"' {
		if len(l) < 2 || l[len(l)-1] != '"' {
			return errors.New("unterminated quoted local part")
		}
		q := l[1 : len(l)-1]
		for i := 0; i < len(q); i++ {
			c := q[i]
			if c == '\\' {
				i++
				if i == len(q) {
					return errors.New("quoted local part ends in a backslash")
				}
				continue
			}
			if c == '"' {
				return errors.New("unescaped quote in quoted local part")
			}
		}
		return nil
	}
	for _, atom := range strings.Split(l, ".") {
		if atom == "" {
			return errors.New("local part has an empty atom (a leading, trailing or double dot)")
		}
		for _, r := range atom {
			if !IsAtext(r) {
				return fmt.Errorf("local part has %q, which needs quoting", r)
			}
		}
	}
	return nil
}

// CheckDomain checks a domain or address literal (RFC 5321 §4.1.2,
// §4.1.3) and returns it lower-cased, in A-labels, without a trailing dot.
func CheckDomain(d string) (string, error) {
	if d == "" {
		return "", errors.New("empty domain")
	}
	if d[0] == '[' {
		if d[len(d)-1] != ']' || len(d) < 3 {
			return "", errors.New("unterminated address literal")
		}
		for _, r := range d[1 : len(d)-1] {
			if r == '[' || r == ']' || r == '\\' || r <= ' ' || r >= 0x7f {
				return "", fmt.Errorf("address literal has %q", r)
			}
		}
		return d, nil
	}
	a, err := ASCIIDomain(d)
	if err != nil {
		return "", err
	}
	if len(a) > 253 {
		return "", errors.New("domain longer than 253 octets")
	}
	labels := strings.Split(a, ".")
	for _, l := range labels {
		if l == "" {
			return "", errors.New("domain has an empty label")
		}
		if len(l) > 63 {
			return "", fmt.Errorf("label %q longer than 63 octets", l)
		}
		// RFC 5321 §4.1.2: Let-dig [Ldh-str]
		for j := 0; j < len(l); j++ {
			c := l[j]
			ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && j > 0 && j < len(l)-1
			if !ok {
				return "", fmt.Errorf("label %q has %q: only letters, digits and inner hyphens", l, c)
			}
		}
	}
	return a, nil
}

// ASCIIDomain returns domain as the DNS and the SMTP envelope carry it: in
// A-labels, lower-case, without the final dot. A name with a non-ASCII
// character goes through IDNA's lookup profile (the UTS #46 mapping, the
// checks of RFC 5891 §5.4, Punycode of RFC 3492); an ASCII name is only
// lower-cased, because those checks would refuse ASCII names the DNS
// holds, such as ones with '_'. Each caller then checks what it accepts.
func ASCIIDomain(domain string) (string, error) {
	d := strings.TrimSuffix(domain, ".")
	for i := 0; i < len(d); i++ {
		if d[i] >= 0x80 {
			a, err := idna.Lookup.ToASCII(d)
			if err != nil {
				return "", fmt.Errorf("internationalised domain %q: %w", domain, err)
			}
			return a, nil
		}
	}
	return strings.ToLower(d), nil
}

// Split splits an address at its last "@"; domain is "" for a bare
// local part.
func Split(addr string) (local, domain string) {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[:i], addr[i+1:]
	}
	return addr, ""
}
