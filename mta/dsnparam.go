// Package mta holds what the queue's programs share about delivery status
// notifications: the DSN parameters of RFC 3461 (xtext, ENVID, ORCPT) and
// the RFC 3464 report that tern-queue sends back when a recipient fails or
// is delayed. Address syntax is package internal/address.
package mta

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/tern-mail/tern/internal/address"
)

// Bounds on the DSN parameters a client may give, which travel with the
// message to the next hop and into the reports tern sends.
const (
	// MaxEnvID: RFC 3461 §4.4 caps ENVID at 100 characters.
	MaxEnvID = 100
	// MaxORcpt: RFC 3461 §4.2 caps the ORCPT parameter at 500
	// characters.
	MaxORcpt = 500
)

// xtext is written here because go-smtp v0.26.0 keeps its encoder and
// decoder unexported; the queue file and tern-enqueue's recipient
// arguments need both.

// EncodeXtext writes s as RFC 3461 §4's xtext: every octet outside "!" to
// "~", and "+" and "=", becomes "+" and two upper-case hex digits. Any
// string survives it, and what comes out holds no blank, tab or line end.
func EncodeXtext(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if !isXchar(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isXchar(c) {
			b = append(b, c)
		} else {
			b = append(b, '+', hex[c>>4], hex[c&15])
		}
	}
	return string(b)
}

// DecodeXtext reads RFC 3461 §4's xtext: xchars as they are, "+" and two
// upper-case hex digits for any other octet. Anything else is an error.
func DecodeXtext(s string) (string, error) {
	if strings.IndexByte(s, '+') < 0 {
		for i := 0; i < len(s); i++ {
			if !isXchar(s[i]) {
				return "", fmt.Errorf("xtext %q has %q, which must be written +%02X", s, s[i], s[i])
			}
		}
		return s, nil
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			if i+2 >= len(s) {
				return "", fmt.Errorf("xtext %q: %q is not followed by two hex digits", s, "+")
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return "", fmt.Errorf("xtext %q: %q is not followed by two upper-case hex digits", s, "+")
			}
			b = append(b, hi<<4|lo)
			i += 2
		case isXchar(c):
			b = append(b, c)
		default:
			return "", fmt.Errorf("xtext %q has %q, which must be written +%02X", s, c, c)
		}
	}
	return string(b), nil
}

// isXchar: "!" to "~" except "+" and "=" (RFC 3461 §4).
func isXchar(c byte) bool { return c >= '!' && c <= '~' && c != '+' && c != '=' }

// unhex reads one upper-case hex digit, as RFC 3461 §4's hexchar has them.
func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// CheckEnvID checks a decoded ENVID (RFC 3461 §4.4): 1 to MaxEnvID
// printable US-ASCII characters.
func CheckEnvID(v string) error {
	if v == "" {
		return errors.New("empty ENVID")
	}
	if len(v) > MaxEnvID {
		return fmt.Errorf("ENVID longer than %d characters (RFC 3461 section 4.4)", MaxEnvID)
	}
	for i := 0; i < len(v); i++ {
		if v[i] < ' ' || v[i] > '~' {
			return fmt.Errorf("ENVID has %q: only printable US-ASCII is allowed (RFC 3461 section 4.4)", v[i])
		}
	}
	return nil
}

// CheckORcpt checks a decoded ORCPT as the queue keeps it,
// "addr-type;address" (RFC 3461 §4.2): an addr-type that is an atom, and
// an address of at most MaxORcpt octets in all, in UTF-8 without control
// characters (RFC 6533 §3 lets a "utf-8" address hold non-ASCII). It
// returns the value with the addr-type in upper case, as RFC 3464 §2.3.1
// writes it.
func CheckORcpt(v string) (string, error) {
	typ, addr, ok := strings.Cut(v, ";")
	if !ok || typ == "" || addr == "" {
		return "", fmt.Errorf("ORCPT %q is not addr-type;address (RFC 3461 section 4.2)", v)
	}
	if len(v) > MaxORcpt {
		return "", fmt.Errorf("ORCPT longer than %d characters (RFC 3461 section 4.2)", MaxORcpt)
	}
	for _, r := range typ {
		if r >= 0x80 || !address.IsAtext(r) {
			return "", fmt.Errorf("ORCPT address type %q is not an atom (RFC 3461 section 4.2)", typ)
		}
	}
	if !utf8.ValidString(addr) {
		return "", errors.New("ORCPT address is not valid UTF-8")
	}
	for _, r := range addr {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return "", fmt.Errorf("ORCPT address has the control character %U", r)
		}
	}
	return strings.ToUpper(typ) + ";" + addr, nil
}

// IsASCII reports whether s is all US-ASCII: an address that is not needs
// SMTPUTF8 (RFC 6531 §3.4), and text that is not is 8-bit (RFC 6152).
func IsASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
