package auth

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tern-mail/tern/internal/sysexit"
)

// MaxLine is the longest line accepted in a control file; a longer one is
// a mistake (or a pasted binary) and is refused with its line number.
const MaxLine = 4096

// LineError is a bad line in a control file; it reads "file:line: why",
// the form editors and compilers use, so `vi +LINE FILE` finds it.
type LineError struct {
	File string
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// Account is an authenticated user and where their mail lives.
type Account struct {
	Name    string // as written in the users file: "bob" or "bob@example.org"
	UID     int    // -1: the server's own
	GID     int    // -1: the server's own
	Home    string
	Maildir string // Home/Maildir/, or Home itself when it names a Maildir
}

// Entry is one account line of the users file, in Dovecot's passwd-file
// layout: user:password:uid:gid:gecos:home:shell[:extra fields...].
type Entry struct {
	Line  int // 1-based line number in the file
	Name  string
	Pass  string // the password field as written, {SCHEME} and all
	UID   string // as written; empty means the server's own
	GID   string
	Gecos string
	Home  string
	Shell string
	Extra string // the rest of the line after the shell, kept, not read
	hash  *Hash
	uid   int
	gid   int
}

// Hash returns the parsed password hash.
func (e *Entry) Hash() *Hash { return e.hash }

// Account returns the account the entry describes.
func (e *Entry) Account() *Account {
	return &Account{Name: e.Name, UID: e.uid, GID: e.gid, Home: e.Home, Maildir: MaildirOf(e.Home)}
}

// MaildirOf returns the Maildir for a home directory: the home itself
// when its last element is "Maildir" (the Dovecot habit of
// /var/vmail/bob/Maildir as home), else home/Maildir/.
func MaildirOf(home string) string {
	if home == "" {
		return ""
	}
	clean := filepath.Clean(home)
	if filepath.Base(clean) == "Maildir" {
		return clean + "/"
	}
	return filepath.Join(clean, "Maildir") + "/"
}

// ValidName reports why name cannot be a user name, or nil. A name is
// "user" or "user@domain": no colon (the field separator), no space,
// control character or '#', at most 255 bytes (RFC 5321 §4.5.3.1.1 and
// .2 bound the two parts to 64 and 255).
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("empty user name")
	case len(name) > 255:
		return errors.New("user name longer than 255 bytes")
	case name[0] == '#':
		return errors.New("user name starts with '#'")
	case strings.Count(name, "@") > 1:
		return fmt.Errorf("user name %q has more than one '@'", name)
	case strings.HasPrefix(name, "@") || strings.HasSuffix(name, "@"):
		return fmt.Errorf("user name %q has an empty part around '@'", name)
	}
	for _, r := range name {
		if r == ':' || r <= ' ' || r == 0x7f {
			return fmt.Errorf("user name %q holds a colon, space or control character", name)
		}
	}
	return nil
}

// ParseUsersLine parses one line of the users file. ok is false for a
// blank line or a comment.
func ParseUsersLine(line string) (e Entry, ok bool, err error) {
	if len(line) > MaxLine {
		return e, false, fmt.Errorf("line longer than %d bytes", MaxLine)
	}
	t := strings.TrimSpace(line)
	if t == "" || t[0] == '#' {
		return e, false, nil
	}
	if strings.ContainsAny(line, "\x00\r\n") {
		return e, false, errors.New("NUL or line break in line")
	}
	f := strings.SplitN(line, ":", 8)
	for len(f) < 7 {
		f = append(f, "")
	}
	e = Entry{Name: f[0], Pass: f[1], UID: f[2], GID: f[3], Gecos: f[4], Home: f[5], Shell: f[6]}
	if len(f) == 8 {
		e.Extra = f[7]
	}
	if err := ValidName(e.Name); err != nil {
		return e, false, err
	}
	if e.hash, err = ParseHash(e.Pass); err != nil {
		return e, false, fmt.Errorf("user %s: %w", e.Name, err)
	}
	if e.uid, err = parseID(e.UID); err != nil {
		return e, false, fmt.Errorf("user %s: uid %q: %w", e.Name, e.UID, err)
	}
	if e.gid, err = parseID(e.GID); err != nil {
		return e, false, fmt.Errorf("user %s: gid %q: %w", e.Name, e.GID, err)
	}
	if e.Home != "" && !filepath.IsAbs(e.Home) {
		return e, false, fmt.Errorf("user %s: home %q is not an absolute path", e.Name, e.Home)
	}
	return e, true, nil
}

