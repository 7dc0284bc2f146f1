package maildir

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Folder is one Maildir++ folder: the INBOX (the root) or a subfolder.
// A Folder is safe for concurrent use; any number of processes may use the
// same folder at once.
type Folder struct {
	store *Store
	name  string
	path  string

	mu           sync.Mutex
	names        map[string]place // unique -> where its file is, as last seen
	list         *UIDList         // last list read, and the file it came from
	listStat     unix.Stat_t
	lastValidity uint32
	idx          *index    // the index as last read
	kw           *Keywords // last tern-keywords read, and its stat
	kwStat       unix.Stat_t
}

// Message is one message of a folder: the one type every caller of this
// package sees, from a delivery, a listing or a session's view.
type Message struct {
	// UID is the message's IMAP UID, 0 where it has none yet.
	UID uint32
	// Seq is its sequence number in the View it came from, 0 elsewhere.
	Seq uint32
	// Unique is the file name without the ":2,<flags>" info; it does
	// not change when the flags do. POP3's UIDL shows it.
	Unique string
	// Name is the file name in Dir, Path the whole path, as last seen.
	Name, Path string
	// Dir is "new" or "cur".
	Dir string
	// Flags are the message's flags in IMAP's terms: system flags
	// (FlagSeen...) and keywords.
	Flags []string
	// Recent is \Recent in the View it came from (RFC 3501 §2.3.2).
	Recent bool
	// Size is the size on disk (S=); RFC822Size the size with every LF
	// counted as CRLF (W=), which POP3 and IMAP report.
	Size, RFC822Size int64
	// Date is the internal date (RFC 9051 §2.3.3): the file's mtime,
	// where Courier and Dovecot keep it too. Zero where not read.
	Date time.Time

	letters string // the flag letters of the name
}

// HasFlag reports whether the message has a flag (system flags matched
// without regard to case).
func (m Message) HasFlag(flag string) bool {
	if c, ok := systemLetter(flag); ok {
		return hasLetter(m.letters, c)
	}
	return slices.Contains(m.Flags, flag)
}

// Name returns the folder's UTF-8 name, "INBOX" for the root.
func (f *Folder) Name() string { return f.name }

// Path returns the folder's directory.
func (f *Folder) Path() string { return f.path }

func (f *Folder) lock() (*dotLock, error) {
	return f.store.lockFile(filepath.Join(f.path, "tern-uidlist.lock"))
}

// readDirNames lists a directory without stat-ing its entries.
func readDirNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("maildir: read %s: %w", dir, err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("maildir: read %s: %w", dir, err)
	}
	return names, nil
}

// place is where a message's file is: its name in new/ or in cur/. It is
// kept apart from the directory, rather than as "cur/<name>", so that a
// scan of 100,000 messages makes no string of its own for each.
type place struct {
	name string
	cur  bool
}

func (p place) dir() string {
	if p.cur {
		return "cur"
	}
	return "new"
}

func (p place) rel() string { return p.dir() + "/" + p.name }

// placeOf is the place of a path relative to the folder, "new/<name>".
func placeOf(rel string) place {
	dir, name, _ := strings.Cut(rel, "/")
	return place{name: name, cur: dir == "cur"}
}

// readNewCur reads the names in new/ and then in cur/: in that order, a
// message moving from one to the other meanwhile is seen at least once.
func (f *Folder) readNewCur() (newNames, curNames []string, err error) {
	if newNames, err = readDirNames(filepath.Join(f.path, "new")); err != nil {
		return nil, nil, err
	}
	if curNames, err = readDirNames(filepath.Join(f.path, "cur")); err != nil {
		return nil, nil, err
	}
	return newNames, curNames, nil
}

// scan maps every message's unique name to where it is. new/ is read before
// cur/, so a message that moves from new/ to cur/ meanwhile is seen at least
// once.
func (f *Folder) scan() (map[string]place, error) {
	newNames, curNames, err := f.readNewCur()
	if err != nil {
		return nil, err
	}
	// Sized once: a large folder is not rehashed on the way.
	res := make(map[string]place, len(newNames)+len(curNames))
	for _, n := range newNames {
		if u, _ := splitName(n); validUnique(u) {
			res[u] = place{name: n}
		}
	}
	for _, n := range curNames {
		if u, _ := splitName(n); validUnique(u) {
			res[u] = place{name: n, cur: true}
		}
	}
	return res, nil
}

