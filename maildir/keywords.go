package maildir

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrTooManyKeywords is returned when a folder has used all 26 keyword
// letters.
var ErrTooManyKeywords = errors.New("no keyword letter left (26 at most)")

// Keywords maps IMAP keywords to the letters a–z that stand for them in
// file names, as one folder's tern-keywords file says. Keywords are
// matched exactly.
type Keywords struct {
	byLetter [26]string
}

// Letter returns the letter of a keyword.
func (k *Keywords) Letter(keyword string) (byte, bool) {
	for i, kw := range k.byLetter {
		if kw != "" && kw == keyword {
			return byte('a' + i), true
		}
	}
	return 0, false
}

// Keyword returns the keyword of a letter.
func (k *Keywords) Keyword(letter byte) (string, bool) {
	if letter < 'a' || letter > 'z' || k.byLetter[letter-'a'] == "" {
		return "", false
	}
	return k.byLetter[letter-'a'], true
}

// List returns the keywords in letter order.
func (k *Keywords) List() []string {
	var l []string
	for _, kw := range k.byLetter {
		if kw != "" {
			l = append(l, kw)
		}
	}
	return l
}

// validKeyword reports whether s is an IMAP flag-keyword: an atom
// (RFC 3501 §9) that is not a system flag.
func validKeyword(s string) bool {
	if s == "" || len(s) > 100 || s[0] == '\\' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`(){%*"\]`, c) >= 0 {
			return false
		}
	}
	return true
}

// ParseKeywords reads a tern-keywords file: one "<letter> <keyword>" line
// per keyword.
func ParseKeywords(r io.Reader) (*Keywords, error) {
	k := &Keywords{}
	sc := bufio.NewScanner(io.LimitReader(r, 64<<10))
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if len(line) < 3 || line[0] < 'a' || line[0] > 'z' || line[1] != ' ' || !validKeyword(line[2:]) {
			return nil, fmt.Errorf("line %d: bad keyword line %q", n, line)
		}
		if k.byLetter[line[0]-'a'] != "" {
			return nil, fmt.Errorf("line %d: letter %c given twice", n, line[0])
		}
		if _, ok := k.Letter(line[2:]); ok {
			return nil, fmt.Errorf("line %d: keyword %q given twice", n, line[2:])
		}
		k.byLetter[line[0]-'a'] = line[2:]
	}
	return k, sc.Err()
}

func (k *Keywords) bytes() []byte {
	var b strings.Builder
	for i, kw := range k.byLetter {
		if kw != "" {
			fmt.Fprintf(&b, "%c %s\n", 'a'+i, kw)
		}
	}
	return []byte(b.String())
}

func (f *Folder) keywordsPath() string { return filepath.Join(f.path, "tern-keywords") }

// Keywords reads the folder's keyword letters, without the lock; a folder
// without a tern-keywords file has none.
func (f *Folder) Keywords() (*Keywords, error) {
	return retryStale(f.readKeywords)
}

func (f *Folder) readKeywords() (*Keywords, error) {
	p := f.keywordsPath()
	file, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return &Keywords{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("maildir: read keywords: %w", err)
	}
	defer file.Close()
	k, err := ParseKeywords(file)
	if err != nil {
		return nil, fmt.Errorf("maildir: read keywords %s: %w", p, err)
	}
	return k, nil
}

// AddKeywords gives letters to the keywords that have none yet, under the
// folder's lock, and returns the new map. It fails with ErrTooManyKeywords
// (and changes nothing) when the 26 letters do not suffice.
func (f *Folder) AddKeywords(keywords ...string) (*Keywords, error) {
	for _, kw := range keywords {
		if !validKeyword(kw) {
			return nil, fmt.Errorf("maildir: bad keyword %q", kw)
		}
	}
	lk, err := f.lock()
	if err != nil {
		return nil, err
	}
	defer lk.unlock()
	k, err := f.Keywords()
	if err != nil {
		return nil, err
	}
	changed := false
	for _, kw := range keywords {
		if _, ok := k.Letter(kw); ok {
			continue
		}
		i := 0
		for i < 26 && k.byLetter[i] != "" {
			i++
		}
		if i == 26 {
			return nil, fmt.Errorf("maildir: add keyword %q to %s: %w", kw, f.path, ErrTooManyKeywords)
		}
		k.byLetter[i] = kw
		changed = true
	}
	if changed {
		if err := writeFileAtomic(f.keywordsPath(), k.bytes()); err != nil {
			return nil, err
		}
	}
	return k, nil
}
