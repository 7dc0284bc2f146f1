package smtpclient

import (
	"bufio"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"
)

// Reply is one SMTP reply (RFC 5321 §4.2): its code, the RFC 3463
// enhanced status code when the server gave one (RFC 2034), and its lines
// of text without either.
type Reply struct {
	Code     int
	Enhanced smtp.EnhancedCode // {0,0,0} when the server gave none
	Lines    []string
}

// Positive reports a 2xx or 3xx reply.
func (r Reply) Positive() bool { return r.Code >= 200 && r.Code < 400 }

// Temporary reports a 4xx reply (RFC 5321 §4.2.1: transient negative).
func (r Reply) Temporary() bool { return r.Code >= 400 && r.Code < 500 }

// Status is the reply's enhanced status code as text, or the one derived
// from its code when the server gave none (RFC 3463 §3.1: X.0.0).
func (r Reply) Status() string {
	if r.Enhanced != smtp.EnhancedCodeNotSet {
		return fmt.Sprintf("%d.%d.%d", r.Enhanced[0], r.Enhanced[1], r.Enhanced[2])
	}
	return strconv.Itoa(r.Code/100) + ".0.0"
}

// String is the reply on one line, as the server wrote it: "250 2.0.0 ok",
// continuation lines joined with spaces. This is what goes into a DSN's
// Diagnostic-Code and the log.
func (r Reply) String() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(r.Code))
	if r.Enhanced != smtp.EnhancedCodeNotSet {
		b.WriteByte(' ')
		b.WriteString(r.Status())
	}
	for _, l := range r.Lines {
		if l != "" {
			b.WriteByte(' ')
			b.WriteString(l)
		}
	}
	return b.String()
}

// Err returns the reply as go-smtp's error type, or nil for a positive
// reply.
func (r Reply) Err() error {
	if r.Positive() {
		return nil
	}
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: r.Enhanced, Message: strings.Join(r.Lines, "\n")}
}

// ErrProtocol marks a reply that is not SMTP: the connection cannot be
// trusted further.
var ErrProtocol = errors.New("smtp protocol violation")

// readReply reads one reply, multi-line or not, bounded by maxLines lines
// of at most the reader's buffer size each (RFC 5321 §4.5.3.1.5 allows
// 512 octets; real servers exceed it, so the bound is the buffer).
func readReply(br *bufio.Reader, maxLines int) (Reply, error) {
	var r Reply
	var enh string // the enhanced code text of the first line
	for n := 0; ; n++ {
		if n == maxLines {
			return Reply{}, fmt.Errorf("%w: reply longer than %d lines", ErrProtocol, maxLines)
		}
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return Reply{}, fmt.Errorf("%w: reply line longer than %d octets", ErrProtocol, br.Size())
		}
		if err != nil {
			return Reply{}, err
		}
		code, more, text, err := parseReplyLine(line)
		if err != nil {
			return Reply{}, err
		}
		if n == 0 {
			r.Code = code
			if ec, rest, ok := cutEnhanced(code, text); ok {
				r.Enhanced, enh, text = ec, text[:len(text)-len(rest)], rest
			}
		} else {
			if code != r.Code {
				return Reply{}, fmt.Errorf("%w: reply code changed from %d to %d within one reply", ErrProtocol, r.Code, code)
			}
			// RFC 2034 §4: every line carries the code; strip it where it does.
			if enh != "" {
				text = strings.TrimPrefix(text, enh)
			}
		}
		r.Lines = append(r.Lines, text)
		if !more {
			return r, nil
		}
	}
}

// parseReplyLine splits "250-text\r\n" (RFC 5321 §4.2: Reply-code
// [ SP / "-" textstring ] CRLF). A bare LF ending is accepted: servers
// that send it exist and the line is unambiguous.
func parseReplyLine(line []byte) (code int, more bool, text string, err error) {
	l := line[:len(line)-1]
	if len(l) > 0 && l[len(l)-1] == '\r' {
		l = l[:len(l)-1]
	}
	if len(l) < 3 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' || l[2] > '9' {
		return 0, false, "", fmt.Errorf("%w: reply line %q has no reply code", ErrProtocol, truncate(l))
	}
	code = int(l[0]-'0')*100 + int(l[1]-'0')*10 + int(l[2]-'0')
	if len(l) == 3 {
		return code, false, "", nil
	}
	switch l[3] {
	case ' ':
	case '-':
		more = true
	default:
		return 0, false, "", fmt.Errorf("%w: reply line %q: code not followed by space or '-'", ErrProtocol, truncate(l))
	}
	return code, more, string(l[4:]), nil
}

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// cutEnhanced takes an RFC 3463 status code off the front of a reply's
// text: class.subject.detail, class matching the reply code's first digit
// (RFC 2034 §4), subject and detail of one to three digits, then a space
// or the end.
func cutEnhanced(code int, text string) (smtp.EnhancedCode, string, bool) {
	var ec smtp.EnhancedCode
	if len(text) < 5 || int(text[0]-'0') != code/100 || text[1] != '.' {
		return ec, text, false
	}
	ec[0] = code / 100
	i := 2
	for part := 1; part <= 2; part++ {
		start := i
		for i < len(text) && i-start < 4 && text[i] >= '0' && text[i] <= '9' {
			ec[part] = ec[part]*10 + int(text[i]-'0')
			i++
		}
		if n := i - start; n < 1 || n > 3 {
			return smtp.EnhancedCode{}, text, false
		}
		if part == 1 {
			if i == len(text) || text[i] != '.' {
				return smtp.EnhancedCode{}, text, false
			}
			i++
		}
	}
	switch {
	case i == len(text):
		return ec, "", true
	case text[i] == ' ':
		return ec, text[i+1:], true
	}
	return smtp.EnhancedCode{}, text, false
}
