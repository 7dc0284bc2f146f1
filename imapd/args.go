package imapd

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/tern-mail/tern/maildir"
)

// args reads the arguments of the commands the front serves itself (ID,
// APPEND, COMPRESS, GETQUOTA): atoms, quoted strings, NIL and
// parenthesised lists, per RFC 9051 §9. Literals never reach it: the
// front has inlined them as quoted strings.
type args struct {
	s   string
	err error
}

var errSyntax = errors.New("syntax error")

func (a *args) fail(format string, v ...any) bool {
	if a.err == nil {
		a.err = fmt.Errorf("%w: "+format, append([]any{errSyntax}, v...)...)
	}
	return false
}

func (a *args) done() bool { return a.err == nil && a.s == "" }

func (a *args) peek() byte {
	if a.s == "" {
		return 0
	}
	return a.s[0]
}

func (a *args) sp() bool {
	if a.peek() != ' ' {
		return a.fail("a space expected")
	}
	a.s = a.s[1:]
	return true
}

func (a *args) special(c byte) bool {
	if a.peek() != c {
		return false
	}
	a.s = a.s[1:]
	return true
}

// atom reads 1*ATOM-CHAR; with bracket, ']' too (ASTRING-CHAR).
func (a *args) atom(bracket bool) (string, bool) {
	i := 0
	for i < len(a.s) && isAtomChar(a.s[i], bracket) {
		i++
	}
	if i == 0 {
		return "", a.fail("an atom expected")
	}
	w := a.s[:i]
	a.s = a.s[i:]
	return w, true
}

func isAtomChar(c byte, bracket bool) bool {
	if c <= ' ' || c >= 0x7f {
		return false
	}
	switch c {
	case '(', ')', '{', '%', '*', '"', '\\':
		return false
	case ']':
		return bracket
	}
	return true
}

// quoted reads a quoted string.
func (a *args) quoted() (string, bool) {
	if a.peek() != '"' {
		return "", a.fail("a quoted string expected")
	}
	var b strings.Builder
	for i := 1; i < len(a.s); i++ {
		c := a.s[i]
		switch c {
		case '"':
			a.s = a.s[i+1:]
			return b.String(), true
		case '\\':
			i++
			if i == len(a.s) || (a.s[i] != '"' && a.s[i] != '\\') {
				return "", a.fail("a bad escape in a quoted string")
			}
			c = a.s[i]
		case '\r', '\n', 0:
			return "", a.fail("CR, LF or NUL in a quoted string")
		}
		b.WriteByte(c)
	}
	return "", a.fail("an unterminated quoted string")
}

// astring reads an atom (with ']') or a quoted string.
func (a *args) astring() (string, bool) {
	if a.peek() == '"' {
		return a.quoted()
	}
	return a.atom(true)
}

// nstring reads NIL or a quoted string; nil for NIL.
func (a *args) nstring() (*string, bool) {
	if a.peek() == '"' {
		s, ok := a.quoted()
		return &s, ok
	}
	w, ok := a.atom(false)
	if !ok || !strings.EqualFold(w, "NIL") {
		return nil, a.fail("NIL or a string expected")
	}
	return nil, true
}

// mailbox reads a mailbox name and decodes it from modified UTF-7 (RFC
// 9051 §5.1.3); INBOX in any case is INBOX.
func (a *args) mailbox() (string, bool) {
	s, ok := a.astring()
	if !ok {
		return "", false
	}
	if strings.EqualFold(s, "INBOX") {
		return "INBOX", true
	}
	name, err := maildir.DecodeMUTF7(s)
	if err != nil {
		return "", a.fail("bad mailbox name %q: %v", s, err)
	}
	return name, true
}

// Limits of RFC 2971 §3.3 on an ID list.
const (
	maxIDFields     = 30
	maxIDFieldLen   = 30
	maxIDValueLen   = 1024
	maxAppendFlags  = 64
	maxFlagLen      = 256
	appendDateShape = "_2-Jan-2006 15:04:05 -0700"
)

// idParams reads the argument of ID (RFC 2971 §3.3): NIL or a list of
// field and value pairs.
func (a *args) idParams() (map[string]string, bool) {
	if a.peek() != '(' {
		if _, ok := a.nstring(); !ok {
			return nil, false
		}
		return nil, true
	}
	a.s = a.s[1:]
	m := map[string]string{}
	for !a.special(')') {
		if len(m) > 0 && !a.sp() {
			return nil, false
		}
		k, ok := a.quoted()
		if !ok || !a.sp() {
			return nil, false
		}
		v, ok := a.nstring()
		if !ok {
			return nil, false
		}
		if len(k) > maxIDFieldLen || len(m) >= maxIDFields || (v != nil && len(*v) > maxIDValueLen) {
			return nil, a.fail("ID list over the limits of RFC 2971 section 3.3")
		}
		if v != nil {
			m[strings.ToLower(k)] = *v
		} else {
			m[strings.ToLower(k)] = ""
		}
	}
	return m, true
}

// appendHead is what precedes the message literal of APPEND (RFC 9051
// §6.3.12; UTF8 from RFC 6855 §4).
type appendHead struct {
	Mailbox string
	Flags   []imap.Flag
	Time    time.Time
	UTF8    bool // the literal is inside "UTF8 (" and ")"
}

// parseAppendHead parses the arguments of APPEND up to its message
// literal (s ends where the literal marker started). complete is false
// when s ends before the mailbox name: the literal is the name, not the
// message.
func parseAppendHead(s string) (h appendHead, complete bool, err error) {
	if s == "" {
		return h, false, nil
	}
	a := &args{s: s}
	var ok bool
	if h.Mailbox, ok = a.mailbox(); !ok {
		return h, false, a.err
	}
	if !a.sp() {
		return h, false, a.err
	}
	if a.special('(') {
		for !a.special(')') {
			if len(h.Flags) > 0 && !a.sp() {
				return h, false, a.err
			}
			f, ok := a.flag()
			if !ok {
				return h, false, a.err
			}
			if len(h.Flags) >= maxAppendFlags {
				return h, false, fmt.Errorf("%w: more than %d flags", errSyntax, maxAppendFlags)
			}
			h.Flags = append(h.Flags, f)
		}
		if !a.sp() {
			return h, false, a.err
		}
	}
	if a.peek() == '"' {
		d, _ := a.quoted()
		t, err := time.Parse(appendDateShape, d)
		if err != nil {
			return h, false, fmt.Errorf("%w: date-time %q is not like \"%s\"", errSyntax, d, appendDateShape)
		}
		h.Time = t
		if !a.sp() {
			return h, false, a.err
		}
	}
	if a.s != "" {
		w, ok := a.atom(false)
		if !ok || !strings.EqualFold(w, "UTF8") || !a.sp() || !a.special('(') {
			return h, false, fmt.Errorf("%w: unknown APPEND data extension", errSyntax)
		}
		h.UTF8 = true
	}
	if !a.done() {
		return h, false, fmt.Errorf("%w: unexpected %q before the message literal", errSyntax, a.s)
	}
	return h, true, nil
}

// flag reads a flag: \Name or a keyword atom (RFC 9051 §9, flag).
func (a *args) flag() (imap.Flag, bool) {
	sys := a.special('\\')
	w, ok := a.atom(false)
	if !ok {
		return "", false
	}
	if len(w) > maxFlagLen {
		return "", a.fail("flag longer than %d", maxFlagLen)
	}
	if sys {
		return imap.Flag(`\` + w), true
	}
	return imap.Flag(w), true
}
