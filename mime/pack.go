package mime

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	stdmime "mime"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/tern-mail/tern/internal/crlf"
	"github.com/tern-mail/tern/internal/sysexit"
)

// PackOptions is what goes into a message made by Pack.
type PackOptions struct {
	Subject  string
	From     string
	To, Cc   []string  // each may hold several addresses, comma-separated
	Body     io.Reader // the text part; nil for none
	HTML     string    // a file holding an HTML version of the text; "" for none
	Files    []string  // attachments
	Now      time.Time // for the Date field
	Hostname string    // for the Message-ID
	Rand     io.Reader // for the Message-ID and boundaries' uniqueness
	TempDir  string    // where a long body on a pipe is kept while it is read
	CRLF     bool      // end lines in CRLF (the wire form) instead of LF
}

// maxLine is the longest line allowed outside quoted-printable and base64
// (RFC 5322 §2.1.1: 998 characters before the CRLF).
const maxLine = 998

// Pack writes a complete message to out: a text part (and an HTML
// alternative), then one attachment per file. Binary data is base64 in
// 76-column lines; text is 7bit when it can be, quoted-printable when it
// has long lines or bytes outside ASCII. A text file with carriage returns
// is sent as base64 too, because a receiver may canonicalise the line
// endings of text sent as 7bit or quoted-printable (RFC 2046 §4.1.1) and
// the file would not come back byte for byte.
func Pack(out io.Writer, o PackOptions) error {
	if o.Body == nil && o.HTML == "" && len(o.Files) == 0 {
		return sysexit.New(sysexit.Usage, "nothing to pack: give a body on standard input or with -b, --html, or files")
	}
	var h mail.Header
	h.SetDate(o.Now)
	if o.Subject != "" {
		h.SetSubject(o.Subject) // RFC 2047 words where needed
	}
	for _, f := range []struct {
		key  string
		vals []string
	}{{"From", nonEmpty(o.From)}, {"To", o.To}, {"Cc", o.Cc}} {
		var addrs []*mail.Address
		for _, v := range f.vals {
			list, err := mail.ParseAddressList(v)
			if err != nil {
				return sysexit.New(sysexit.Usage, "parse %s address %q: %w", f.key, v, err)
			}
			addrs = append(addrs, list...)
		}
		if len(addrs) > 0 {
			h.SetAddressList(f.key, addrs)
		}
	}
	id, err := messageID(o)
	if err != nil {
		return err
	}
	h.Set("Message-Id", id)

	var body, html *content
	if o.Body != nil {
		if body, err = spool(o.Body, o.TempDir); err != nil {
			return sysexit.New(sysexit.IOErr, "read the body: %w", err)
		}
		defer body.close()
	}
	if o.HTML != "" {
		if html, err = openContent(o.HTML); err != nil {
			return err
		}
		defer html.close()
	}
	var files []*content
	defer func() {
		for _, f := range files {
			f.close()
		}
	}()
	for _, name := range o.Files {
		c, err := openContent(name)
		if err != nil {
			return err
		}
		files = append(files, c)
	}

	w := out
	var lf *crlf.LFWriter
	if !o.CRLF {
		lf = &crlf.LFWriter{W: out}
		w = lf
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	boundary, err := newBoundary(o.Rand)
	if err != nil {
		return err
	}
	altBoundary, err := newBoundary(o.Rand)
	if err != nil {
		return err
	}
	if err := writeMessage(bw, h, boundary, altBoundary, body, html, files); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return sysexit.New(sysexit.IOErr, "write the message: %w", err)
	}
	if lf != nil {
		if err := lf.Flush(); err != nil {
			return sysexit.New(sysexit.IOErr, "write the message: %w", err)
		}
	}
	return nil
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// messageID makes a Message-ID (RFC 5322 §3.6.4) unique by time and
// randomness, on the right the host name.
func messageID(o PackOptions) (string, error) {
	var rnd [8]byte
	if _, err := io.ReadFull(o.Rand, rnd[:]); err != nil {
		return "", sysexit.New(sysexit.OSErr, "make a Message-ID: %w", err)
	}
	host := o.Hostname
	if host == "" || strings.ContainsAny(host, "<>@ \t") {
		host = "localhost"
	}
	return "<" + strconv.FormatInt(o.Now.UnixNano(), 36) + "." + hex.EncodeToString(rnd[:]) + "@" + host + ">", nil
}

// newBoundary makes a boundary with "=_" in it, which can occur neither in
// base64 nor in quoted-printable (RFC 2045 §6.7 allows no "=_"), so only a
// 7bit part could ever collide with it, and randomness takes care of that.
func newBoundary(rnd io.Reader) (string, error) {
	var b [15]byte
	if _, err := io.ReadFull(rnd, b[:]); err != nil {
		return "", sysexit.New(sysexit.OSErr, "make a boundary: %w", err)
	}
	return "tern=_" + hex.EncodeToString(b[:]), nil
}

// ordered returns a header in the order people read it: go-message writes
// fields last added first, so they are added from the bottom up, the
// content fields first.
func ordered(h mail.Header, content func(*message.Header)) message.Header {
	var o message.Header
	content(&o)
	o.Set("MIME-Version", "1.0")
	keys := []string{"Date", "From", "To", "Cc", "Subject", "Message-Id"}
	for i := len(keys) - 1; i >= 0; i-- {
		if v := h.Get(keys[i]); v != "" {
			o.Set(keys[i], v)
		}
	}
	return o
}

func writeMessage(out io.Writer, h mail.Header, boundary, altBoundary string, body, html *content, files []*content) error {
	wrap := func(err error) error {
		if err == nil {
			return nil
		}
		if _, ok := err.(*sysexit.Error); ok {
			return err
		}
		return sysexit.New(sysexit.IOErr, "write the message: %w", err)
	}
	// The text: plain, or plain and HTML as alternatives (RFC 2046 §5.1.4),
	// the plainer first.
	var text []*content
	if body != nil {
		text = append(text, body)
	}
	if html != nil {
		html.typ = "text/html"
		text = append(text, html)
	}
	if len(files) == 0 && len(text) == 1 {
		top := ordered(h, func(o *message.Header) { setPartHeader(o, text[0], false) })
		mw, err := message.CreateWriter(out, top)
		if err != nil {
			return wrap(err)
		}
		if err := text[0].copyTo(mw); err != nil {
			return err
		}
		return wrap(mw.Close())
	}
	top := "multipart/mixed"
	if len(files) == 0 {
		top = "multipart/alternative"
	}
	mw, err := message.CreateWriter(out, ordered(h, func(o *message.Header) {
		o.SetContentType(top, map[string]string{"boundary": boundary})
	}))
	if err != nil {
		return wrap(err)
	}
	parent := mw
	var alt *message.Writer
	if len(text) == 2 && len(files) > 0 {
		// Not the outer boundary plus a suffix: a parser that matches
		// delimiters by prefix would cut the outer part there.
		var ah message.Header
		ah.SetContentType("multipart/alternative", map[string]string{"boundary": altBoundary})
		if alt, err = mw.CreatePart(ah); err != nil {
			return wrap(err)
		}
		parent = alt
	}
	for _, c := range text {
		if err := writePart(parent, c, false); err != nil {
			return err
		}
	}
	if alt != nil {
		if err := alt.Close(); err != nil {
			return wrap(err)
		}
	}
	for _, c := range files {
		if err := writePart(mw, c, true); err != nil {
			return err
		}
	}
	return wrap(mw.Close())
}

func writePart(parent *message.Writer, c *content, attachment bool) error {
	var h message.Header
	setPartHeader(&h, c, attachment)
	pw, err := parent.CreatePart(h)
	if err != nil {
		return sysexit.New(sysexit.IOErr, "write part for %s: %w", c.label(), err)
	}
	if err := c.copyTo(pw); err != nil {
		return err
	}
	if err := pw.Close(); err != nil {
		return sysexit.New(sysexit.IOErr, "write part for %s: %w", c.label(), err)
	}
	return nil
}

func setPartHeader(h *message.Header, c *content, attachment bool) {
	params := map[string]string{}
	enc := "base64"
	isText := strings.HasPrefix(c.typ, "text/")
	if isText && c.utf8 && !c.nul {
		if c.ascii {
			params["charset"] = "us-ascii"
		} else {
			params["charset"] = "utf-8"
		}
		switch {
		case c.cr:
			// See Pack: only base64 keeps carriage returns for sure.
		case c.ascii && c.longest <= maxLine:
			enc = "7bit"
		default:
			enc = "quoted-printable"
		}
	}
	ct := stdmime.FormatMediaType(c.typ, params)
	if ct == "" {
		ct = "application/octet-stream"
	}
	if attachment {
		name := filepath.Base(c.name)
		ct += ";" + formatParam("name", name)
		h.Set("Content-Disposition", "attachment;"+formatParam("filename", name))
	}
	h.Set("Content-Type", ct)
	h.Set("Content-Transfer-Encoding", enc)
}

// formatParam formats one parameter, with a leading space: a quoted string
// when it is plain ASCII, else RFC 2231 §4 "utf-8”" percent-encoding; a
// long value is split into numbered pieces (§3) so that no header line
// need be longer than 78 characters, since go-message folds only at spaces.
func formatParam(key, value string) string {
	if f := stdmime.FormatMediaType("x", map[string]string{key: value}); f != "" && len(f) < 70 {
		return " " + strings.TrimPrefix(f, "x; ")
	}
	var enc strings.Builder
	for i := 0; i < len(value); i++ {
		c := value[i]
		if c > ' ' && c < 0x7f && !strings.ContainsRune(`*'%()<>@,;:\"/[]?=`, rune(c)) {
			enc.WriteByte(c)
		} else {
			fmt.Fprintf(&enc, "%%%02X", c)
		}
	}
	e := enc.String()
	if len(e) < 60 {
		return " " + key + "*=utf-8''" + e
	}
	var b strings.Builder
	for n := 0; e != ""; n++ {
		cut := min(len(e), 54)
		// Never split a %XX escape.
		if i := strings.LastIndexByte(e[:cut], '%'); i >= 0 && i > cut-3 && cut < len(e) {
			cut = i
		}
		piece := e[:cut]
		e = e[cut:]
		if n > 0 {
			b.WriteString(";")
		}
		if n == 0 {
			fmt.Fprintf(&b, " %s*0*=utf-8''%s", key, piece)
		} else {
			fmt.Fprintf(&b, " %s*%d*=%s", key, n, piece)
		}
	}
	return b.String()
}

// content is a body or a file to send, with what a first pass over it
// found: whether it is text, and which encoding it needs.
type content struct {
	name    string // the file's name; "" for the body
	r       io.ReadSeeker
	closer  func()
	typ     string
	utf8    bool // valid UTF-8 throughout
	ascii   bool
	nul     bool
	cr      bool
	longest int // longest line, in bytes
}

func (c *content) label() string {
	if c.name == "" {
		return "the body"
	}
	return c.name
}

func (c *content) close() {
	if c.closer != nil {
		c.closer()
	}
}

func (c *content) copyTo(w io.Writer) error {
	if _, err := c.r.Seek(0, io.SeekStart); err != nil {
		return sysexit.New(sysexit.IOErr, "read %s: %w", c.label(), err)
	}
	if _, err := io.Copy(w, c.r); err != nil {
		return sysexit.New(sysexit.IOErr, "copy %s into the message: %w", c.label(), err)
	}
	return nil
}

func openContent(name string) (*content, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, sysexit.New(sysexit.NoInput, "open %s: %w", name, err)
	}
	if st, err := f.Stat(); err == nil && !st.Mode().IsRegular() {
		f.Close()
		return nil, sysexit.New(sysexit.NoInput, "open %s: not a regular file", name)
	}
	c := &content{name: name, r: f, closer: func() { f.Close() }}
	if err := c.scan(); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// spool keeps a body read from a pipe, in memory while it is short and in
// an unlinked temporary file when it is long, so that it can be read twice.
func spool(r io.Reader, dir string) (*content, error) {
	const inMemory = 1 << 20
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(r, inMemory+1))
	if err != nil {
		return nil, err
	}
	c := &content{typ: "text/plain"}
	if n <= inMemory {
		c.r = bytes.NewReader(buf.Bytes())
	} else {
		f, err := os.CreateTemp(dir, "tern-mime-")
		if err != nil {
			return nil, err
		}
		os.Remove(f.Name())
		c.closer = func() { f.Close() }
		if _, err := io.Copy(f, io.MultiReader(&buf, r)); err != nil {
			f.Close()
			return nil, err
		}
		c.r = f
	}
	if err := c.scan(); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// scan reads the content once to learn its type and needs.
func (c *content) scan() error {
	br := bufio.NewReaderSize(c.r, 64<<10)
	head, _ := br.Peek(512)
	if c.typ == "" {
		c.typ = TypeOf(c.name, head)
	}
	c.utf8, c.ascii = true, true
	line := 0
	var carry []byte // an incomplete UTF-8 sequence at a buffer's end
	buf := make([]byte, 64<<10)
	for {
		n, err := br.Read(buf)
		chunk := append(carry, buf[:n]...)
		carry = nil
		for _, b := range chunk {
			switch {
			case b == '\n':
				line = 0
				continue
			case b == '\r':
				c.cr = true
			case b == 0:
				c.nul = true
			case b >= 0x80:
				c.ascii = false
			}
			line++
			if line > c.longest {
				c.longest = line
			}
		}
		if c.utf8 {
			valid := chunk
			if err == nil {
				// Keep a possibly cut sequence for the next round.
				for k := 1; k <= 3 && k <= len(chunk); k++ {
					if utf8.RuneStart(chunk[len(chunk)-k]) {
						if !utf8.FullRune(chunk[len(chunk)-k:]) {
							valid = chunk[:len(chunk)-k]
							carry = append([]byte(nil), chunk[len(chunk)-k:]...)
							line -= k // counted again with the next round
						}
						break
					}
				}
			}
			if !utf8.Valid(valid) {
				c.utf8 = false
				carry = nil
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return sysexit.New(sysexit.IOErr, "read %s: %w", c.label(), err)
		}
	}
	return nil
}
