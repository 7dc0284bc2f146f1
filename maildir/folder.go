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
	"syscall"
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
		var lfs, n int64
		buf := make([]byte, 64<<10)
		for {
			k, err := file.Read(buf)
			lfs += int64(bytes.Count(buf[:k], []byte{'\n'}))
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
	// not by ReadAll's doublings, which made 26 MB of garbage for the
	// 7 MB list of 100,000 messages.
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

// UIDList returns the folder's UID list as it is on disk now, without the
// lock; it runs Sync when there is no list yet or it is damaged.
func (f *Folder) UIDList() (*UIDList, error) {
	l, _, err := f.readUIDList()
	if err != nil {
		return f.Sync()
	}
	return l, nil
}

// Sync brings the UID list up to date under the folder's lock: messages in
// new/ and cur/ without a UID get one, in arrival order (the time in their
// names, then the name), and messages no longer on disk are dropped. The
// next UID only grows, so an expunged message's UID is never given again. A
// missing or damaged list (moved aside as tern-uidlist.broken.<time>) is
// rebuilt with a new, larger UIDVALIDITY. It returns the new list.
func (f *Folder) Sync() (*UIDList, error) {
	lk, err := f.lock()
	if err != nil {
		return nil, err
	}
	defer lk.unlock()
	return f.syncLocked(lk)
}

func (f *Folder) syncLocked(lk *dotLock) (*UIDList, error) {
	old, data, err := f.readUIDList()
	var hint uint32
	if err != nil {
		switch {
		case errors.Is(err, ErrCorruptUIDList):
			hint = validityHint(data)
			p := f.uidListPath()
			if st, err := os.Stat(p); err == nil {
				hint = max(hint, uint32(min(st.ModTime().Unix(), math.MaxUint32-1)))
			}
			aside := fmt.Sprintf("%s.broken.%d", p, time.Now().UnixNano())
			if err := os.Rename(p, aside); err != nil {
				return nil, fmt.Errorf("maildir: move damaged UID list aside: %w", err)
			}
		case errors.Is(err, fs.ErrNotExist):
		default:
			return nil, err
		}
		old = nil
	}
	known := func(u string) bool {
		if old == nil {
			return false
		}
		_, ok := old.byUnique[u]
		return ok
	}
	s1, err := f.scan()
	if err != nil {
		return nil, err
	}
	lk.touch()
	again := old == nil
	for u := range s1 {
		if !known(u) {
			again = true
			break
		}
	}
	if !again {
		for _, e := range old.entries {
			if _, ok := s1[e.Unique]; !ok {
				again = true
				break
			}
		}
	}
	// A second read of the directories: a message found by the first
	// read was delivered before the second began, so every message
	// delivered before it is found by the second. Only messages up to
	// the latest one found by both get UIDs now, so a later delivery
	// never gets a smaller UID than an earlier one that readdir happened
	// to miss while it was being linked. The rest wait for the next Sync.
	s2 := s1
	if again {
		if s2, err = f.scan(); err != nil {
			return nil, err
		}
	}
	var cutoff arrival
	haveCutoff := false
	for u := range s1 {
		if _, ok := s2[u]; ok && !known(u) {
			if k := parseArrival(u); !haveCutoff || cutoff.less(k) {
				cutoff, haveCutoff = k, true
			}
		}
	}
	var fresh []string
	for u := range s2 {
		if !known(u) && haveCutoff && !cutoff.less(parseArrival(u)) {
			fresh = append(fresh, u)
		}
	}
	sortByArrival(fresh)
	var kept []UIDEntry
	var validity, next uint32
	if old == nil {
		validity, next = f.newValidity(hint), 1
	} else {
		validity, next = old.Validity, old.Next
		for _, e := range old.entries {
			_, in1 := s1[e.Unique]
			_, in2 := s2[e.Unique]
			if in1 || in2 {
				kept = append(kept, e)
			}
		}
	}
	changed := old == nil || len(fresh) > 0 || len(kept) != len(old.entries)
	if uint64(next)+uint64(len(fresh)) >= math.MaxUint32 {
		// UIDs are spent: start again under a new UIDVALIDITY.
		all := make([]string, 0, len(kept)+len(fresh))
		for _, e := range kept {
			all = append(all, e.Unique)
		}
		fresh, kept = append(all, fresh...), nil
		validity, next = f.newValidity(validity), 1
	}
	for _, u := range fresh {
		kept = append(kept, UIDEntry{next, u})
		next++
	}
	list := newUIDList(validity, next, kept)
	if changed {
		// Streamed to the file: at 100,000 messages the list is 7 MB,
		// which a buffer would hold twice over while it grew.
		err := writeFileAtomicFunc(f.uidListPath(), func(w io.Writer) error {
			_, err := list.WriteTo(w)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	merged := s2
	for u, rel := range s1 {
		if _, ok := merged[u]; !ok {
			merged[u] = rel
		}
	}
	f.setNames(merged)
	f.mu.Lock()
	if validity > f.lastValidity {
		f.lastValidity = validity
	}
	f.mu.Unlock()
	return list, nil
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

// Messages returns the folder's messages with their UIDs, in UID order. It
// reads the UID list without the lock and runs Sync only when a message on
// disk is missing from it. A message whose UID is not given yet by that
// Sync (see Sync) is left out until a later call.
func (f *Folder) Messages() ([]Message, error) {
	var msgs []Message
	err := f.EachMessage(func(m Message) error {
		msgs = append(msgs, m)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return msgs, nil
}

// EachMessage calls fn with each message that Messages would return, in
// UID order, and stops at fn's first error. A caller that keeps only part
// of each Message (a POP3 session keeps the unique name and the size)
// saves holding all of them at once: 20 MB at 100,000 messages.
func (f *Folder) EachMessage(fn func(Message) error) error {
	list, _, err := f.readUIDList()
	names, serr := f.scan()
	if serr != nil {
		return serr
	}
	needSync := err != nil
	if !needSync {
		for u := range names {
			if _, ok := list.byUnique[u]; !ok {
				needSync = true
				break
			}
		}
	}
	if needSync {
		if list, err = f.Sync(); err != nil {
			return err
		}
	} else {
		f.setNames(names)
	}
	// The places in UID order, taken under the mutex (f.names may
	// change under other goroutines once it is unlocked): a slice, which
	// costs half what a copy of the map did at 100,000 messages.
	type at struct {
		uid uint32
		p   place
	}
	f.mu.Lock()
	places := make([]at, 0, len(list.entries))
	for _, e := range list.entries {
		if p, ok := f.names[e.Unique]; ok {
			places = append(places, at{e.UID, p})
		}
	}
	f.mu.Unlock()
	for _, a := range places {
		if err := f.visit(a.p, a.uid, fn); err != nil {
			return err
		}
	}
	return nil
}

// visit calls fn with the message at p, skipping it when it has gone
// meanwhile (expunged by another program).
func (f *Folder) visit(p place, uid uint32, fn func(Message) error) error {
	m, err := f.messageAt(p, uid)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return fn(m)
}

// uidOf returns the UID of a message from the current list, 0 if it has
// none (yet).
func (f *Folder) uidOf(unique string) uint32 {
	l, _, err := f.readUIDList()
	if err != nil {
		return 0
	}
	uid, _ := l.UID(unique)
	return uid
}

// SetFlags sets a message's flags (see NormalizeFlags) by renaming it into
// cur/ as "<unique>:2,<flags>"; a message in new/ moves to cur/. The
// message is found again by its unique name if someone else renamed it.
// Renames happen under the folder's lock, so that Sync never misses a
// message in the middle of one.
func (f *Folder) SetFlags(unique, flags string) (Message, error) {
	flags, err := NormalizeFlags(flags)
	if err != nil {
		return Message{}, err
	}
	return f.rename(unique, func(string) string { return flags })
}

// MoveToCur moves a message from new/ to cur/ keeping its flags (the IMAP
// \Recent state ends there). A message already in cur/ is left as is.
func (f *Folder) MoveToCur(unique string) (Message, error) {
	return f.rename(unique, func(old string) string { return old })
}

func (f *Folder) rename(unique string, newFlags func(old string) string) (Message, error) {
	lk, err := f.lock()
	if err != nil {
		return Message{}, err
	}
	defer lk.unlock()
	for try := 0; ; try++ {
		rel, err := f.locate(unique)
		if err != nil {
			return Message{}, err
		}
		dir, name, _ := strings.Cut(rel, "/")
		_, old := splitName(name)
		flags, err := NormalizeFlags(newFlags(old))
		if err != nil {
			flags = newFlags("")
		}
		newRel := "cur/" + unique + ":2," + flags
		if dir == "cur" && rel == newRel {
			return f.message(rel, f.uidOf(unique))
		}
		from, to := filepath.Join(f.path, rel), filepath.Join(f.path, newRel)
		err = os.Rename(from, to)
		if errors.Is(err, fs.ErrNotExist) && try < 3 {
			f.setName(unique, "")
			continue
		}
		if err != nil {
			return Message{}, fmt.Errorf("maildir: set flags: %w", err)
		}
		f.setName(unique, newRel)
		return f.message(newRel, f.uidOf(unique))
	}
}

// renameBatch is how many renames MoveToCurAll and AddFlagsAll make under
// one taking of the folder's lock. A lock per message (a file written,
// linked and removed) cost a POP3 login 0.3 ms a message; holding it for
// all of a 100,000-message folder would keep a Sync elsewhere waiting for
// seconds.
const renameBatch = 2000

// MoveToCurAll is MoveToCur for many messages at once, taking the lock
// once per few thousand. A message that is gone is skipped.
func (f *Folder) MoveToCurAll(uniques []string) error {
	return f.renameAll(uniques, func(old string) string { return old },
		func(dir, _ string) bool { return dir == "cur" })
}

// AddFlagsAll adds flags (see NormalizeFlags) to those each message has
// on disk now, moving it to cur/, taking the lock once per few thousand
// messages. A message that is gone is skipped.
func (f *Folder) AddFlagsAll(uniques []string, flags string) error {
	flags, err := NormalizeFlags(flags)
	if err != nil {
		return err
	}
	return f.renameAll(uniques, func(old string) string { return old + flags },
		func(dir, old string) bool {
			if dir != "cur" {
				return false
			}
			for i := 0; i < len(flags); i++ {
				if strings.IndexByte(old, flags[i]) < 0 {
					return false
				}
			}
			return true
		})
}

// renameAll renames the messages that need it in batches. done tells,
// from the name last seen, that a message needs no rename; those are left
// out before the lock is taken, so a POP3 QUIT after retrieving messages
// already seen takes no lock at all.
func (f *Folder) renameAll(uniques []string, newFlags func(old string) string, done func(dir, flags string) bool) error {
	todo := make([]string, 0, len(uniques))
	f.mu.Lock()
	for _, u := range uniques {
		if p, ok := f.names[u]; ok {
			if _, flags := splitName(p.name); done(p.dir(), flags) {
				continue
			}
		}
		todo = append(todo, u)
	}
	f.mu.Unlock()
	uniques = todo
	for len(uniques) > 0 {
		n := min(len(uniques), renameBatch)
		if err := f.renameBatch(uniques[:n], newFlags); err != nil {
			return err
		}
		uniques = uniques[n:]
	}
	return nil
}

// renameBatch renames messages under one lock. It trusts the last known
// place of each (no stat before the rename: the rename itself says when
// the file has moved) and reads the directories again at most a few
// times per batch, so that many messages gone at once cost a few scans,
// not one each.
func (f *Folder) renameBatch(uniques []string, newFlags func(old string) string) error {
	lk, err := f.lock()
	if err != nil {
		return err
	}
	defer lk.unlock()
	scans := 0
	rescan := func() error {
		scans++
		names, err := f.scan()
		if err != nil {
			return err
		}
		f.setNames(names)
		return nil
	}
	for _, unique := range uniques {
		for try := 0; ; try++ {
			f.mu.Lock()
			p, ok := f.names[unique]
			f.mu.Unlock()
			if !ok {
				if scans >= 3 {
					break // gone, as far as this batch can tell
				}
				if err := rescan(); err != nil {
					return err
				}
				f.mu.Lock()
				p, ok = f.names[unique]
				f.mu.Unlock()
				if !ok {
					break // gone
				}
			}
			_, old := splitName(p.name)
			flags, err := NormalizeFlags(newFlags(old))
			if err != nil {
				flags = newFlags("")
			}
			newName := unique + ":2," + flags
			if p.cur && p.name == newName {
				break
			}
			newRel := "cur/" + newName
			// rename(2) itself, not os.Rename, whose Lstat of the target
			// is one more lookup in a directory of 100,000 names.
			from, to := filepath.Join(f.path, p.dir(), p.name), filepath.Join(f.path, newRel)
			err = syscall.Rename(from, to)
			if err != nil {
				err = &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
			}
			if errors.Is(err, fs.ErrNotExist) && try < 3 {
				// Renamed or removed by someone else: look again.
				f.setName(unique, "")
				continue
			}
			if errors.Is(err, fs.ErrNotExist) {
				break
			}
			if err != nil {
				return fmt.Errorf("maildir: set flags: %w", err)
			}
			f.setName(unique, newRel)
			break
		}
	}
	return nil
}

// Remove deletes a message (expunge). Its UID is never given again. The
// quota file, if any, is told.
func (f *Folder) Remove(unique string) error {
	lk, err := f.lock()
	if err != nil {
		return err
	}
	defer lk.unlock()
	for try := 0; ; try++ {
		rel, err := f.locate(unique)
		if err != nil {
			return err
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
			return fmt.Errorf("maildir: remove message: %w", err)
		}
		f.setName(unique, "")
		if size >= 0 {
			f.store.addQuotaUsage(-size, -1)
		}
		return nil
	}
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

// EachOnDisk calls fn for every message in new/ and cur/ in the order of
// arrival that their names tell (seconds, microseconds, then the rest of
// the name), without the UID list: no lock is taken, nothing is written,
// and each Message has UID 0. A POP3 maildrop needs no more, as
// qmail-pop3d shows; at 100,000 messages it saves reading and parsing a
// 7 MB list at every login. Messages keep their UIDs, and new ones get
// theirs at the next Sync.
func (f *Folder) EachOnDisk(fn func(Message) error) error {
	names, err := f.scan()
	if err != nil {
		return err
	}
	f.setNames(names)
	// The places ride along with their sort keys: no second lookup in
	// names for each of 100,000 messages.
	type entry struct {
		key arrival
		p   place
	}
	entries := make([]entry, 0, len(names))
	for u, p := range names {
		entries = append(entries, entry{parseArrival(u), p})
	}
	slices.SortFunc(entries, func(a, b entry) int {
		switch {
		case a.key.less(b.key):
			return -1
		case b.key.less(a.key):
			return 1
		}
		return 0
	})
	for _, e := range entries {
		if err := f.visit(e.p, 0, fn); err != nil {
			return err
		}
	}
	return nil
}
