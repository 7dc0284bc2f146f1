package maildir

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// indexEntry is one message as the folder's index keeps it: everything a
// session needs without reading the file.
type indexEntry struct {
	uid          uint32
	mask         flagMask // the letters of name, for questions asked of every message
	name         string   // the file name in new/ or cur/
	new          bool
	size, rfc822 int64
	date         int64 // the file's mtime, in seconds: INTERNALDATE
}

func (e *indexEntry) unique() string  { u, _ := splitName(e.name); return u }
func (e *indexEntry) letters() string { _, l := splitName(e.name); return l }

// setName sets the file name and the mask of its letters.
func (e *indexEntry) setName(name string, isNew bool) {
	e.name, e.new = name, isNew
	e.mask = maskOf(e.letters())
}

// flagMask is a set of flag letters: a–z in bits 0–25, then D F P R S T.
type flagMask uint32

func letterBit(c byte) flagMask {
	if c >= 'a' && c <= 'z' {
		return 1 << (c - 'a')
	}
	if i := strings.IndexByte(systemFlags, c); i >= 0 {
		return 1 << (26 + i)
	}
	return 0
}

func maskOf(letters string) flagMask {
	var m flagMask
	for i := 0; i < len(letters); i++ {
		m |= letterBit(letters[i])
	}
	return m
}

func (m flagMask) has(c byte) bool { return m&letterBit(c) != 0 }

// snapshot is a folder's messages with their UIDs, in UID order, as of
// one look.
type snapshot struct {
	validity, next uint32
	entries        []indexEntry
}

// snapshot returns the folder's messages as they are now, with UIDs,
// from the index. Its entries must not be changed.
func (f *Folder) snapshot() (*snapshot, error) {
	x, err := f.current()
	if err != nil {
		return nil, err
	}
	return &snapshot{validity: x.validity, next: x.next, entries: x.entries}, nil
}

// cachedKeywords returns the folder's keywords, read again only when
// tern-keywords has changed; nil when it cannot be read.
func (f *Folder) cachedKeywords() *Keywords {
	var st unix.Stat_t
	if err := unix.Stat(f.keywordsPath(), &st); err != nil {
		return &Keywords{}
	}
	f.mu.Lock()
	if f.kw != nil && sameFile(&st, &f.kwStat) {
		kw := f.kw
		f.mu.Unlock()
		return kw
	}
	f.mu.Unlock()
	kw, err := f.Keywords()
	if err != nil {
		return nil
	}
	f.mu.Lock()
	f.kw, f.kwStat = kw, st
	f.mu.Unlock()
	return kw
}

// newUnique makes a unique name for a message that comes into this folder
// from elsewhere (COPY, MOVE), keeping its sizes: the delivery recipe with
// this process's counter, so that copies made in one call sort in the
// order they were made.
func (f *Folder) newUnique(oldUnique string, t time.Time) string {
	s := f.store
	u := fmt.Sprintf("%d.M%dP%dQ%d.%s", t.Unix(), t.Nanosecond()/1000, s.pid, s.seq.Add(1), escapeHost(s.Hostname))
	if size, rfc822 := nameSizes(oldUnique); size >= 0 && rfc822 >= 0 {
		u += fmt.Sprintf(",S=%d,W=%d", size, rfc822)
	}
	return u
}

// transfer puts the messages with the given unique names into dst's cur/
// under new unique names, keeping their flags (keyword letters translated
// through both folders' tern-keywords) and their mtime, and makes them
// durable there. With move the files are renamed out of f; otherwise
// hard-linked (copied where links are refused). It returns the new unique
// names, "" for a message that was gone.
func (f *Folder) transfer(uniques []string, dst *Folder, srcKw *Keywords, move bool) ([]string, error) {
	placed := make([]string, len(uniques))
	now := f.store.now()
	var dstKw *Keywords
	for i, u := range uniques {
		rel, err := f.locate(u)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		_, letters := splitName(rel)
		flags := imapFlags(letters, srcKw)
		if dstKw == nil || len(flags) > 0 {
			if dstKw, err = dst.Keywords(); err != nil {
				return nil, err
			}
		}
		newLetters, err := dst.lettersOf(flags)
		if err != nil {
			return nil, err
		}
		nu := dst.newUnique(u, now)
		to := filepath.Join(dst.path, "cur", nu+":2,"+newLetters)
		from := filepath.Join(f.path, rel)
		if move {
			err = f.renameOut(u, from, to)
		} else {
			err = linkOrCopy(from, to)
		}
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		placed[i] = nu
		dst.setName(nu, "cur/"+filepath.Base(to))
	}
	if err := fsyncDir(filepath.Join(dst.path, "cur")); err != nil {
		return nil, err
	}
	if move {
		for _, dir := range []string{"new", "cur"} {
			if err := fsyncDir(filepath.Join(f.path, dir)); err != nil {
				return nil, err
			}
		}
	}
	return placed, nil
}

// renameOut renames a message of f to a path in another folder, under
// f's lock as every rename in tern is, and records its leaving in f's
// index.
func (f *Folder) renameOut(unique, from, to string) error {
	lk, err := f.lock()
	if err != nil {
		return err
	}
	defer lk.unlock()
	err = os.Rename(from, to)
	if errors.Is(err, fs.ErrNotExist) {
		rel, lerr := f.locate(unique)
		if lerr != nil {
			return lerr
		}
		err = os.Rename(filepath.Join(f.path, rel), to)
	}
	if err != nil {
		return fmt.Errorf("maildir: move message: %w", err)
	}
	f.setName(unique, "")
	return f.recordLocked([]recorded{{unique: unique}})
}

// linkOrCopy hard-links from to to, or copies it (fsynced, mtime kept)
// where the file system refuses links.
func linkOrCopy(from, to string) error {
	err := os.Link(from, to)
	if err == nil || errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrExist) {
		return err
	}
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chtimes(to, st.ModTime(), st.ModTime())
	}
	if err != nil {
		os.Remove(to)
		return fmt.Errorf("maildir: copy %s: %w", from, err)
	}
	return nil
}

// Append stores a message in the folder with flags in IMAP's terms and an
// internal date (the zero time for now), durable before it returns, and
// returns it with its UID and the folder's UIDVALIDITY (APPEND, RFC 9051
// §6.3.12, with RFC 4315's APPENDUID). It goes to cur/: a message a
// client appended is not new mail. Line ends become LF as in Deliver.
func (f *Folder) Append(r io.Reader, flags []string, date time.Time, maxSize int64) (Message, uint32, error) {
	letters, err := f.lettersOf(flags)
	if err != nil {
		return Message{}, 0, err
	}
	m, err := f.Deliver(r, DeliverOptions{letters: letters, Cur: true, Quota: true, MaxSize: maxSize, ModTime: date})
	if err != nil {
		return Message{}, 0, err
	}
	validity, uids, err := f.giveUIDs([]string{m.Unique})
	if err != nil {
		return Message{}, 0, err
	}
	m.UID = uids[0]
	if !date.IsZero() {
		m.Date = date.Truncate(time.Second)
	}
	return m, validity, nil
}
