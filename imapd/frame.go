package imapd

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
)

// Limits on what a client sends, enforced by the front before a byte
// reaches imapserver.
const (
	// MaxLine bounds one line of a command (without its literals).
	// imapserver gives up on a command of 50 KiB; RFC 7162 §4 asks
	// clients to keep lines under 8 KiB and servers to take 8 KiB at
	// least.
	MaxLine = 32 << 10
	// MaxCommand bounds a whole command outside APPEND, its literals
	// inlined, below imapserver's own 50 KiB limit, so that imapserver
	// never refuses a command half read.
	MaxCommand = 48 << 10
	// MaxInlineLiteral is the largest literal taken outside APPEND (a
	// password, a mailbox name, a search string): imapserver refuses
	// larger ones without reading them (see front.go).
	MaxInlineLiteral = 4096
	// MaxLiterals bounds the literals in one command.
	MaxLiterals = 64
	// maxDiscard is the most the front reads and throws away of a
	// non-synchronising literal it refuses (RFC 7888 §4 lets a server
	// either read it or close the connection); past it, the connection
	// is closed.
	maxDiscard = 64 << 20
)

// literal is a literal announced at the end of a line: {N}, {N+}, or
// the literal8 forms ~{N} and ~{N+} (RFC 3516 §4.2).
type literal struct {
	start   int // index of '{' or '~' in the line
	size    int64
	nonSync bool
	binary  bool
}

// literalAt finds the literal that line (without its CRLF) announces, if
// any. A '{' inside a quoted string does not count; a quoted string that
// is still open at the end of the line means there is no literal.
// quoted says whether line starts inside a quoted string (never, for
// the front, which starts each segment after a literal).
func literalAt(line []byte) (literal, bool) {
	n := len(line)
	if n < 3 || line[n-1] != '}' {
		return literal{}, false
	}
	i := n - 2
	nonSync := false
	if line[i] == '+' {
		nonSync = true
		i--
	}
	end := i + 1
	for i >= 0 && line[i] >= '0' && line[i] <= '9' {
		i--
	}
	digits := line[i+1 : end]
	if i < 0 || line[i] != '{' || len(digits) == 0 || len(digits) > 19 {
		return literal{}, false
	}
	size, err := strconv.ParseInt(string(digits), 10, 64)
	if err != nil {
		return literal{}, false
	}
	start := i
	binary := false
	if i > 0 && line[i-1] == '~' {
		start, binary = i-1, true
	}
	if inQuoted(line[:start]) {
		return literal{}, false
	}
	return literal{start: start, size: size, nonSync: nonSync, binary: binary}, true
}

// inQuoted reports whether s ends inside a quoted string (RFC 9051 §4.3:
// quoted strings escape '"' and '\' with '\').
func inQuoted(s []byte) bool {
	in := false
	for i := 0; i < len(s); i++ {
		switch {
		case in && s[i] == '\\':
			i++
		case s[i] == '"':
			in = !in
		}
	}
	return in
}

// appendQuoted appends s as an IMAP quoted string. s must hold no CR, LF
// or NUL (see inlineable).
func appendQuoted(b []byte, s []byte) []byte {
	b = append(b, '"')
	for _, c := range s {
		if c == '"' || c == '\\' {
			b = append(b, '\\')
		}
		b = append(b, c)
	}
	return append(b, '"')
}

// inlineable reports whether a literal's content can travel as a quoted
// string: RFC 9051 §4.3 forbids CR and LF there, and NUL anywhere
// outside literal8. A name, a password or a search string never needs
// them.
func inlineable(s []byte) bool {
	return bytes.IndexByte(s, '\r') < 0 && bytes.IndexByte(s, '\n') < 0 && bytes.IndexByte(s, 0) < 0
}

// isTagChar reports whether c may appear in a tag: an ASTRING-CHAR but
// not '+' (RFC 9051 §9, tag).
func isTagChar(c byte) bool {
	if c <= ' ' || c >= 0x7f {
		return false
	}
	switch c {
	case '(', ')', '{', '%', '*', '"', '\\', '+':
		return false
	}
	return true
}

// errNoTag is a command line that does not start with a valid tag.
var errNoTag = errors.New("a command starts with a tag of letters and digits")

// splitCommand returns the tag and the command name of a command line,
// the name upper-cased and, for UID commands, as "UID FETCH".
func splitCommand(line []byte) (tag, name string, err error) {
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 {
		if len(line) > 0 && validTag(line) {
			return string(line), "", nil
		}
		return "", "", errNoTag
	}
	if !validTag(line[:sp]) {
		return "", "", errNoTag
	}
	tag = string(line[:sp])
	rest := line[sp+1:]
	word := func() string {
		i := bytes.IndexByte(rest, ' ')
		if i < 0 {
			i = len(rest)
		}
		w := strings.ToUpper(string(rest[:i]))
		if i < len(rest) {
			rest = rest[i+1:]
		} else {
			rest = nil
		}
		return w
	}
	name = word()
	if name == "UID" {
		name += " " + word()
	}
	return tag, name, nil
}

func validTag(t []byte) bool {
	if len(t) == 0 || len(t) > 64 {
		return false
	}
	for _, c := range t {
		if !isTagChar(c) {
			return false
		}
	}
	return true
}
