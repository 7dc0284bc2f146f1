// Package crlf converts between the network's line ending (CRLF) and the
// one messages have in Unix files and pipes (LF).
package crlf

import "io"

// LFWriter turns CRLF into LF as it writes to W; a CR not followed by LF
// stays. Flush writes a CR held at the end of the last Write.
type LFWriter struct {
	W      io.Writer
	holdCR bool
	buf    []byte
}

func (l *LFWriter) Write(p []byte) (int, error) {
	out := l.buf[:0]
	for _, b := range p {
		if l.holdCR {
			l.holdCR = false
			if b != '\n' {
				out = append(out, '\r')
			}
		}
		if b == '\r' {
			l.holdCR = true
			continue
		}
		out = append(out, b)
	}
	l.buf = out
	if _, err := l.W.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes the CR held back from the end of the last Write, if any.
func (l *LFWriter) Flush() error {
	if !l.holdCR {
		return nil
	}
	l.holdCR = false
	_, err := l.W.Write([]byte{'\r'})
	return err
}
