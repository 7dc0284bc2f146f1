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

// transfer puts messages of f, as a view last saw them, into dst's cur/
// under new unique names, keeping their flags (keyword letters translated
// through both folders' tern-keywords) and their mtime, and makes them
// durable there. With move the files are renamed out of f in batches
// under f's lock, and their leaving recorded in f's index once;
// otherwise they are hard-linked (copied where links are refused). It
// returns the new unique names, "" for a message that was gone. A file
// is looked for only when it has moved since the view saw it.
func (f *Folder) transfer(items []known, dst *Folder, srcKw *Keywords, move bool) ([]string, error) {
	now := f.store.now()
	// The destination's letters for each set of source letters, worked
	// out before f's lock is taken: giving a keyword a letter takes
	// dst's lock, and two sessions moving between two folders in
	// opposite directions must not each wait for the other's lock.
	dstLetters := map[string]string{}
	translate := func(letters string, mayAdd bool) (string, error) {
		if l, ok := dstLetters[letters]; ok {
			return l, nil
		}
		flags := imapFlags(letters, srcKw)
		var l string
		if mayAdd {
			var err error
			if l, err = dst.lettersOf(flags); err != nil {
				return "", err
			}
		} else {
			kw := dst.cachedKeywords()
			for _, fl := range flags {
				c, ok := systemLetter(fl)
				if !ok && kw != nil {
					c, ok = kw.Letter(fl)
				}
				if ok {
					l += string(c)
				}
			}
			l = lettersAdd("")(l)
		}
		dstLetters[letters] = l
		return l, nil
	}
	targets := make([]string, len(items))
	placed := make([]string, len(items))
	for i, k := range items {
		u, letters := splitName(k.name)
		l, err := translate(letters, true)
		if err != nil {
			return nil, err
		}
		placed[i] = dst.newUnique(u, now)
		targets[i] = placed[i] + ":2," + l
	}
	dstCur := filepath.Join(dst.path, "cur")
	verb := "copy"
	if move {
		verb = "move"
	}
	put := func(i int, k known) (bool, error) {
		from := filepath.Join(f.path, dirOf(k.new), k.name)
		to := filepath.Join(dstCur, targets[i])
		place := func() error {
			if move {
				return os.Rename(from, to)
			}
			return linkOrCopy(from, to)
		}
		err := place()
		if errors.Is(err, fs.ErrNotExist) {
			// Moved since the view saw it: found again by its unique
			// name, its flags as they are now.
			rel, lerr := f.locate(k.unique())
			if errors.Is(lerr, fs.ErrNotExist) {
				return false, nil
			}
			if lerr != nil {
				return false, lerr
			}
			_, letters := splitName(rel)
			l, terr := translate(letters, false)
			if terr != nil {
				return false, terr
			}
			targets[i] = placed[i] + ":2," + l
			from, to = filepath.Join(f.path, rel), filepath.Join(dstCur, targets[i])
			err = place()
		}
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("maildir: %s %s to %s: %w", verb, from, dst.path, err)
		}
		return true, nil
	}
	if move {
		base := 0
		err := f.eachBatch(items, func(_ folderDirs, batch []known) ([]recorded, error) {
			var rec []recorded
			for j, k := range batch {
				i := base + j
				ok, err := put(i, k)
				if err != nil {
					return rec, err
				}
				if !ok {
					placed[i] = ""
					continue
				}
				rec = append(rec, recorded{uid: k.uid, unique: k.unique()})
			}
			base += len(batch)
			return rec, nil
		})
		if err != nil {
			return nil, err
		}
	} else {
		for i, k := range items {
			ok, err := put(i, k)
			if err != nil {
				return nil, err
			}
			if !ok {
				placed[i] = ""
			}
		}
	}
	for i := range items {
		if placed[i] != "" {
			dst.setName(placed[i], "cur/"+targets[i])
		}
	}
	if err := syncDir(dstCur); err != nil {
		return nil, err
	}
	if move {
		for _, dir := range []string{"new", "cur"} {
			if err := syncDir(filepath.Join(f.path, dir)); err != nil {
				return nil, err
			}
		}
	}
	return placed, nil
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
