package maildir

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

// ErrCorruptUIDList is wrapped by ParseUIDList errors.
var ErrCorruptUIDList = errors.New("corrupt UID list")

const uidListMagic = "tern-uidlist 1"

// UIDEntry is one message of a UID list.
type UIDEntry struct {
	UID    uint32
	Unique string
}

// UIDList is a snapshot of a folder's tern-uidlist: the UIDVALIDITY, the
// next UID to give, and the UID of each message by its unique name
// (RFC 3501 §2.3.1.1). Its methods do not change it.
type UIDList struct {
	Validity uint32
	Next     uint32
	entries  []UIDEntry // ascending UID
	byUnique map[string]uint32
}

func newUIDList(validity, next uint32, entries []UIDEntry) *UIDList {
	l := &UIDList{Validity: validity, Next: next, entries: entries, byUnique: make(map[string]uint32, len(entries))}
	for _, e := range entries {
		l.byUnique[e.Unique] = e.UID
	}
	return l
}

// Len returns the number of messages in the list.
func (l *UIDList) Len() int { return len(l.entries) }

// Entries returns the messages in ascending UID order.
func (l *UIDList) Entries() []UIDEntry { return append([]UIDEntry(nil), l.entries...) }

// UID returns the UID of the message with the unique name.
func (l *UIDList) UID(unique string) (uint32, bool) {
	uid, ok := l.byUnique[unique]
	return uid, ok
}

// Unique returns the unique name of the message with the UID.
func (l *UIDList) Unique(uid uint32) (string, bool) {
	i := sort.Search(len(l.entries), func(i int) bool { return l.entries[i].UID >= uid })
	if i < len(l.entries) && l.entries[i].UID == uid {
		return l.entries[i].Unique, true
	}
	return "", false
}

// WriteTo writes the list in the tern-uidlist format: a header line
// "tern-uidlist 1 V<validity> N<next>", then "<uid> <unique>" lines in
// ascending UID order.
func (l *UIDList) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "%s V%d N%d\n", uidListMagic, l.Validity, l.Next)
	for _, e := range l.entries {
		bw.WriteString(strconv.FormatUint(uint64(e.UID), 10))
		bw.WriteByte(' ')
		bw.WriteString(e.Unique)
		bw.WriteByte('\n')
	}
	n := int64(bw.Buffered())
	return n, bw.Flush()
}

// maxUIDListSize bounds what ParseUIDList reads (about four million
// messages with long names).
const maxUIDListSize = 256 << 20

// ParseUIDList reads a list written by WriteTo. Anything else, including a
// list cut short, UIDs out of order, a UID not below the next UID, a unique
// name twice or a name with blanks, is an error wrapping ErrCorruptUIDList.
func ParseUIDList(r io.Reader) (*UIDList, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxUIDListSize+1))
	if err != nil {
		return nil, err
	}
	return parseUIDList(data)
}

// parseUIDList parses a whole list. The unique names are slices of one
// copy of data rather than a string each, and the map that finds a
// repeated name is the list's own: a POP3 login to 100,000 messages used
// to make three copies of every name.
func parseUIDList(data []byte) (*UIDList, error) {
	bad := func(line int, why string) error {
		return fmt.Errorf("line %d: %s: %w", line, why, ErrCorruptUIDList)
	}
	if len(data) > maxUIDListSize {
		return nil, bad(0, "too large")
	}
	if len(data) == 0 || data[len(data)-1] != '\n' {
		return nil, bad(0, "does not end in a newline")
	}
	text := string(data)
	header, rest, _ := strings.Cut(text, "\n")
	hdr := strings.Split(header, " ")
	if len(hdr) != 4 || hdr[0]+" "+hdr[1] != uidListMagic {
		return nil, bad(1, "bad header")
	}
	validity, err1 := parseUint32Field(hdr[2], 'V')
	next, err2 := parseUint32Field(hdr[3], 'N')
	if err1 != nil || err2 != nil || validity == 0 || next == 0 {
		return nil, bad(1, "bad UIDVALIDITY or next UID")
	}
	n := strings.Count(rest, "\n")
	l := &UIDList{Validity: validity, Next: next, entries: make([]UIDEntry, 0, n), byUnique: make(map[string]uint32, n)}
	var last uint32
	for i := 0; rest != ""; i++ {
		var ln string
		ln, rest, _ = strings.Cut(rest, "\n")
		sp := strings.IndexByte(ln, ' ')
		if sp < 0 {
			return nil, bad(i+2, "no space")
		}
		uid, err := parseUint32Field(ln[:sp], 0)
		if err != nil || uid == 0 {
			return nil, bad(i+2, "bad UID")
		}
		if uid <= last || uid >= next {
			return nil, bad(i+2, "UID out of order or not below the next UID")
		}
		u := ln[sp+1:]
		if _, seen := l.byUnique[u]; seen || !validUnique(u) {
			return nil, bad(i+2, "bad or repeated unique name")
		}
		l.byUnique[u] = uid
		last = uid
		l.entries = append(l.entries, UIDEntry{uid, u})
	}
	return l, nil
}

