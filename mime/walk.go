package mime

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Part describes one entity of a message.
type Part struct {
	// Number is the part's number as IMAP gives it (RFC 3501 §6.4.5
	// BODY[section]): "1", "2.3", ...; a multipart that IMAP gives no
	// number (the top one, or the body of a message/rfc822 part) has "".
	Number      string
	Depth       int
	Type        string // media type, lower case, "text/plain" by default
	Params      map[string]string
	Charset     string
	Encoding    string // Content-Transfer-Encoding, lower case
	Disposition string // "inline", "attachment" or ""
	Filename    string // decoded, not yet made safe
	Leaf        bool
}

// Attachment tells whether a leaf is what people call an attachment: it
// was sent as one, or it has a name, or it is not text for reading.
func (p *Part) Attachment() bool {
	if p.Disposition == "attachment" || p.Filename != "" {
		return true
	}
	major, _, _ := strings.Cut(p.Type, "/")
	return major != "text" && major != "message" && major != "multipart"
}

// Text tells whether a leaf is text to read (text/*, not an attachment).
func (p *Part) Text() bool {
	return strings.HasPrefix(p.Type, "text/") && !p.Attachment()
}

// Limits on the shape of a message.
const maxDepth = 32 // nested multiparts and messages

// errStop ends a walk early without being an error.
var errStop = errors.New("stop")

// walker goes through a message once, streaming, and calls leaf for each
// leaf part with its transfer-decoded body. Nothing of a body is held in
// memory beyond a few buffers per level of nesting.
type walker struct {
	// leaf receives each leaf with its decoded body; it may stop reading
	// early. Returning errStop ends the walk.
	leaf func(p *Part, body io.Reader) error
	// container, when set, is told of each multipart and message part
	// before its children.
	container func(p *Part)
	warn      func(part, msg string, args ...any)

	leaves    int   // leaf parts seen
	topFields int   // fields in the message's own header
	content   int64 // decoded bytes seen in leaves
}

