package mime

import (
	"bufio"
	"bytes"
	"io"
)

// splitter cuts a multipart body into its parts at the delimiter lines of
// one boundary (RFC 2046 §5.1.1), streaming: it never holds more than one
// buffer of the body. It is given the body alone, already cut off at the
// enclosing boundaries, so a nested multipart whose closing delimiter is
// missing still ends where its parent's next part starts.
type splitter struct {
	br   *bufio.Reader
	dash []byte // "--" + boundary

	head      []byte // a line ending to hand out before cur
	headBuf   [2]byte
	cur       []byte // bytes of the current line piece not yet handed out
	eol       [2]byte
	neol      int  // a held-back line ending: it belongs to a delimiter if one follows
	lineStart bool // the next piece read starts a line
	partEnd   bool // the current part has ended (a delimiter or the end of input)

	found  bool // a delimiter line has been seen
	closed bool // the close delimiter has been seen
	eof    bool
	err    error // a read error other than io.EOF
}

const (
	lineBuf   = 64 << 10 // longest line piece a multipart body is scanned in
	entityBuf = 16 << 10 // longest header line kept whole
)

func newSplitter(r io.Reader, boundary string) *splitter {
	return &splitter{br: bufio.NewReaderSize(r, lineBuf), dash: []byte("--" + boundary), lineStart: true}
}

// preamble returns the text before the first delimiter line.
func (s *splitter) preamble() io.Reader { return (*partReader)(s) }

// next moves to the next part, reading past what is left of the current
// one; false when there is none (closed, or the input ended).
func (s *splitter) next() (io.Reader, bool) {
	for !s.partEnd {
		if _, err := io.Copy(io.Discard, (*partReader)(s)); err != nil {
			return nil, false
		}
	}
	if s.closed || s.eof {
		return nil, false
	}
	s.partEnd = false
	s.neol = 0
	return (*partReader)(s), true
}

// epilogue discards what follows the close delimiter, up to the end of this
// body; it reports how many bytes that was.
func (s *splitter) epilogue() int64 {
	n, _ := io.Copy(io.Discard, s.br)
	return n
}

// delimiter tells whether a line starting at a line start is a delimiter
// line of this boundary, and whether it is the close delimiter. Only
// transport padding (linear white space) may follow (§5.1.1); a longer
// boundary that merely starts with ours is not ours.
func (s *splitter) delimiter(line []byte) (is, isClose bool) {
	if !bytes.HasPrefix(line, s.dash) {
		return false, false
	}
	rest := line[len(s.dash):]
	if bytes.HasPrefix(rest, []byte("--")) {
		isClose = true
		rest = rest[2:]
	}
	for _, c := range rest {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return false, false
		}
	}
	return true, isClose
}

type partReader splitter

// Read hands out as many lines as fit in b and are already buffered, so
// that a base64 body is not decoded one 76-byte line per call.
func (p *partReader) Read(b []byte) (int, error) {
	s := (*splitter)(p)
	n := 0
	for n < len(b) {
		if len(s.head) > 0 {
			m := copy(b[n:], s.head)
			s.head = s.head[m:]
			n += m
			continue
		}
		if len(s.cur) > 0 {
			m := copy(b[n:], s.cur)
			s.cur = s.cur[m:]
			n += m
			continue
		}
		if n > 0 && s.br.Buffered() == 0 {
			break // do not wait for more input with data in hand
		}
		if err := s.fill(); err != nil {
			if n > 0 {
				return n, nil
			}
			return 0, err
		}
	}
	return n, nil
}

// fill reads the next line piece into head (a held-back line ending) and
// cur, or ends the part with io.EOF at a delimiter line or the end of input.
func (s *splitter) fill() error {
	if s.partEnd {
		return io.EOF
	}
	if s.eof {
		s.partEnd = true
		if s.neol > 0 {
			// No delimiter followed: the line ending is content.
			s.headBuf = s.eol
			s.head = s.headBuf[:s.neol]
			s.neol = 0
			return nil
		}
		return io.EOF
	}
	start := s.lineStart
	line, err := s.br.ReadSlice('\n')
	switch err {
	case nil:
		s.lineStart = true
	case bufio.ErrBufferFull:
		s.lineStart = false
	case io.EOF:
		s.eof = true
		s.lineStart = true
	default:
		s.err = err
		s.eof = true
		s.partEnd = true
		return err
	}
	if start {
		if is, isClose := s.delimiter(line); is {
			if !s.lineStart {
				// White space padding longer than a buffer: skip it.
				for {
					_, err := s.br.ReadSlice('\n')
					if err != bufio.ErrBufferFull {
						if err != nil {
							s.eof = true
						}
						break
					}
				}
				s.lineStart = true
			}
			s.neol = 0
			s.found = true
			s.closed = isClose
			s.partEnd = true
			return io.EOF
		}
	}
	// Hand out the held-back line ending first, then this piece less its
	// own line ending, which is held back in turn.
	var eol []byte
	if bytes.HasSuffix(line, []byte("\r\n")) {
		eol = line[len(line)-2:]
	} else if bytes.HasSuffix(line, []byte("\n")) {
		eol = line[len(line)-1:]
	}
	s.headBuf = s.eol
	s.head = s.headBuf[:s.neol]
	s.cur = line[:len(line)-len(eol)]
	s.neol = copy(s.eol[:], eol)
	return nil
}
