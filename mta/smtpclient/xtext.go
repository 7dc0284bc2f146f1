package smtpclient

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// XText encodes s as RFC 3461 §4 xtext: every octet outside "!" to "~",
// and "+" and "=", becomes "+" and two upper-case hex digits.
func XText(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < '!' || c > '~' || c == '+' || c == '=' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '!' || c > '~' || c == '+' || c == '=' {
			b.WriteByte('+')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// UTF8AddrXText encodes an address of ORCPT's "utf-8" type (RFC 6533 §3):
// utf-8-addr-xtext for a server without SMTPUTF8, where every character
// outside QCHAR becomes "\x{HEX}"; utf-8-addr-unitext for one with it,
// where non-ASCII characters stay as they are.
func UTF8AddrXText(s string, unitext bool) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == utf8.RuneError:
			b.WriteString(`\x{FFFD}`)
		case r >= 0x21 && r <= 0x7e && r != '+' && r != '=' && r != '\\':
			b.WriteRune(r)
		case r >= 0x80 && unitext:
			b.WriteRune(r)
		default:
			fmt.Fprintf(&b, `\x{%X}`, r)
		}
	}
	return b.String()
}
