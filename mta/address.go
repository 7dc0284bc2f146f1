// Package mta holds what the queue's programs share about mail addresses and
// delivery status notifications: the RFC 5321 syntax check that
// tern-enqueue applies to every envelope address, and the RFC 3464 report
// that tern-queue sends back when a recipient fails or is delayed.
package mta

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxAddress bounds an envelope address: RFC 5321 §4.5.3.1.3 allows a path
// of 256 octets including the angle brackets.
const MaxAddress = 254

// NullSender is how the queue writes the empty reverse-path "<>" of
// RFC 5321 §4.5.5, the sender of bounces.
const NullSender = "<>"

// CheckAddress checks an envelope address against RFC 5321 §4.1.2
// (Mailbox = Local-part "@" ( Domain / address-literal )) and returns it
// in the form the queue stores: angle brackets removed, the domain
// lower-cased and, when internationalised, converted to A-labels
// (RFC 5890 §2.3.2.1). A bare local part without "@" is accepted: it means
// a user of this host, as sendmail and qmail-inject take it. UTF-8 in the
// local part is accepted (RFC 6531 §3.3); it is delivered locally as is.
func CheckAddress(addr string) (string, error) {
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
	if len(out) > MaxAddress {
		return "", fmt.Errorf("address %q is longer than %d octets (RFC 5321 section 4.5.3.1.3)", addr, MaxAddress)
	}
	return out, nil
}

// atext of RFC 5322 §3.2.3, the characters of a Dot-string atom.
func isAtext(r rune) bool {
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
			if !isAtext(r) {
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
	d = strings.TrimSuffix(d, ".")
	if len(d) > 253 {
		return "", errors.New("domain longer than 253 octets")
	}
	labels := strings.Split(d, ".")
	for i, l := range labels {
		if l == "" {
			return "", errors.New("domain has an empty label")
		}
		a, err := ToALabel(l)
		if err != nil {
			return "", fmt.Errorf("label %q: %w", l, err)
		}
		if len(a) > 63 {
			return "", fmt.Errorf("label %q longer than 63 octets", l)
		}
		// RFC 5321 §4.1.2: Let-dig [Ldh-str]
		for j := 0; j < len(a); j++ {
			c := a[j]
			ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && j > 0 && j < len(a)-1
			if !ok {
				return "", fmt.Errorf("label %q has %q: only letters, digits and inner hyphens", l, c)
			}
		}
		labels[i] = a
	}
	return strings.Join(labels, "."), nil
}

// ToALabel lower-cases a label and, when it is not ASCII, encodes it with
// Punycode (RFC 3492) behind the "xn--" prefix (RFC 5891 §4.4). Lower-casing
// stands in for the full IDNA2008 mapping (RFC 5895), which needs Unicode
// tables the standard library does not carry; it gives the same A-label for
// the names people type.
func ToALabel(label string) (string, error) {
	label = strings.ToLower(label)
	ascii := true
	for i := 0; i < len(label); i++ {
		if label[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		return label, nil
	}
	p, err := punycode(label)
	if err != nil {
		return "", err
	}
	return "xn--" + p, nil
}

// punycode is the encoder of RFC 3492 §6.3 with the parameters of §5.
func punycode(s string) (string, error) {
	const (
		base, tmin, tmax, skew, damp = 36, 1, 26, 38, 700
		initialBias, initialN        = 72, 128
	)
	runes := []rune(s)
	var out strings.Builder
	b := 0
	for _, r := range runes {
		if r < 0x80 {
			out.WriteRune(r)
			b++
		}
	}
	h := b
	if b > 0 {
		out.WriteByte('-')
	}
	digit := func(d int) byte {
		if d < 26 {
			return byte('a' + d)
		}
		return byte('0' + d - 26)
	}
	adapt := func(delta, numPoints int, first bool) int {
		if first {
			delta /= damp
		} else {
			delta /= 2
		}
		delta += delta / numPoints
		k := 0
		for delta > ((base-tmin)*tmax)/2 {
			delta /= base - tmin
			k += base
		}
		return k + (base-tmin+1)*delta/(delta+skew)
	}
	n, delta, bias := initialN, 0, initialBias
	for h < len(runes) {
		m := int(^uint(0) >> 1)
		for _, r := range runes {
			if int(r) >= n && int(r) < m {
				m = int(r)
			}
		}
		if (m-n)*(h+1) > 1<<30 {
			return "", errors.New("punycode overflow")
		}
		delta += (m - n) * (h + 1)
		n = m
		for _, r := range runes {
			if int(r) < n {
				delta++
			}
			if int(r) == n {
				q := delta
				for k := base; ; k += base {
					t := k - bias
					if t < tmin {
						t = tmin
					} else if t > tmax {
						t = tmax
					}
					if q < t {
						break
					}
					out.WriteByte(digit(t + (q-t)%(base-t)))
					q = (q - t) / (base - t)
				}
				out.WriteByte(digit(q))
				bias = adapt(delta, h+1, h == b)
				delta = 0
				h++
			}
		}
		delta++
		n++
	}
	return out.String(), nil
}

// SplitAddress splits an address at its last "@"; domain is "" for a bare
// local part.
func SplitAddress(addr string) (local, domain string) {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[:i], addr[i+1:]
	}
	return addr, ""
}
