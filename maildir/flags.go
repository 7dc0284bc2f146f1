package maildir

import (
	"fmt"
	"slices"
	"strings"
)

// System flags in IMAP's terms (RFC 9051 §2.3.2). The API of this package
// speaks only these and keywords; the letters that stand for them in file
// names (the maildir spec's D F P R S T, and a–z for keywords through
// tern-keywords) stay inside the package.
const (
	FlagSeen     = `\Seen`
	FlagAnswered = `\Answered`
	FlagFlagged  = `\Flagged`
	FlagDeleted  = `\Deleted`
	FlagDraft    = `\Draft`
	// KeywordForwarded is the keyword (RFC 5788's registry) that the
	// maildir "passed" flag P stands for: mutt sets P when it forwards.
	KeywordForwarded = "$Forwarded"
)

// letterFlags are the system flags and $Forwarded with their letters, in
// the order of the letters.
var letterFlags = [...]struct {
	letter byte
	flag   string
}{
	{'D', FlagDraft},
	{'F', FlagFlagged},
	{'P', KeywordForwarded},
	{'R', FlagAnswered},
	{'S', FlagSeen},
	{'T', FlagDeleted},
}

// SystemFlags are the flags every folder can keep, in the order Flags
// lists them.
func SystemFlags() []string {
	return []string{FlagAnswered, FlagFlagged, FlagDeleted, FlagSeen, FlagDraft, KeywordForwarded}
}

// systemLetter returns the letter of a system flag (case-insensitively, as
// RFC 9051 §2.3.2 matches them) or of $Forwarded.
func systemLetter(flag string) (byte, bool) {
	// The spelling of RFC 9051 first: asked of every message of a
	// folder at a POP3 QUIT, EqualFold was most of the cost.
	switch flag {
	case FlagSeen:
		return 'S', true
	case FlagDeleted:
		return 'T', true
	case FlagAnswered:
		return 'R', true
	case FlagFlagged:
		return 'F', true
	case FlagDraft:
		return 'D', true
	}
	for _, lf := range letterFlags {
		if strings.EqualFold(flag, lf.flag) {
			return lf.letter, true
		}
	}
	return 0, false
}

// imapFlags turns the letters of a file name into flags in IMAP's terms:
// the system flags first, then keywords in letter order. A keyword letter
// that tern-keywords does not name is left out (it stays in the name).
func imapFlags(letters string, kw *Keywords) []string {
	if letters == "" {
		return nil
	}
	out := make([]string, 0, len(letters))
	for _, lf := range letterFlags {
		if lf.letter != 'P' && strings.IndexByte(letters, lf.letter) >= 0 {
			out = append(out, lf.flag)
		}
	}
	if strings.IndexByte(letters, 'P') >= 0 {
		out = append(out, KeywordForwarded)
	}
	for i := 0; i < len(letters); i++ {
		if c := letters[i]; c >= 'a' && c <= 'z' && kw != nil {
			if k, ok := kw.Keyword(c); ok {
				out = append(out, k)
			}
		}
	}
	return out
}

// FlagOp says how a STORE changes flags (RFC 9051 §6.4.6).
type FlagOp int

const (
	// FlagsSet replaces the flags ("FLAGS").
	FlagsSet FlagOp = iota
	// FlagsAdd adds to them ("+FLAGS").
	FlagsAdd
	// FlagsRemove takes from them ("-FLAGS").
	FlagsRemove
)

// flagChange is a STORE turned into letters: what to add and what to
// remove from the letters a file has now. Letters a file has that no flag
// names (an unknown keyword letter) are kept by FlagsSet.
type flagChange struct {
	set          bool
	add, remove  [128]bool
	keepUnnamed  *Keywords // for FlagsSet: letters not in this map survive
	hasSomething bool
}

// apply returns the sorted letters after the change.
func (c *flagChange) apply(old string) string {
	var have [128]bool
	for i := 0; i < len(old); i++ {
		ch := old[i]
		if ch >= 'a' && ch <= 'z' || strings.IndexByte(systemFlags, ch) >= 0 {
			have[ch] = true
		}
	}
	if c.set {
		for ch := range have {
			if !have[ch] {
				continue
			}
			named := strings.IndexByte(systemFlags, byte(ch)) >= 0
			if ch >= 'a' && ch <= 'z' {
				_, named = c.keepUnnamed.Keyword(byte(ch))
			}
			if named {
				have[ch] = false
			}
		}
	}
	for ch := range have {
		if c.add[ch] {
			have[ch] = true
		}
		if c.remove[ch] {
			have[ch] = false
		}
	}
	b := make([]byte, 0, 8)
	for ch := range have {
		if have[ch] {
			b = append(b, byte(ch))
		}
	}
	return string(b)
}

// ErrRecentFlag is returned for a STORE of \Recent, which RFC 3501
// §6.4.6 forbids.
var ErrRecentFlag = fmt.Errorf(`maildir: \Recent cannot be stored`)

// newFlagChange turns flags in IMAP's terms into letters, giving keywords
// that have none a letter of this folder first (which fails with
// ErrTooManyKeywords when the 26 are spent). A keyword that is only
// removed and has no letter changes nothing.
func (f *Folder) newFlagChange(op FlagOp, flags []string) (*flagChange, error) {
	c := &flagChange{set: op == FlagsSet}
	var newKeywords []string
	for _, fl := range flags {
		if strings.EqualFold(fl, `\Recent`) {
			return nil, ErrRecentFlag
		}
		if _, ok := systemLetter(fl); ok {
			continue
		}
		if strings.HasPrefix(fl, `\`) || !validKeyword(fl) {
			return nil, fmt.Errorf("maildir: bad flag %q", fl)
		}
		if op != FlagsRemove {
			newKeywords = append(newKeywords, fl)
		}
	}
	kw, err := f.Keywords()
	if err != nil {
		return nil, err
	}
	missing := slices.DeleteFunc(newKeywords, func(k string) bool { _, ok := kw.Letter(k); return ok })
	if len(missing) > 0 {
		if kw, err = f.AddKeywords(missing...); err != nil {
			return nil, err
		}
	}
	c.keepUnnamed = kw
	for _, fl := range flags {
		letter, ok := systemLetter(fl)
		if !ok {
			letter, ok = kw.Letter(fl)
		}
		if !ok {
			continue // removing a keyword nobody has
		}
		c.hasSomething = true
		if op == FlagsRemove {
			c.remove[letter] = true
		} else {
			c.add[letter] = true
		}
	}
	return c, nil
}

// lettersOf turns flags in IMAP's terms into letters for a new message
// (APPEND), giving new keywords letters.
func (f *Folder) lettersOf(flags []string) (string, error) {
	if len(flags) == 0 {
		return "", nil
	}
	c, err := f.newFlagChange(FlagsSet, flags)
	if err != nil {
		return "", err
	}
	return c.apply(""), nil
}