// parseUint32Field parses a decimal number after an optional letter,
// refusing signs, leading zeros and overflow.
func parseUint32Field(s string, letter byte) (uint32, error) {
	if letter != 0 {
		if len(s) == 0 || s[0] != letter {
			return 0, strconv.ErrSyntax
		}
		s = s[1:]
	}
	if s == "" || s[0] < '1' || s[0] > '9' || len(s) > 10 {
		return 0, strconv.ErrSyntax
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, strconv.ErrSyntax
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err
}

// validityHint digs the UIDVALIDITY out of a damaged list's header, so that
// the rebuilt list can take a larger one.
func validityHint(data []byte) uint32 {
	line := data
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	for _, f := range strings.Fields(string(line)) {
		if v, err := parseUint32Field(f, 'V'); err == nil {
			return v
		}
	}
	return 0
}

// ParseForeignUIDList reads the UID list another IMAP server kept for a
// folder, so that a Maildir moved to tern keeps its UIDVALIDITY and UIDs
// and no client downloads it again: Dovecot's dovecot-uidlist (version 3:
// "3 V<validity> N<next> G<guid>", then "<uid> [<ext>...] :<file name>")
// and Courier's courierimapuiddb (version 1, which older Dovecots wrote
// too: "1 <validity> <next>", then "<uid> <file name>"). A name's info
// part (":2,<flags>") is dropped. Anything it cannot read whole, UIDs out
// of order or a name twice, is an error wrapping ErrCorruptUIDList: a
// list half understood would give wrong UIDs under the old UIDVALIDITY.
func ParseForeignUIDList(r io.Reader) (*UIDList, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxUIDListSize+1))
	if err != nil {
		return nil, err
	}
	bad := func(line int, why string) error {
		return fmt.Errorf("line %d: %s: %w", line, why, ErrCorruptUIDList)
	}
	if len(data) > maxUIDListSize {
		return nil, bad(0, "too large")
	}
	text := string(data)
	header, rest, _ := strings.Cut(text, "\n")
	hdr := strings.Fields(header)
	var validity, next uint32
	var v3 bool
	switch {
	case len(hdr) == 3 && hdr[0] == "1":
		v, err1 := parseUint32Field(hdr[1], 0)
		n, err2 := parseUint32Field(hdr[2], 0)
		if err1 != nil || err2 != nil {
			return nil, bad(1, "bad version 1 header")
		}
		validity, next = v, n
	case len(hdr) >= 3 && hdr[0] == "3":
		v3 = true
		for _, f := range hdr[1:] {
			switch f[0] {
			case 'V':
				validity, _ = parseUint32Field(f, 'V')
			case 'N':
				next, _ = parseUint32Field(f, 'N')
			}
		}
	default:
		return nil, bad(1, "not a version 1 or 3 list")
	}
	if validity == 0 || next == 0 {
		return nil, bad(1, "no UIDVALIDITY or next UID")
	}
	var entries []UIDEntry
	seen := map[string]bool{}
	var last uint32
	for i := 0; rest != ""; i++ {
		var ln string
		ln, rest, _ = strings.Cut(rest, "\n")
		if ln == "" {
			continue
		}
		uidText, name, ok := strings.Cut(ln, " ")
		if v3 {
			// Extension fields come before the name, which starts with ':'.
			_, name, ok = strings.Cut(ln, " :")
		}
		uid, err := parseUint32Field(uidText, 0)
		if !ok || err != nil || uid <= last || uid == math.MaxUint32 {
			return nil, bad(i+2, "bad or unordered UID")
		}
		u, _ := splitName(name)
		if !validUnique(u) || seen[u] {
			return nil, bad(i+2, "bad or repeated file name")
		}
		seen[u] = true
		last = uid
		entries = append(entries, UIDEntry{uid, u})
	}
	// Dovecot writes the header's next UID lazily ("N1" above UIDs it
	// has given): the next UID is above every one in the list.
	return newUIDList(validity, max(next, last+1), entries), nil
}