func (f *Folder) setNames(names map[string]place) {
	f.mu.Lock()
	f.names = names
	f.mu.Unlock()
}

func (f *Folder) setName(unique, rel string) {
	f.mu.Lock()
	if f.names == nil {
		f.names = make(map[string]place)
	}
	if rel == "" {
		delete(f.names, unique)
	} else {
		f.names[unique] = placeOf(rel)
	}
	f.mu.Unlock()
}

// locate returns where the message with the unique name is now, looking at
// the last known place first and reading the directories again when it is
// gone from there (renamed by someone else).
func (f *Folder) locate(unique string) (string, error) {
	f.mu.Lock()
	p, ok := f.names[unique]
	f.mu.Unlock()
	if ok {
		if rel := p.rel(); unix.Lstat(filepath.Join(f.path, rel), new(unix.Stat_t)) == nil {
			return rel, nil
		}
	}
	names, err := f.scan()
	if err != nil {
		return "", err
	}
	f.setNames(names)
	if p, ok := names[unique]; ok {
		return p.rel(), nil
	}
	return "", fmt.Errorf("maildir: message %s in %s: %w", unique, f.path, fs.ErrNotExist)
}

// message builds a Message for a path relative to the folder, taking the
// sizes from the name, or from the file when the name lacks them.
func (f *Folder) message(rel string, uid uint32) (Message, error) {
	return f.messageAt(placeOf(rel), uid)
}

func (f *Folder) messageAt(p place, uid uint32) (Message, error) {
	unique, flags := splitName(p.name)
	m := Message{UID: uid, Unique: unique, Name: p.name, Path: filepath.Join(f.path, p.dir(), p.name), Dir: p.dir(), letters: flags}
	m.Flags = imapFlags(flags, f.cachedKeywords())
	m.Size, m.RFC822Size = nameSizes(unique)
	if m.Size < 0 || m.RFC822Size < 0 {
		if err := fileSizes(&m); err != nil {
			return m, err
		}
	}
	return m, nil
}

func fileSizes(m *Message) error {
	file, err := os.Open(m.Path)
	if err != nil {
		return fmt.Errorf("maildir: size of %s: %w", m.Path, err)
	}
	defer file.Close()
	if m.Size < 0 {
		st, err := file.Stat()
		if err != nil {
			return fmt.Errorf("maildir: size of %s: %w", m.Path, err)
		}
		m.Size = st.Size()
	}
	if m.RFC822Size < 0 {
		// Only a bare LF grows into CRLF: a file another program wrote
		// with CRLF line ends (go-maildir keeps what it is given) is
		// sent as it is.
		var lfs, n int64
		var prev byte
		buf := make([]byte, 64<<10)
		for {
			k, err := file.Read(buf)
			chunk := buf[:k]
			lfs += int64(bytes.Count(chunk, []byte{'\n'}) - bytes.Count(chunk, []byte{'\r', '\n'}))
			if k > 0 {
				if prev == '\r' && chunk[0] == '\n' {
					lfs--
				}
				prev = chunk[k-1]
			}
			n += int64(k)
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("maildir: size of %s: %w", m.Path, err)
			}
		}
		m.RFC822Size = n + lfs
	}
	return nil
}

func (f *Folder) uidListPath() string { return filepath.Join(f.path, "tern-uidlist") }

// readUIDList returns the folder's current list without taking the lock
// (the list is only ever replaced whole by rename). A list that has not
// changed since the last read is not parsed again. It also returns the raw
// bytes of a corrupt list.
func (f *Folder) readUIDList() (*UIDList, []byte, error) {
	p := f.uidListPath()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return nil, nil, fmt.Errorf("maildir: read UID list %s: %w", p, &fs.PathError{Op: "stat", Path: p, Err: err})
	}
	f.mu.Lock()
	if f.list != nil && sameFile(&st, &f.listStat) {
		l := f.list
		f.mu.Unlock()
		return l, nil, nil
	}
	f.mu.Unlock()
	file, err := os.Open(p)
	if err != nil {
		return nil, nil, fmt.Errorf("maildir: read UID list: %w", err)
	}
	defer file.Close()
	if err := unix.Fstat(int(file.Fd()), &st); err != nil {
		return nil, nil, fmt.Errorf("maildir: read UID list %s: %w", p, err)
	}
	// Read at the size the file has (it is replaced whole, never grown),
	// not by ReadAll's doublings, which make garbage several times the
	// size of a large list.
	size := min(st.Size, maxUIDListSize+1)
	data := make([]byte, size, size+1)
	if _, err := io.ReadFull(file, data); err != nil {
		return nil, nil, fmt.Errorf("maildir: read UID list %s: %w", p, err)
	}
	l, err := parseUIDList(data)
	if err != nil {
		return nil, data, fmt.Errorf("maildir: read UID list %s: %w", p, err)
	}
	f.mu.Lock()
	f.list, f.listStat = l, st
	if l.Validity > f.lastValidity {
		f.lastValidity = l.Validity
	}
	f.mu.Unlock()
	return l, nil, nil
}

