package maildir

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// mutf7 is the base64 of RFC 3501 §5.1.3: "," stands for "/", no padding.
// Strict, so that a segment with leftover bits is refused and every accepted
// name has exactly one spelling.
var mutf7 = base64.NewEncoding("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,").
	WithPadding(base64.NoPadding).Strict()

// ErrBadMUTF7 is returned by DecodeMUTF7 for a string that is not canonical
// modified UTF-7.
var ErrBadMUTF7 = errors.New("not canonical modified UTF-7")

// EncodeMUTF7 returns the modified UTF-7 form of a UTF-8 mailbox name
// (RFC 3501 §5.1.3): printable ASCII stands for itself, "&" becomes "&-",
// everything else is UTF-16BE in modified base64 between "&" and "-".
func EncodeMUTF7(s string) (string, error) {
	if !utf8.ValidString(s) {
		return "", fmt.Errorf("encode mailbox name %q: invalid UTF-8", s)
	}
	var b strings.Builder
	var pending []uint16
	flush := func() {
		if len(pending) == 0 {
			return
		}
		raw := make([]byte, 0, 2*len(pending))
		for _, u := range pending {
			raw = append(raw, byte(u>>8), byte(u))
		}
		b.WriteByte('&')
		b.WriteString(mutf7.EncodeToString(raw))
		b.WriteByte('-')
		pending = pending[:0]
	}
	for _, r := range s {
		if r >= 0x20 && r <= 0x7e {
			flush()
			if r == '&' {
				b.WriteString("&-")
			} else {
				b.WriteRune(r)
			}
			continue
		}
		pending = utf16.AppendRune(pending, r)
	}
	flush()
	return b.String(), nil
}

// DecodeMUTF7 returns the UTF-8 form of a modified UTF-7 mailbox name. It
// accepts only the canonical form EncodeMUTF7 produces (RFC 3501 §5.1.3:
// printable ASCII must not be encoded, two encoded runs must not touch), so
// that decoding and encoding again gives back the same bytes.
func DecodeMUTF7(s string) (string, error) {
	var b strings.Builder
	lastEncoded := false
	for i := 0; i < len(s); {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			return "", fmt.Errorf("decode mailbox name %q: byte %#x at %d: %w", s, c, i, ErrBadMUTF7)
		}
		if c != '&' {
			b.WriteByte(c)
			i++
			lastEncoded = false
			continue
		}
		end := strings.IndexByte(s[i+1:], '-')
		if end < 0 {
			return "", fmt.Errorf("decode mailbox name %q: unterminated \"&\" at %d: %w", s, i, ErrBadMUTF7)
		}
		seg := s[i+1 : i+1+end]
		i += end + 2
		if seg == "" {
			b.WriteByte('&')
			lastEncoded = false
			continue
		}
		if lastEncoded {
			return "", fmt.Errorf("decode mailbox name %q: adjacent encoded runs: %w", s, ErrBadMUTF7)
		}
		// The base64 decoder skips CR and LF; the segment must be made of
		// the alphabet alone.
		for j := 0; j < len(seg); j++ {
			if c := seg[j]; !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == ',') {
				return "", fmt.Errorf("decode mailbox name %q: bad base64 %q: %w", s, seg, ErrBadMUTF7)
			}
		}
		raw, err := mutf7.DecodeString(seg)
		if err != nil || len(raw)%2 != 0 {
			return "", fmt.Errorf("decode mailbox name %q: bad base64 %q: %w", s, seg, ErrBadMUTF7)
		}
		units := make([]uint16, len(raw)/2)
		for j := range units {
			units[j] = uint16(raw[2*j])<<8 | uint16(raw[2*j+1])
		}
		for j := 0; j < len(units); j++ {
			u := units[j]
			var r rune
			switch {
			case utf16.IsSurrogate(rune(u)):
				if u >= 0xdc00 || j+1 >= len(units) {
					return "", fmt.Errorf("decode mailbox name %q: unpaired surrogate: %w", s, ErrBadMUTF7)
				}
				r = utf16.DecodeRune(rune(u), rune(units[j+1]))
				if r == utf8.RuneError {
					return "", fmt.Errorf("decode mailbox name %q: unpaired surrogate: %w", s, ErrBadMUTF7)
				}
				j++
			case u >= 0x20 && u <= 0x7e:
				return "", fmt.Errorf("decode mailbox name %q: encoded printable ASCII: %w", s, ErrBadMUTF7)
			default:
				r = rune(u)
			}
			b.WriteRune(r)
		}
		lastEncoded = true
	}
	return b.String(), nil
}
