package mime

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	stdmime "mime"
	"strings"
	"unicode/utf8"
)

// Limits on a header. go-message bounds only the top-level header of a
// message; a part header of megabytes, or one that never ends, is bounded
// here: fields past the limit are read and thrown away (with a warning), so
// memory stays small and the body after them is still found.
const (
	maxHeaderBytes  = 256 << 10
	maxHeaderFields = 2000
)

// field is one header field, its value unfolded but not decoded.
type field struct{ Name, Value string }

// header is what readHeader found.
type header struct {
	raw       []string // "Name: value" as read, continuations joined
	fields    []field  // in order, continuations unfolded
	truncated bool     // fields past the limits were dropped
	bad       int      // lines that were neither fields nor continuations
	body      []byte   // a first body line met where a field was expected
}

// readHeader reads header fields up to the blank line that ends them
// (RFC 5322 §2.1). A line that is not a field ends the header too and is
// given back as the start of the body: a part that forgot its blank line
// loses nothing that way.
func readHeader(r *bufio.Reader) (header, error) {
	var (
		hd     header
		fields []string // raw "Name: value" with continuations joined
		size   int
	)
	for {
		line, err := r.ReadSlice('\n')
		long := err == bufio.ErrBufferFull
		if long {
			err = nil
		}
		if err != nil && err != io.EOF {
			return hd, err
		}
		if len(line) == 0 && err == io.EOF {
			break
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 0 && !long {
			break // the blank line
		}
		cont := trimmed[0] == ' ' || trimmed[0] == '\t'
		var name string
		if !cont {
			if i := bytes.IndexByte(trimmed, ':'); i > 0 && validFieldName(trimmed[:i]) {
				name = string(trimmed[:i])
			}
		}
		switch {
		case cont && len(fields) > 0, cont && hd.truncated:
			if !hd.truncated && size+len(trimmed) <= maxHeaderBytes {
				fields[len(fields)-1] += " " + string(bytes.TrimLeft(trimmed, " \t"))
				size += len(trimmed)
			} else {
				hd.truncated = true
			}
		case name != "":
			if !hd.truncated && len(fields) < maxHeaderFields && size+len(trimmed) <= maxHeaderBytes {
				fields = append(fields, string(trimmed))
				size += len(trimmed)
			} else {
				hd.truncated = true
			}
		case len(fields) == 0 && !hd.truncated && !cont && looksLikeBody(trimmed):
			// No header at all and no blank line: the body starts here.
			hd.body = append([]byte(nil), line...)
			goto done
		case !cont && len(fields) > 0 && !long && !fieldNext(r):
			// A header that ran into its body without a blank line; a
			// junk line with more fields after it is only skipped.
			hd.bad++
			hd.body = append([]byte(nil), line...)
			goto done
		default:
			hd.bad++
		}
		// The rest of a line longer than the buffer is not kept.
		for long {
			_, err = r.ReadSlice('\n')
			long = err == bufio.ErrBufferFull
			hd.truncated = true
		}
		if err == io.EOF {
			break
		}
	}
done:
	for _, f := range fields {
		k, v, _ := strings.Cut(f, ":")
		hd.fields = append(hd.fields, field{k, strings.TrimSpace(v)})
	}
	hd.raw = fields
	return hd, nil
}

// get returns the value of the first field called name (any case), with
// the spaces and tabs around it removed, or "". It gives what go-message's
// Header.Get gave for these fields, without building its map and
// canonical keys for every part of every message.
func (hd *header) get(name string) string {
	for _, f := range hd.raw {
		k, v, _ := strings.Cut(f, ":")
		if strings.EqualFold(k, name) {
			return strings.Trim(v, " \t")
		}
	}
	return ""
}

// fieldNext tells whether the next line starts like a header field.
func fieldNext(r *bufio.Reader) bool {
	next, _ := r.Peek(80)
	if i := bytes.IndexByte(next, '\n'); i >= 0 {
		next = next[:i]
	}
	i := bytes.IndexByte(next, ':')
	return i > 0 && validFieldName(next[:i])
}

// looksLikeBody is true for a first line that cannot be a header field.
func looksLikeBody(line []byte) bool {
	i := bytes.IndexByte(line, ':')
	return i <= 0 || !validFieldName(line[:i])
}

// validFieldName: printable US-ASCII except ':' (RFC 5322 §3.6.8).
func validFieldName(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c > '~' || c == ':' {
			return false
		}
	}
	return len(b) > 0
}

// mediaType parses a Content-Type or Content-Disposition value. The
// standard parser (which handles RFC 2231 for UTF-8 and US-ASCII) is tried
// first; where it fails, or drops a parameter it could not decode, a
// lenient one takes over, which also knows other charsets in RFC 2231
// values and unquoted values with spaces. A broken boundary parameter must
// not cost the whole message.
func mediaType(v string) (string, map[string]string) {
	v = strings.TrimSpace(v)
	if v == "" {
		return "", map[string]string{}
	}
	t, params, err := stdmime.ParseMediaType(v)
	if err == nil && !missesParams(v, params) {
		return strings.ToLower(t), params
	}
	return lenientMediaType(v)
}