func sameFile(a, b *unix.Stat_t) bool {
	return a.Dev == b.Dev && a.Ino == b.Ino && a.Size == b.Size && a.Mtim == b.Mtim && a.Ctim == b.Ctim
}

// UIDList returns the folder's UIDs as its index has them now, brought up
// to date with the directories first where they changed.
func (f *Folder) UIDList() (*UIDList, error) {
	x, err := f.current()
	if err != nil {
		return nil, err
	}
	return x.uidList(), nil
}

// Sync brings the folder's index up to date with new/ and cur/ under the
// folder's lock, whatever the directories' stamps say: messages without a
// UID get one, in arrival order (the time in their names, then the name),
// and messages no longer on disk are dropped. The next UID only grows, so
// an expunged message's UID is never given again. A missing index is made
// (from tern-uidlist where one is left, keeping its UIDs); a damaged one
// is moved aside as tern-index.broken.<time> and made anew with a new,
// larger UIDVALIDITY. It returns the UIDs.
func (f *Folder) Sync() (*UIDList, error) {
	lk, err := f.lock()
	if err != nil {
		return nil, err
	}
	defer lk.unlock()
	x, err := f.loadLocked()
	if err != nil {
		return nil, err
	}
	if x.stamped {
		// Forget the stamps: every directory is read.
		x = x.clone()
		x.stamped = false
		f.publish(x)
	}
	if x, err = f.refreshLocked(lk); err != nil {
		return nil, err
	}
	return x.uidList(), nil
}

func (x *index) uidList() *UIDList {
	entries := make([]UIDEntry, len(x.entries))
	for i := range x.entries {
		entries[i] = UIDEntry{x.entries[i].uid, x.entries[i].unique()}
	}
	return newUIDList(x.validity, x.next, entries)
}

// newValidity picks a UIDVALIDITY for a rebuilt list: the current time,
// but always above any value this folder is known to have had.
func (f *Folder) newValidity(hint uint32) uint32 {
	f.mu.Lock()
	hint = max(hint, f.lastValidity)
	f.mu.Unlock()
	if ents, err := os.ReadDir(f.path); err == nil {
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), "tern-uidlist.broken.") {
				continue
			}
			if data, err := readHead(filepath.Join(f.path, e.Name())); err == nil {
				hint = max(hint, validityHint(data))
			}
		}
	}
	v := uint32(min(max(f.store.now().Unix(), 1), math.MaxUint32-1))
	if hint >= v && hint < math.MaxUint32 {
		v = hint + 1
	}
	return v
}

func readHead(p string) ([]byte, error) {
	file, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	buf := make([]byte, 128)
	n, err := io.ReadFull(file, buf)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		err = nil
	}
	return buf[:n], err
}

// writeFileAtomic replaces a file so that a reader sees the old or the new
// content, never a part: temp file, fsync, rename, fsync of the directory.
func writeFileAtomic(p string, data []byte) error {
	return writeFileAtomicFunc(p, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// writeFileAtomicFunc is writeFileAtomic with the content written by
// write, through a buffer, instead of held in memory.
func writeFileAtomicFunc(p string, write func(io.Writer) error) error {
	dir := filepath.Dir(p)
	file, err := os.CreateTemp(dir, filepath.Base(p)+".tmp.")
	if err != nil {
		return fmt.Errorf("maildir: write %s: %w", p, err)
	}
	tmp := file.Name()
	bw := bufio.NewWriterSize(file, 64<<10)
	err = write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = file.Sync()
	}
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("maildir: write %s: %w", p, err)
	}
	return syncDir(dir)
}

