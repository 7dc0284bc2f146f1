package maildir

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// indexEntry is one message as the folder's index keeps it: everything a
// session needs without reading the file.
type indexEntry struct {
	uid          uint32
	name         string // the file name in new/ or cur/
	new          bool
	size, rfc822 int64
	date         int64 // the file's mtime, in seconds: INTERNALDATE
}

func (e *indexEntry) unique() string  { u, _ := splitName(e.name); return u }
func (e *indexEntry) letters() string { _, l := splitName(e.name); return l }

// snapshot is a folder's messages with their UIDs, in UID order, as of
// one look.
type snapshot struct {
	validity, next uint32
	entries        []indexEntry
}

// snapshot returns the folder's messages as they are now, with UIDs.
func (f *Folder) snapshot() (*snapshot, error) {
	list, err := f.UIDList()
	if err != nil {
		return nil, err
	}
	snap := &snapshot{validity: list.Validity, next: list.Next}
	err = f.EachMessage(func(m Message) error {
		var st unix.Stat_t
		if err := unix.Stat(m.Path, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				return nil
			}
			return fmt.Errorf("maildir: stat %s: %w", m.Path, err)
		}
		snap.entries = append(snap.entries, indexEntry{uid: m.UID, name: m.Name, new: m.Dir == "new", size: m.Size, rfc822: m.RFC822Size, date: st.Mtim.Sec})
		return nil
	})
	if err != nil {
		return nil, err
	}
	// EachMessage may have run a Sync that gave new UIDs.
	if l, _, err := f.readUIDList(); err == nil && l.Validity == snap.validity {
		snap.next = max(snap.next, l.Next)
	}
	return snap, nil
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

// removeIfDeleted removes a message if its file has the T letter
// (\Deleted) now, under the folder's lock. It reports whether it did; a
// message already gone counts as removed.
func (f *Folder) removeIfDeleted(unique string) (bool, error) {
	lk, err := f.lock()
	if err != nil {
		return false, err
	}
	defer lk.unlock()
	for try := 0; ; try++ {
		rel, err := f.locate(unique)
		if errors.Is(err, fs.ErrNotExist) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		if _, letters := splitName(rel); !hasLetter(letters, 'T') {
			return false, nil
		}
		p := filepath.Join(f.path, rel)
		size, _ := nameSizes(unique)
		if size < 0 {
			if st, err := os.Stat(p); err == nil {
				size = st.Size()
			}
		}
		err = os.Remove(p)
		if errors.Is(err, fs.ErrNotExist) && try < 3 {
			f.setName(unique, "")
			continue
		}
		if err != nil {
			return false, fmt.Errorf("maildir: expunge: %w", err)
		}
		f.setName(unique, "")
		if size >= 0 {
			f.store.addQuotaUsage(-size, -1)
		}
		return true, nil
	}
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
// f's lock as every rename in tern is.
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
	return nil
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

// assignUIDs gives UIDs to messages just put into the folder, by unique
// name ("" skipped), and returns the UIDVALIDITY and each one's UID.
func (f *Folder) assignUIDs(uniques []string) (uint32, []uint32, error) {
	list, err := f.Sync()
	if err != nil {
		return 0, nil, err
	}
	uids := make([]uint32, len(uniques))
	for i, u := range uniques {
		if u == "" {
			continue
		}
		uid, ok := list.UID(u)
		if !ok {
			return 0, nil, fmt.Errorf("maildir: %s in %s got no UID", u, f.path)
		}
		uids[i] = uid
	}
	return list.Validity, uids, nil
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
	validity, uids, err := f.assignUIDs([]string{m.Unique})
	if err != nil {
		return Message{}, 0, err
	}
	m.UID = uids[0]
	if !date.IsZero() {
		m.Date = date.Truncate(time.Second)
	}
	return m, validity, nil
}