// parseID reads a numeric uid or gid; empty is -1, the server's own.
// Names are not looked up: the file must mean the same on every host that
// shares the Maildirs, and a name can map to different numbers.
func parseID(s string) (int, error) {
	if s == "" {
		return -1, nil
	}
	n, err := strconv.ParseUint(s, 10, 31)
	if err != nil {
		return 0, errors.New("not a number below 2^31")
	}
	return int(n), nil
}

// Users is a parsed users file.
type Users struct {
	File    string
	Entries []Entry
	byName  map[string]int // lower-cased name to index
	byLocal map[string]int // lower-cased local part of user@domain names to index, -1 if ambiguous
}

// ParseUsers reads a users file from r; file names it in errors. Every
// bad line is an error naming file and line; so is a name given twice.
func ParseUsers(file string, r io.Reader) (*Users, error) {
	u := &Users{File: file, byName: map[string]int{}, byLocal: map[string]int{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), MaxLine+2)
	n := 0
	for sc.Scan() {
		n++
		e, ok, err := ParseUsersLine(sc.Text())
		if err != nil {
			return nil, sysexit.Wrap(sysexit.Config, &LineError{file, n, err})
		}
		if !ok {
			continue
		}
		e.Line = n
		key := strings.ToLower(e.Name)
		if prev, dup := u.byName[key]; dup {
			return nil, sysexit.Wrap(sysexit.Config, &LineError{file, n, fmt.Errorf("user %s is already on line %d", e.Name, u.Entries[prev].Line)})
		}
		u.byName[key] = len(u.Entries)
		if local, _, found := strings.Cut(key, "@"); found {
			if _, seen := u.byLocal[local]; seen {
				u.byLocal[local] = -1
			} else {
				u.byLocal[local] = len(u.Entries)
			}
		}
		u.Entries = append(u.Entries, e)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, sysexit.Wrap(sysexit.Config, &LineError{file, n + 1, fmt.Errorf("line longer than %d bytes", MaxLine)})
		}
		return nil, fmt.Errorf("read users file %s: %w", file, err)
	}
	return u, nil
}

// LoadUsers reads the users file at path.
func LoadUsers(path string) (*Users, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open users file: %w", err)
	}
	defer f.Close()
	return ParseUsers(path, f)
}

// Lookup finds an entry by name, ignoring case: "bob@example.org" finds
// that entry, else a plain "bob"; a plain "bob" finds that entry, else
// the one "bob@domain" entry if there is exactly one. Whether the domain
// is one of ours is the caller's business (conf.Conf.LookupUser).
func (u *Users) Lookup(name string) (*Entry, bool) {
	if u == nil {
		return nil, false
	}
	key := strings.ToLower(name)
	if i, ok := u.byName[key]; ok {
		return &u.Entries[i], true
	}
	if local, _, found := strings.Cut(key, "@"); found {
		if i, ok := u.byName[local]; ok {
			return &u.Entries[i], true
		}
		return nil, false
	}
	if i, ok := u.byLocal[key]; ok && i >= 0 {
		return &u.Entries[i], true
	}
	return nil, false
}

// Exact finds an entry whose name is exactly name, ignoring case, without
// Lookup's fallbacks: for delivery, bob@a.example is not bob@b.example.
func (u *Users) Exact(name string) (*Entry, bool) {
	if u == nil {
		return nil, false
	}
	i, ok := u.byName[strings.ToLower(name)]
	if !ok {
		return nil, false
	}
	return &u.Entries[i], true
}
