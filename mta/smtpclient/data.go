package smtpclient

import (
	"bytes"
	"io"
)

// dotWriter turns the queue's LF-ended text into the DATA stream of
// RFC 5321 §4.1.1.4: every line ends in CRLF (an LF alone becomes CRLF, a
// CRLF stays as it is), a line starting with "." gets a second one
// (§4.5.2), and Close ends the text with "CRLF.CRLF".
type dotWriter struct {
	w         byteWriter
	lineStart bool // the next octet begins a line
	afterCR   bool // the last octet written was a CR
}

type byteWriter interface {
	io.Writer
	io.ByteWriter
}

var crlf = []byte("\r\n")

func newDotWriter(w byteWriter) *dotWriter { return &dotWriter{w: w, lineStart: true} }

func (d *dotWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if d.lineStart && p[0] == '.' {
			if err := d.w.WriteByte('.'); err != nil {
				return n - len(p), err
			}
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if _, err := d.w.Write(p); err != nil {
				return n - len(p), err
			}
			d.lineStart, d.afterCR = false, p[len(p)-1] == '\r'
			return n, nil
		}
		seg := p[:i]
		cr := d.afterCR
		if len(seg) > 0 {
			cr = seg[len(seg)-1] == '\r'
			if cr {
				seg = seg[:len(seg)-1]
			}
			if _, err := d.w.Write(seg); err != nil {
				return n - len(p), err
			}
		} else if cr {
			// The CR of this CRLF went out at the end of the last Write.
			if err := d.w.WriteByte('\n'); err != nil {
				return n - len(p), err
			}
			d.lineStart, d.afterCR = true, false
			p = p[i+1:]
			continue
		}
		if _, err := d.w.Write(crlf); err != nil {
			return n - len(p), err
		}
		d.lineStart, d.afterCR = true, false
		p = p[i+1:]
	}
	return n, nil
}

// Close ends the text: a last line without its line end gets one, then
// the terminating ".".
func (d *dotWriter) Close() error {
	var err error
	switch {
	case d.afterCR:
		_, err = io.WriteString(d.w, "\n.\r\n")
	case !d.lineStart:
		_, err = io.WriteString(d.w, "\r\n.\r\n")
	default:
		_, err = io.WriteString(d.w, ".\r\n")
	}
	return err
}
