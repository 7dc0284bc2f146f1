package smtpclient

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"

	"github.com/emersion/go-message/textproto"
)

// ErrHeader8Bit is a header field with raw 8-bit octets: no content
// transfer encoding applies to a header, so such a message cannot go to a
// server without 8BITMIME (or, for UTF-8 headers, SMTPUTF8).
var ErrHeader8Bit = errors.New("a header field has 8-bit octets, which no transfer encoding can carry")

// ConversionError is a message that cannot be made 7-bit: a header with
// 8-bit octets, a broken MIME structure, nesting too deep.
type ConversionError struct{ Err error }

func (e *ConversionError) Error() string { return "converting to 7 bit: " + e.Err.Error() }
func (e *ConversionError) Unwrap() error { return e.Err }

// maxMIMEDepth bounds the nesting of multiparts and message/rfc822 parts
// followed while converting.
const maxMIMEDepth = 32

// To7Bit copies a message from r to w, re-encoding what is not 7-bit, for
// a server that does not offer 8BITMIME (RFC 6152 §3; RFC 1652 §5): the
// body of a text part declared 7bit, 8bit or binary, or with no
// Content-Transfer-Encoding, becomes quoted-printable, that of any other
// leaf part base64; multiparts and message/rfc822 parts are followed
// into. Headers are copied as they are, except Content-Transfer-Encoding.
// A part already quoted-printable or base64 is copied unchanged.
//
// A multipart's preamble and epilogue, text meant for mail readers
// without MIME, are not kept: go-message's multipart reader drops them.
//
// Errors of r are returned as they are; every other error is a
// *ConversionError.
func To7Bit(w io.Writer, r io.Reader) error {
	src := &sourceReader{r: r}
	err := convertEntity(w, bufio.NewReaderSize(src, bodyBuffer), 0)
	switch {
	case err == nil:
		return nil
	case src.err != nil:
		return src.err
	}
	var ce *ConversionError
	if errors.As(err, &ce) {
		return err
	}
	return &ConversionError{Err: err}
}

// sourceReader remembers an error of the message's own reader, so that a
// failure to read the queue file is not taken for a bad message.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

func convertEntity(w io.Writer, br *bufio.Reader, depth int) error {
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return fmt.Errorf("reading a header: %w", err)
	}
	return convertBody(w, h, br, depth, true)
}

// convertBody writes header h (when writeHeader) and the converted body.
func convertBody(w io.Writer, h textproto.Header, body io.Reader, depth int, writeHeader bool) error {
	if depth > maxMIMEDepth {
		return &ConversionError{Err: fmt.Errorf("MIME parts nested deeper than %d", maxMIMEDepth)}
	}
	if err := check7BitHeader(h); err != nil {
		return err
	}
	// RFC 2045 §5.2: no Content-Type, or one that does not parse, is
	// text/plain.
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		mt = "text/plain"
	}
	cte := strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding")))
	identity := cte == "" || cte == "7bit" || cte == "8bit" || cte == "binary"
	put := func() error {
		if !writeHeader {
			return nil
		}
		if depth == 0 && !h.Has("Mime-Version") {
			// RFC 2045 §4: the encodings set here mean nothing without it.
			h.AddRaw([]byte("MIME-Version: 1.0\r\n"))
		}
		return textproto.WriteHeader(w, h)
	}
	switch {
	case !identity:
		// Already quoted-printable or base64 (or an encoding we do not know,
		// which we pass on rather than guess at).
		if err := put(); err != nil {
			return err
		}
		_, err := io.Copy(w, body)
		return err
	case strings.HasPrefix(mt, "multipart/") && params["boundary"] != "":
		// RFC 2045 §6.4: a multipart is 7bit, 8bit or binary; after the
		// conversion it is 7bit.
		if cte != "" {
			h.Set("Content-Transfer-Encoding", "7bit")
		}
		if err := put(); err != nil {
			return err
		}
		mr := textproto.NewMultipartReader(body, params["boundary"])
		mw := textproto.NewMultipartWriter(w)
		if err := mw.SetBoundary(params["boundary"]); err != nil {
			return &ConversionError{Err: fmt.Errorf("multipart boundary %q: %w", params["boundary"], err)}
		}
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("reading a MIME part: %w", err)
			}
			ph := p.Header.Copy()
			if err := check7BitHeader(ph); err != nil {
				return err
			}
			// The part's header is decided before its body is read, so it
			// can be written first.
			decidePartHeader(&ph)
			pw, err := mw.CreatePart(ph)
			if err != nil {
				return err
			}
			if err := convertBody(pw, p.Header, p, depth+1, false); err != nil {
				return err
			}
		}
		return mw.Close()
	case mt == "message/rfc822" || mt == "message/global":
		if cte != "" {
			h.Set("Content-Transfer-Encoding", "7bit")
		}
		if err := put(); err != nil {
			return err
		}
		return convertEntity(w, bufio.NewReader(body), depth+1)
	case strings.HasPrefix(mt, "text/"):
		h.Set("Content-Transfer-Encoding", "quoted-printable")
		if err := put(); err != nil {
			return err
		}
		qw := quotedprintable.NewWriter(w)
		if _, err := io.Copy(qw, body); err != nil {
			return err
		}
		return qw.Close()
	default:
		h.Set("Content-Transfer-Encoding", "base64")
		if err := put(); err != nil {
			return err
		}
		lw := &lineBreaker{w: w}
		bw := base64.NewEncoder(base64.StdEncoding, lw)
		if _, err := io.Copy(bw, body); err != nil {
			return err
		}
		if err := bw.Close(); err != nil {
			return err
		}
		return lw.end()
	}
}

// decidePartHeader sets the Content-Transfer-Encoding that convertBody
// will give a part, the same decision made from the same header.
func decidePartHeader(h *textproto.Header) {
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		mt = "text/plain"
	}
	cte := strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding")))
	if cte != "" && cte != "7bit" && cte != "8bit" && cte != "binary" {
		return
	}
	switch {
	case strings.HasPrefix(mt, "multipart/") && params["boundary"] != "",
		mt == "message/rfc822", mt == "message/global":
		if cte != "" {
			h.Set("Content-Transfer-Encoding", "7bit")
		}
	case strings.HasPrefix(mt, "text/"):
		h.Set("Content-Transfer-Encoding", "quoted-printable")
	default:
		h.Set("Content-Transfer-Encoding", "base64")
	}
}

func check7BitHeader(h textproto.Header) error {
	for f := h.Fields(); f.Next(); {
		raw, err := f.Raw()
		if err != nil {
			return err
		}
		for _, c := range raw {
			if c >= 0x80 {
				return &ConversionError{Err: ErrHeader8Bit}
			}
		}
	}
	return nil
}

// lineBreaker breaks base64 text into lines of 76 characters
// (RFC 2045 §6.8).
type lineBreaker struct {
	w   io.Writer
	col int
}

func (l *lineBreaker) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(76-l.col, len(p))
		if _, err := l.w.Write(p[:k]); err != nil {
			return n - len(p), err
		}
		l.col += k
		p = p[k:]
		if l.col == 76 {
			if _, err := io.WriteString(l.w, "\r\n"); err != nil {
				return n - len(p), err
			}
			l.col = 0
		}
	}
	return n, nil
}

func (l *lineBreaker) end() error {
	if l.col == 0 {
		return nil
	}
	_, err := io.WriteString(l.w, "\r\n")
	return err
}