func missesParams(raw string, params map[string]string) bool {
	l := strings.ToLower(raw)
	for _, k := range []string{"filename", "name", "boundary", "charset"} {
		if strings.Contains(l, k) && params[k] == "" {
			return true
		}
	}
	return false
}

func lenientMediaType(v string) (string, map[string]string) {
	params := map[string]string{}
	t, rest, _ := strings.Cut(v, ";")
	t = strings.ToLower(strings.TrimSpace(t))
	if i := strings.IndexAny(t, " \t\""); i >= 0 {
		t = t[:i]
	}
	type piece struct {
		val string
		ext bool
	}
	cont := map[string]map[int]piece{}
	for n := 0; rest != "" && n < 100; n++ {
		var kv string
		kv, rest = cutParam(rest)
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		val = strings.TrimSpace(val)
		if len(val) >= 2 && val[0] == '"' {
			val = unquote(val)
		}
		ext := strings.HasSuffix(k, "*")
		k = strings.TrimSuffix(k, "*")
		if base, num, ok := strings.Cut(k, "*"); ok {
			var i int
			if _, err := fmt.Sscanf(num, "%d", &i); err == nil && i >= 0 && i < 100 {
				if cont[base] == nil {
					cont[base] = map[int]piece{}
				}
				cont[base][i] = piece{val, ext}
			}
			continue
		}
		if ext {
			params[k] = decode2231(val)
		} else if _, dup := params[k]; !dup {
			params[k] = val
		}
	}
	for k, pieces := range cont {
		// RFC 2231 §3-4: only the first piece carries the charset; the
		// pieces are joined before the percent-decoding.
		var raw strings.Builder
		enc := pieces[0].ext
		for i := 0; i < 100; i++ {
			p, ok := pieces[i]
			if !ok {
				break
			}
			if p.ext || !enc {
				raw.WriteString(p.val)
			} else {
				raw.WriteString(percentEscape(p.val))
			}
		}
		if enc {
			params[k] = decode2231(raw.String())
		} else {
			params[k] = raw.String()
		}
	}
	return t, params
}

// cutParam returns the text up to the next ';' outside a quoted string.
func cutParam(s string) (string, string) {
	q := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if q {
				i++
			}
		case '"':
			q = !q
		case ';':
			if !q {
				return s[:i], s[i+1:]
			}
		}
	}
	return s, ""
}

func unquote(s string) string {
	s = strings.TrimPrefix(s, `"`)
	s = strings.TrimSuffix(s, `"`)
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func percentEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' {
			b.WriteString("%25")
		} else {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// decode2231 decodes charset'language'percent-encoded (RFC 2231 §4) in any
// charset go-message knows; an unknown charset leaves the bytes, made valid.
func decode2231(v string) string {
	parts := strings.SplitN(v, "'", 3)
	if len(parts) != 3 {
		return percentDecode(v)
	}
	raw := percentDecode(parts[2])
	return toUTF8(strings.ToLower(parts[0]), raw)
}

func percentDecode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if hi, lo := unhex(s[i+1]), unhex(s[i+2]); hi >= 0 && lo >= 0 {
				b.WriteByte(byte(hi<<4 | lo))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// toUTF8 converts s from a charset; for an unknown one, or bytes that are
// not valid in it, Latin-1 is the guess that never fails.
func toUTF8(cs, s string) string {
	switch cs {
	case "", "utf-8", "utf8", "us-ascii", "ascii":
		if utf8.ValidString(s) {
			return s
		}
		return latin1(s)
	}
	r, err := charsetReader(cs, strings.NewReader(s))
	if err == nil {
		var b strings.Builder
		if _, err := io.Copy(&b, io.LimitReader(r, 1<<20)); err == nil && utf8.ValidString(b.String()) {
			return b.String()
		}
	}
	if utf8.ValidString(s) {
		return s
	}
	return latin1(s)
}

func latin1(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteRune(rune(s[i]))
	}
	return b.String()
}

// wordDecoder decodes RFC 2047 encoded words in any charset go-message
// knows.
var wordDecoder = &stdmime.WordDecoder{CharsetReader: charsetReader}

// decodeWords decodes the encoded words of an unstructured field value
// (RFC 2047 §5); a malformed word is left as it is. Raw 8-bit text that is
// not UTF-8 is taken as Latin-1.
func decodeWords(v string) string {
	if strings.Contains(v, "=?") {
		if d, err := wordDecoder.DecodeHeader(v); err == nil {
			v = d
		}
	}
	if !utf8.ValidString(v) {
		v = latin1(v)
	}
	return v
}
