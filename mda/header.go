// Package mda is tern's local delivery: what tern-deliver does between
// reading a message on stdin and handing it to the Maildir store.
//
// It streams: only the header is held in memory (bounded by MaxHeader),
// so a message of any size is delivered in constant memory.
package mda

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/tern-mail/tern/internal/sysexit"
)

// MaxHeader bounds the header that is read into memory to look for a
// Delivered-To loop. A header larger than this is delivered as it is; only
// the first MaxHeader bytes are searched.
const MaxHeader = 1 << 20

// maxHeaderLine bounds one physical line while the header is scanned.
const maxHeaderLine = 64 << 10

// ErrLoop is returned when the message already carries a Delivered-To line
// for the recipient (qmail's "This message is looping", RFC 5321 §6.3).
var ErrLoop = errors.New("mail loop")

// Envelope is what the caller knows about the message besides its text.
type Envelope struct {
	Sender    string // envelope sender; "" is unknown, "<>" the null sender
	Recipient string // envelope recipient; "" is unknown
}

// Prepare reads the start of msg and returns a reader of the message as it
// is to be stored: a leading mbox "From " line removed, Return-Path (when
// the sender is known) and Delivered-To (when the recipient is known)
// prepended. An older Return-Path is removed when a new one is written:
// RFC 5321 §4.4 makes the final delivery the one that adds it. A message
// that already has Delivered-To for this recipient gives an error wrapping
// ErrLoop with status 65.
func Prepare(msg io.Reader, env Envelope) (io.Reader, error) {
	br := bufio.NewReaderSize(msg, 64<<10)
	if err := skipFromLine(br); err != nil {
		return nil, err
	}
	header, err := readHeader(br)
	if err != nil {
		return nil, err
	}
	if env.Recipient != "" {
		if loop := findDeliveredTo(header, env.Recipient); loop {
			return nil, sysexit.New(sysexit.DataErr,
				"this message is looping: it already has a Delivered-To line for %s (#5.4.6): %w", env.Recipient, ErrLoop)
		}
	}
	var top bytes.Buffer
	if env.Sender != "" {
		fmt.Fprintf(&top, "Return-Path: %s\n", angle(env.Sender))
		header = dropField(header, "Return-Path")
	}
	if env.Recipient != "" {
		fmt.Fprintf(&top, "Delivered-To: %s\n", oneLine(env.Recipient))
	}
	return io.MultiReader(&top, bytes.NewReader(header), br), nil
}

// skipFromLine drops an mbox separator ("From sender date") at the very
// start, as procmail and fetchmail may pass one: it is not a header field
// and a Maildir message must not carry it.
func skipFromLine(br *bufio.Reader) error {
	peek, err := br.Peek(5)
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		return sysexit.New(sysexit.TempFail, "read message: %w", err)
	}
	if len(peek) == 0 {
		// Nothing at all: a broken pipe upstream, not a message.
		return sysexit.New(sysexit.DataErr, "no message on standard input")
	}
	if string(peek) != "From " {
		return nil
	}
	for {
		_, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil && err != io.EOF {
			return sysexit.New(sysexit.TempFail, "read message: %w", err)
		}
		return nil
	}
}

// readHeader returns the header through its terminating blank line, or as
// much as MaxHeader allows. A line over maxHeaderLine ends the search too:
// what was read is still delivered, unchanged.
func readHeader(br *bufio.Reader) ([]byte, error) {
	var h []byte
	for len(h) < MaxHeader {
		line, err := br.ReadSlice('\n')
		h = append(h, line...)
		if err == bufio.ErrBufferFull {
			if len(line) >= maxHeaderLine || len(h) >= MaxHeader {
				break
			}
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, sysexit.New(sysexit.TempFail, "read message: %w", err)
		}
		if len(line) <= 2 && (line[0] == '\n' || string(line) == "\r\n") {
			break
		}
	}
	return h, nil
}

// fields calls fn for each unfolded header field of h.
func fields(h []byte, fn func(name, value string, start, end int) bool) {
	i := 0
	for i < len(h) {
		start := i
		// One field: a line and its continuation lines.
		for {
			nl := bytes.IndexByte(h[i:], '\n')
			if nl < 0 {
				i = len(h)
				break
			}
			i += nl + 1
			if i >= len(h) || (h[i] != ' ' && h[i] != '\t') {
				break
			}
		}
		raw := h[start:i]
		if len(bytes.TrimSpace(raw)) == 0 {
			return // the blank line ending the header
		}
		name, value, ok := bytes.Cut(raw, []byte(":"))
		if !ok {
			continue
		}
		if !fn(strings.TrimSpace(string(name)), unfold(value), start, i) {
			return
		}
	}
}

func unfold(v []byte) string {
	s := strings.NewReplacer("\r\n", "", "\n", "").Replace(string(v))
	return strings.TrimSpace(s)
}

func findDeliveredTo(h []byte, rcpt string) bool {
	want := canonical(rcpt)
	found := false
	fields(h, func(name, value string, _, _ int) bool {
		if strings.EqualFold(name, "Delivered-To") && canonical(value) == want {
			found = true
			return false
		}
		return true
	})
	return found
}

// canonical compares addresses as mail does in practice: the domain is
// case-insensitive (RFC 5321 §2.4) and, like qmail and Postfix, so is the
// local part for this check, so "Bob@X" and "bob@x" are one loop. A
// display name or comment around an address in angle brackets is dropped.
// (net/mail would do this too, but it links the whole net package into a
// program whose start-up time is most of its cost.)
func canonical(addr string) string {
	addr = strings.TrimSpace(addr)
	if i := strings.LastIndexByte(addr, '<'); i >= 0 {
		if j := strings.IndexByte(addr[i:], '>'); j > 0 {
			addr = addr[i+1 : i+j]
		}
	}
	return strings.ToLower(strings.TrimSpace(addr))
}

func dropField(h []byte, drop string) []byte {
	var out []byte
	last, dropped := 0, false
	fields(h, func(name, _ string, start, end int) bool {
		if strings.EqualFold(name, drop) {
			out = append(out, h[last:start]...)
			last, dropped = end, true
		}
		return true
	})
	if !dropped {
		return h
	}
	return append(out, h[last:]...)
}

func angle(sender string) string {
	s := oneLine(strings.TrimSpace(sender))
	if strings.HasPrefix(s, "<") && strings.HasSuffix(s, ">") {
		return s
	}
	return "<" + s + ">"
}

// oneLine keeps a value from the environment or the command line from
// adding header lines of its own.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == 0 {
			return ' '
		}
		return r
	}, s)
}