// Messages returns the folder's messages with their UIDs, in UID order,
// from its index. A message whose UID is not given yet (see Sync) is left
// out until a later call.
func (f *Folder) Messages() ([]Message, error) {
	x, err := f.current()
	if err != nil {
		return nil, err
	}
	kw := f.cachedKeywords()
	msgs := make([]Message, len(x.entries))
	for i := range x.entries {
		msgs[i] = f.entryMessage(x.entries[i], kw)
	}
	return msgs, nil
}

// uidOf returns the UID of a message from the index as last read, 0 if
// it has none (yet).
func (f *Folder) uidOf(unique string) uint32 {
	f.mu.Lock()
	x := f.idx
	f.mu.Unlock()
	if x == nil {
		return 0
	}
	for i := range x.entries {
		if x.entries[i].unique() == unique {
			return x.entries[i].uid
		}
	}
	return 0
}

// SetFlags sets a message's flags, in IMAP's terms, by renaming it into
// cur/ as "<unique>:2,<letters>"; a message in new/ moves to cur/. The
// message is found again by its unique name if someone else renamed it.
func (f *Folder) SetFlags(unique string, flags []string) (Message, error) {
	c, err := f.newFlagChange(FlagsSet, flags)
	if err != nil {
		return Message{}, err
	}
	return f.renameOne(unique, c.apply)
}

// MoveToCur moves a message from new/ to cur/ keeping its flags (the IMAP
// \Recent state ends there). A message already in cur/ is left as is.
func (f *Folder) MoveToCur(unique string) (Message, error) {
	return f.renameOne(unique, func(old string) string { return old })
}

func (f *Folder) renameOne(unique string, newLetters func(string) string) (Message, error) {
	k, ok, err := f.knownOf(unique)
	if err != nil {
		return Message{}, err
	}
	if !ok {
		rel, err := f.locate(unique)
		if err != nil {
			return Message{}, err
		}
		p := placeOf(rel)
		k = known{name: p.name, new: !p.cur}
	}
	out, err := f.renameKnown([]known{k}, newLetters)
	if err != nil {
		return Message{}, err
	}
	if out[0].name == "" {
		return Message{}, fmt.Errorf("maildir: message %s in %s: %w", unique, f.path, fs.ErrNotExist)
	}
	f.setName(unique, "cur/"+out[0].name)
	return f.message("cur/"+out[0].name, f.uidOf(unique))
}

// Remove deletes a message (expunge). Its UID is never given again. The
// quota file, if any, is told.
func (f *Folder) Remove(unique string) error {
	k, ok, err := f.knownOf(unique)
	if err != nil {
		return err
	}
	if !ok {
		rel, err := f.locate(unique)
		if err != nil {
			return err
		}
		p := placeOf(rel)
		k = known{name: p.name, new: !p.cur}
	}
	if _, err := f.removeKnown([]known{k}, nil); err != nil {
		return err
	}
	f.setName(unique, "")
	return nil
}

// Open opens a message for reading. The error wraps fs.ErrNotExist when the
// message is gone.
func (f *Folder) Open(unique string) (*os.File, Message, error) {
	file, rel, err := f.openFile(unique)
	if err != nil {
		return nil, Message{}, err
	}
	m, err := f.message(rel, f.uidOf(unique))
	if err != nil {
		file.Close()
		return nil, Message{}, err
	}
	return file, m, nil
}

// OpenFile is Open without the Message: it does not look up the UID, so
// it costs one open(2) however large the folder is (a POP3 session opens
// every message of a maildrop this way).
func (f *Folder) OpenFile(unique string) (*os.File, error) {
	file, _, err := f.openFile(unique)
	return file, err
}

func (f *Folder) openFile(unique string) (*os.File, string, error) {
	for try := 0; ; try++ {
		rel, err := f.locate(unique)
		if err != nil {
			return nil, "", err
		}
		file, err := os.Open(filepath.Join(f.path, rel))
		if errors.Is(err, fs.ErrNotExist) && try < 3 {
			// Renamed (new to cur, a flag change) or removed by
			// another process: look again.
			f.setName(unique, "")
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("maildir: open message: %w", err)
		}
		return file, rel, nil
	}
}
