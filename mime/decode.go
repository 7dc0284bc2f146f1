package mime

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"io"
	"strings"
)

// The transfer decoders here are lenient on purpose: mail in the wild has
// base64 with stray characters and quoted-printable with bare '=' signs, and
// a reader that stops at the first bad byte loses the rest of a file that
// every other mail program shows. Each counts what it had to skip, so the
// caller can warn about the part by name.

// decoder is a transfer decoder that knows how much of its input it could
// not make sense of.
type decoder interface {
	io.Reader
	bad() int64
}

// newDecoder returns the decoded body for a Content-Transfer-Encoding
// (RFC 2045 §6). Unknown encodings are passed through and reported by ok.
func newDecoder(enc string, r io.Reader) (d decoder, ok bool) {
	switch enc {
	case "base64":
		return &base64Reader{r: r}, true
	case "quoted-printable":
		return &qpReader{r: bufio.NewReaderSize(r, 32<<10)}, true
	case "x-uuencode", "x-uue", "uuencode", "x-uu":
		return newUUBodyReader(r), true
	case "", "7bit", "8bit", "binary":
		return plain{r}, true
	}
	return plain{r}, false
}

type plain struct{ io.Reader }

func (plain) bad() int64 { return 0 }

// base64Reader decodes base64 (RFC 2045 §6.8), skipping every character
// outside the alphabet as §6.8 asks ("Any characters outside of the base64
// alphabet are to be ignored"), and taking '=' as the end of a quantum
// rather than of the whole body, since concatenated encodings occur.
type base64Reader struct {
	r       io.Reader
	in      [8192]byte
	quantum [4]byte // the characters of a quantum not yet complete
	nq      int
	out     []byte
	outBuf  [6144 + 3]byte
	skipped int64
	err     error
}

func (b *base64Reader) bad() int64 { return b.skipped }

func (b *base64Reader) Read(p []byte) (int, error) {
	for len(b.out) == 0 {
		if b.err != nil {
			return 0, b.err
		}
		n, err := b.r.Read(b.in[:])
		b.out = b.decode(b.in[:n])
		if err != nil {
			if err == io.EOF && b.nq > 0 {
				b.out = append(b.out, b.flush()...)
			}
			b.err = err
		}
	}
	n := copy(p, b.out)
	b.out = b.out[n:]
	return n, nil
}

// b64index maps a byte to its value in the base64 alphabet, or to one of
// the classes below it. A table lookup per byte, rather than a library
// call per quantum, is what keeps the big attachment of tests/bench/mime.sh
// at memory speed.
var b64index = func() (t [256]int8) {
	for i := range t {
		t[i] = b64junk
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = int8(i)
	}
	t['='] = b64pad
	for _, c := range "\r\n \t" {
		t[c] = b64space
	}
	return t
}()

const (
	b64junk  = -1
	b64pad   = -2
	b64space = -3
)

func (b *base64Reader) decode(in []byte) []byte {
	out := b.outBuf[:0]
	for i := 0; i < len(in); i++ {
		// Whole quanta straight from the input: the common case, a line of
		// clean base64 and nothing carried over from the last read.
		if b.nq == 0 {
			for i+4 <= len(in) {
				c0, c1, c2, c3 := b64index[in[i]], b64index[in[i+1]], b64index[in[i+2]], b64index[in[i+3]]
				if c0|c1|c2|c3 < 0 {
					break
				}
				v := uint32(c0)<<18 | uint32(c1)<<12 | uint32(c2)<<6 | uint32(c3)
				out = append(out, byte(v>>16), byte(v>>8), byte(v))
				i += 4
			}
			if i == len(in) {
				break
			}
		}
		c := in[i]
		switch v := b64index[c]; {
		case v >= 0:
			b.quantum[b.nq] = c
			b.nq++
			if b.nq == 4 {
				q := &b.quantum
				v := uint32(b64index[q[0]])<<18 | uint32(b64index[q[1]])<<12 | uint32(b64index[q[2]])<<6 | uint32(b64index[q[3]])
				out = append(out, byte(v>>16), byte(v>>8), byte(v))
				b.nq = 0
			}
		case v == b64pad:
			out = append(out, b.flush()...)
		case v == b64space:
		default:
			b.skipped++
		}
	}
	return out
}

// flush decodes a partial quantum: two or three characters carry one or two
// bytes; a lone character carries none and is counted as damage.
func (b *base64Reader) flush() []byte {
	if b.nq == 0 {
		return nil
	}
	var dst [3]byte
	n, _ := base64.RawStdEncoding.Decode(dst[:], b.quantum[:b.nq])
	if b.nq == 1 {
		b.skipped++
	}
	b.nq = 0
	return dst[:n]
}

// qpReader decodes quoted-printable (RFC 2045 §6.7): "=XX" is a byte, '='
// at the end of a line is a soft line break, and trailing white space on a
// line is dropped (rule 3). An '=' followed by anything else is kept as it
// is, which is what §6.7's note on robustness recommends.
type qpReader struct {
	r   *bufio.Reader
	out []byte
	buf []byte
	bd  int64
	err error
}

func (q *qpReader) bad() int64 { return q.bd }

func (q *qpReader) Read(p []byte) (int, error) {
	for len(q.out) == 0 {
		if q.err != nil {
			return 0, q.err
		}
		line, err := q.r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			err = nil
		}
		q.out = q.decodeLine(line)
		if err != nil {
			q.err = err
		}
	}
	n := copy(p, q.out)
	q.out = q.out[n:]
	return n, nil
}