func (w *walker) walk(r io.Reader) error {
	err := w.entity(bufio.NewReaderSize(r, entityBuf), "", "1", 0, "text/plain")
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

// entity reads one entity: a header, then a body. prefix numbers the
// children of a multipart; self is the number of a leaf (the two differ
// for the top level and for the body of a message/rfc822 part).
func (w *walker) entity(r *bufio.Reader, prefix, self string, depth int, defType string) error {
	hd, err := readHeader(r)
	if err != nil {
		return fmt.Errorf("read header of part %s: %w", label(self), err)
	}
	if hd.truncated {
		w.warn(self, "header too long; the rest of it is ignored")
	}
	if hd.bad > 0 {
		w.warn(self, "malformed header lines ignored", "lines", hd.bad)
	}
	var body io.Reader = r
	if hd.body != nil {
		body = io.MultiReader(bytes.NewReader(hd.body), r)
	}
	p := describe(hd, defType)
	p.Depth = depth
	if depth == 0 {
		w.topFields = len(hd.fields)
	}
	major, _, _ := strings.Cut(p.Type, "/")

	composite := major == "multipart" || p.Type == "message/rfc822" || p.Type == "message/global"
	if composite && depth >= maxDepth {
		w.warn(self, "nested too deep; this part is skipped", "type", p.Type)
		_, err := io.Copy(io.Discard, body)
		return err
	}
	if major == "multipart" && p.Params["boundary"] == "" {
		w.warn(self, "multipart without a boundary; read as text")
		p.Type, major = "text/plain", "text"
	}
	switch {
	case major == "multipart":
		if prefix == self {
			p.Number = self
		}
		if w.container != nil {
			w.container(&p)
		}
		return w.multipart(p, body, prefix, depth)
	case p.Type == "message/rfc822" || p.Type == "message/global":
		p.Number = self
		if w.container != nil {
			w.container(&p)
		}
		dec, known := newDecoder(p.Encoding, body)
		if !known {
			w.warn(self, "unknown transfer encoding; taken as 8bit", "encoding", p.Encoding)
		}
		if err := w.entity(bufio.NewReaderSize(dec, entityBuf), self, join(self, "1"), depth+1, "text/plain"); err != nil {
			return err
		}
		_, err := io.Copy(io.Discard, body)
		return err
	}
	p.Number = self
	p.Leaf = true
	return w.leafPart(&p, body)
}

func (w *walker) leafPart(p *Part, body io.Reader) error {
	w.leaves++
	dec, known := newDecoder(p.Encoding, body)
	if !known {
		w.warn(p.Number, "unknown transfer encoding; taken as 8bit", "encoding", p.Encoding)
	}
	var r io.Reader = dec
	if strings.HasPrefix(p.Type, "text/") && p.Encoding != "base64" {
		r = &crlfToLF{r: r}
	}
	cr := &countReader{r: r}
	err := w.leaf(p, cr)
	if err == nil {
		// Whatever the consumer left is read, to find the next part.
		_, err = io.Copy(io.Discard, cr)
	}
	w.content += cr.n
	if n := dec.bad(); n > 0 {
		w.warn(p.Number, "invalid "+p.Encoding+" data skipped", "bytes", n)
	}
	return err
}

func (w *walker) multipart(p Part, body io.Reader, prefix string, depth int) error {
	if p.Encoding != "" && p.Encoding != "7bit" && p.Encoding != "8bit" && p.Encoding != "binary" {
		// RFC 2045 §6.4 forbids it, but some senders encode a whole multipart.
		w.warn(p.Number, "multipart with a transfer encoding; decoded first", "encoding", p.Encoding)
		dec, _ := newDecoder(p.Encoding, body)
		body = dec
	}
	defType := "text/plain"
	if p.Type == "multipart/digest" {
		defType = "message/rfc822" // RFC 2046 §5.1.5
	}
	s := newSplitter(body, p.Params["boundary"])
	// The preamble is to be ignored (RFC 2046 §5.1.1), unless the boundary
	// never comes: then it is all the body there is, and is read as text.
	pre := bufio.NewReaderSize(s.preamble(), lineBuf)
	head, _ := pre.Peek(lineBuf)
	switch {
	case len(head) == lineBuf:
		// A preamble this long is no preamble; keep it as text, numbered 0.
		w.warn(label(p.Number), "long text before the first boundary; kept as part 0")
		pp := &Part{Number: join(prefix, "0"), Depth: depth + 1, Type: "text/plain", Charset: "us-ascii", Leaf: true, Params: map[string]string{}}
		if err := w.leafPart(pp, pre); err != nil {
			return err
		}
		if !s.found {
			w.warn(label(p.Number), "boundary not found")
			return nil
		}
	case !s.found && len(bytes.TrimSpace(head)) > 0:
		w.warn(label(p.Number), "boundary not found; the body is read as one text part")
		pp := &Part{Number: join(prefix, "1"), Depth: depth + 1, Type: "text/plain", Charset: "us-ascii", Leaf: true, Params: map[string]string{}}
		return w.leafPart(pp, pre)
	case !s.found:
		w.warn(label(p.Number), "boundary not found and the body is empty")
		return nil
	}
	if _, err := io.Copy(io.Discard, pre); err != nil {
		return err
	}
	n := 0
	for {
		part, ok := s.next()
		if !ok {
			break
		}
		n++
		if n > maxParts {
			w.warn(label(p.Number), "too many parts; the rest are skipped", "parts", maxParts)
			_, err := io.Copy(io.Discard, body)
			return err
		}
		num := join(prefix, fmt.Sprint(n))
		if err := w.entity(bufio.NewReaderSize(part, entityBuf), num, num, depth+1, defType); err != nil {
			return err
		}
	}
	if s.err != nil {
		return fmt.Errorf("read part %s: %w", label(p.Number), s.err)
	}
	if !s.closed {
		w.warn(label(p.Number), "no closing boundary; the message may be cut short")
	} else {
		s.epilogue()
	}
	return nil
}

const maxParts = 10000

func join(prefix, n string) string {
	if prefix == "" {
		return n
	}
	return prefix + "." + n
}

func label(num string) string {
	if num == "" {
		return "top"
	}
	return num
}

// describe reads what a part says about itself, with the defaults of
// RFC 2045 §5.2 and §6.1 where it says nothing or nonsense.
func describe(hd header, defType string) Part {
	p := Part{Type: defType, Params: map[string]string{}}
	if v := hd.get("Content-Type"); v != "" {
		t, params := mediaType(v)
		if strings.Count(t, "/") == 1 && !strings.HasPrefix(t, "/") && !strings.HasSuffix(t, "/") {
			p.Type, p.Params = t, params
		} else if params != nil {
			p.Params = params
		}
	}
	p.Charset = strings.ToLower(p.Params["charset"])
	if p.Charset == "" && strings.HasPrefix(p.Type, "text/") {
		p.Charset = "us-ascii"
	}
	p.Encoding = strings.ToLower(strings.TrimSpace(hd.get("Content-Transfer-Encoding")))
	if i := strings.IndexAny(p.Encoding, " \t;("); i >= 0 {
		p.Encoding = p.Encoding[:i]
	}
	disp, dparams := mediaType(hd.get("Content-Disposition"))
	p.Disposition = disp
	name := dparams["filename"]
	if name == "" {
		name = p.Params["name"]
	}
	// RFC 2047 §5 forbids encoded words in parameters, yet most mailers
	// write filenames that way (go-message among them), so they are read.
	p.Filename = decodeWords(name)
	return p
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}