func (q *qpReader) decodeLine(line []byte) []byte {
	out := q.buf[:0]
	body, eol := line, []byte(nil)
	if bytes.HasSuffix(body, []byte("\r\n")) {
		body, eol = body[:len(body)-2], []byte("\r\n")
	} else if bytes.HasSuffix(body, []byte("\n")) {
		body, eol = body[:len(body)-1], []byte("\n")
	}
	if eol != nil {
		body = bytes.TrimRight(body, " \t")
	}
	// A long line read in pieces may end in the middle of an escape; keep
	// the tail for the next piece by reading ahead (bufio holds 32 KiB).
	if eol == nil && len(body) > 0 {
		if i := bytes.LastIndexByte(body, '='); i >= 0 && i >= len(body)-2 {
			more, _ := q.r.Peek(3 - (len(body) - i))
			k := 0
			for k < len(more) && unhex(more[k]) >= 0 {
				k++
			}
			body = append(append([]byte(nil), body...), more[:k]...)
			_, _ = q.r.Discard(k)
		}
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		if c != '=' {
			out = append(out, c)
			continue
		}
		if i == len(body)-1 && eol != nil {
			eol = nil // soft line break
			break
		}
		if i+2 < len(body) {
			if hi, lo := unhex(body[i+1]), unhex(body[i+2]); hi >= 0 && lo >= 0 {
				out = append(out, byte(hi<<4|lo))
				i += 2
				continue
			}
		}
		q.bd++
		out = append(out, c)
	}
	q.buf = out
	return append(out, eol...)
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	case 'a' <= c && c <= 'f':
		// Lower case is not allowed by §6.7 but is common and unambiguous.
		return int(c - 'a' + 10)
	}
	return -1
}

// uuBodyReader decodes a body that is uuencoded as a whole
// (Content-Transfer-Encoding: x-uuencode), ignoring the begin and end lines.
type uuBodyReader struct {
	r   *bufio.Reader
	out []byte
	bd  int64
	err error
	end bool
}

func newUUBodyReader(r io.Reader) *uuBodyReader {
	return &uuBodyReader{r: bufio.NewReaderSize(r, 4096)}
}

func (u *uuBodyReader) bad() int64 { return u.bd }

func (u *uuBodyReader) Read(p []byte) (int, error) {
	for len(u.out) == 0 {
		if u.err != nil {
			return 0, u.err
		}
		line, err := readLine(u.r)
		if err != nil {
			u.err = err
		}
		if u.end || len(line) == 0 {
			continue
		}
		s := string(line)
		if strings.HasPrefix(s, "begin ") {
			continue
		}
		if strings.TrimSpace(s) == "end" {
			u.end = true
			continue
		}
		var bad bool
		u.out, bad = uuDecodeLine(u.out[:0], line)
		if bad {
			u.bd++
		}
	}
	n := copy(p, u.out)
	u.out = u.out[n:]
	return n, nil
}

// uuDecodeLine decodes one line of uuencoding: a length character, then
// groups of four characters for three bytes each. A line shorter than its
// length says is decoded as far as it goes and reported bad.
func uuDecodeLine(dst, line []byte) ([]byte, bool) {
	line = bytes.TrimRight(line, "\r\n")
	if len(line) == 0 {
		return dst, false
	}
	n := int((line[0] - ' ') & 0x3f)
	if n == 0 {
		return dst, false
	}
	bad := false
	data := line[1:]
	if need := (n + 2) / 3 * 4; len(data) < need {
		// Trailing spaces are often stripped in transit; they encode zero.
		data = append(append([]byte(nil), data...), bytes.Repeat([]byte{' '}, need-len(data))...)
	}
	var q [4]byte
	for i := 0; n > 0 && i+4 <= len(data); i += 4 {
		for j := 0; j < 4; j++ {
			c := data[i+j]
			if c < ' ' || c > '`' {
				bad = true
			}
			q[j] = (c - ' ') & 0x3f
		}
		b := [3]byte{q[0]<<2 | q[1]>>4, q[1]<<4 | q[2]>>2, q[2]<<6 | q[3]}
		k := min(n, 3)
		dst = append(dst, b[:k]...)
		n -= k
	}
	return dst, bad
}

// readLine reads one line without its line ending; a line longer than the
// reader's buffer comes in pieces. The slice is valid until the next read.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return line, nil
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if err == io.EOF && len(line) > 0 {
		err = nil
	}
	return line, err
}

// crlfToLF turns the canonical CRLF line breaks of a text part (RFC 2046
// §4.1.1) into the local convention. It is applied only to text sent as
// 7bit, 8bit or quoted-printable, where CRLF is what the wire form always
// has; a base64 text part keeps its bytes exactly as the sender encoded them.
type crlfToLF struct {
	r      io.Reader
	buf    [32 << 10]byte
	out    []byte
	holdCR bool
	err    error
}

func (c *crlfToLF) Read(p []byte) (int, error) {
	for len(c.out) == 0 {
		if c.err != nil {
			if c.holdCR {
				c.holdCR = false
				c.out = []byte{'\r'}
				break
			}
			return 0, c.err
		}
		n, err := c.r.Read(c.buf[1:])
		c.err = err
		in := c.buf[1 : 1+n]
		if c.holdCR {
			c.buf[0] = '\r'
			in = c.buf[:1+n]
			c.holdCR = false
		}
		if len(in) > 0 && in[len(in)-1] == '\r' {
			c.holdCR = true
			in = in[:len(in)-1]
		}
		w := 0
		for i := 0; i < len(in); i++ {
			if in[i] == '\r' && i+1 < len(in) && in[i+1] == '\n' {
				continue
			}
			in[w] = in[i]
			w++
		}
		c.out = in[:w]
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	return n, nil
}
