package maildir

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// known is a message as a caller last saw it (in a View, or the index):
// the renames and removals below trust where it was and look for it again
// only when the file has moved since.
type known struct {
	uid  uint32 // 0 when not known: looked up in the index
	name string // the file name; "" after a removal
	new  bool
}

func (k known) unique() string { u, _ := splitName(k.name); return u }

// renameBatch is how many renames or removals are made under one taking
// of the folder's lock: one lock per message (a file written, linked and
// removed) costs more than the rename, and holding it for all of a
// 100,000-message folder would keep another session waiting for seconds.
const renameBatch = 2000

// renameKnown renames each message straight to cur/ with the letters
// newLetters gives for the letters it has (a message in new/ gets its
// flags and its place in cur/ in one rename(2)), under the folder's lock
// in batches, and appends the renames to the index in the same taking of
// the lock. It returns the messages with their new names (in items
// itself); one that is gone gets the name "". A message already so is not
// renamed.
//
// The names are put together in two buffers reused for every message and
// renamed with renameat on open directories: a POP3 QUIT after
// downloading 100,000 new messages makes 100,000 rename(2)s and no string
// for each.
func (f *Folder) renameKnown(items []known, newLetters func(old string) string) ([]known, error) {
	// Changed in place (every caller builds items for the call), not
	// copied: at 100,000 messages a copy of the ones to rename was the
	// largest thing a POP3 QUIT held. A message already so is passed
	// over in its batch; only when none needs a rename, as far as the
	// caller knows, is no lock taken (a POP3 QUIT after downloading
	// messages seen before).
	if !slices.ContainsFunc(items, func(k known) bool {
		unique, old := splitName(k.name)
		return k.new || k.name[len(unique):] != ":2,"+newLetters(old)
	}) {
		return items, nil
	}
	var from, to []byte
	err := f.eachBatch(items, func(dirs folderDirs, batch []known) ([]recorded, error) {
		var rec []recorded
		var lost []int
		for i := range batch {
			k := &batch[i]
			unique, old := splitName(k.name)
			to = append(append(append(to[:0], unique...), ":2,"...), newLetters(old)...)
			if !k.new && string(to) == k.name {
				continue // already so (the comparison makes no string)
			}
			to = append(to, 0)
			from = append(append(from[:0], k.name...), 0)
			fromDir := dirs.cur
			if k.new {
				fromDir = dirs.new
			}
			err := renameat(fromDir, from, dirs.cur, to)
			if errors.Is(err, unix.ENOENT) {
				lost = append(lost, i)
				continue
			}
			if err != nil {
				return rec, fmt.Errorf("maildir: set flags of %s: %w", filepath.Join(f.path, dirOf(k.new), k.name), err)
			}
			k.name, k.new = string(to[:len(to)-1]), false
			rec = append(rec, recorded{uid: k.uid, name: k.name})
		}
		// Moved by another program since the caller saw them: found by
		// one read of the directories for the whole batch.
		if len(lost) > 0 {
			where, err := f.scan()
			if err != nil {
				return rec, err
			}
			for _, i := range lost {
				k := &batch[i]
				p, ok := where[k.unique()]
				if !ok {
					k.name = "" // gone
					continue
				}
				_, old := splitName(p.name)
				newName := k.unique() + ":2," + newLetters(old)
				if p.cur && p.name == newName {
					k.name, k.new = newName, false
					continue
				}
				err := unix.Rename(filepath.Join(f.path, p.dir(), p.name), filepath.Join(f.path, "cur", newName))
				if errors.Is(err, unix.ENOENT) {
					k.name = ""
					continue
				}
				if err != nil {
					return rec, fmt.Errorf("maildir: set flags of %s: %w", filepath.Join(f.path, p.dir(), p.name), err)
				}
				k.name, k.new = newName, false
				rec = append(rec, recorded{uid: k.uid, name: k.name})
			}
		}
		return rec, nil
	})
	return items, err
}

// removeKnown removes each message for which cond (given the letters its
// file has) is true, or every one when cond is nil, in batches under the
// folder's lock, and appends the removals to the index. It reports which
// were removed; a message already gone counts as removed. The quota file,
// if any, is told once.
func (f *Folder) removeKnown(items []known, cond func(letters string) bool) ([]bool, error) {
	removed := make([]bool, len(items))
	work := make([]known, len(items))
	copy(work, items)
	var size, count int64
	var name []byte
	base := 0
	err := f.eachBatch(work, func(dirs folderDirs, batch []known) ([]recorded, error) {
		var rec []recorded
		var lost []int
		for i := range batch {
			k := &batch[i]
			if _, letters := splitName(k.name); cond != nil && !cond(letters) {
				continue
			}
			dir := dirs.cur
			if k.new {
				dir = dirs.new
			}
			name = append(append(name[:0], k.name...), 0)
			err := unlinkat(dir, name)
			switch {
			case err == nil:
				s, _ := nameSizes(k.unique())
				size += max(s, 0)
				count++
			case errors.Is(err, unix.ENOENT):
				lost = append(lost, i)
				continue
			default:
				return rec, fmt.Errorf("maildir: remove message %s: %w", filepath.Join(f.path, dirOf(k.new), k.name), err)
			}
			removed[base+i] = true
			rec = append(rec, recorded{uid: k.uid, unique: k.unique()})
		}
		if len(lost) > 0 {
			where, err := f.scan()
			if err != nil {
				return rec, err
			}
			for _, i := range lost {
				k := &batch[i]
				p, ok := where[k.unique()]
				if ok {
					if _, letters := splitName(p.name); cond != nil && !cond(letters) {
						continue // changed by someone else: not removed
					}
					err := unix.Unlink(filepath.Join(f.path, p.dir(), p.name))
					if err != nil && !errors.Is(err, unix.ENOENT) {
						return rec, fmt.Errorf("maildir: remove message %s: %w", filepath.Join(f.path, p.dir(), p.name), err)
					}
					if err == nil {
						s, _ := nameSizes(k.unique())
						size += max(s, 0)
						count++
					}
				}
				removed[base+i] = true
				rec = append(rec, recorded{uid: k.uid, unique: k.unique()})
			}
		}
		base += len(batch)
		return rec, nil
	})
	if count > 0 {
		// Told of what was removed, even when not all of it was.
		f.store.addQuotaUsage(-size, -count)
	}
	return removed, err
}

// recorded is one change this process made, for the index: a rename (the
// new name, in cur/) or, with name "", a removal.
type recorded struct {
	uid    uint32
	unique string // for a removal; a rename's is in its name
	name   string
}

// eachBatch calls do with the items in batches, new/ and cur/ open, each
// batch under the folder's lock (a refresh never reads the directories
// in the middle of a rename, and so never takes one for an expunge), and
// appends what do did to the index. It stops at do's first error.
func (f *Folder) eachBatch(items []known, do func(folderDirs, []known) ([]recorded, error)) error {
	if len(items) == 0 {
		return nil
	}
	dirs, err := f.openDirs()
	if err != nil {
		return err
	}
	defer dirs.close()
	// What was done is recorded in the index once, under the lock of
	// the last batch (or of the batch that failed): an index of 100,000
	// messages is not copied for every batch. A refresh by another
	// process between two batches finds the renamed files under their
	// new names, whole, and records them itself.
	all := make([]recorded, 0, len(items))
	for len(items) > 0 {
		n := min(len(items), renameBatch)
		lk, err := f.lock()
		if err != nil {
			return err
		}
		rec, err := do(dirs, items[:n])
		all = append(all, rec...)
		items = items[n:]
		if err != nil || len(items) == 0 {
			rerr := f.recordLocked(all)
			lk.unlock()
			return errors.Join(err, rerr)
		}
		lk.unlock()
	}
	return nil
}

// recordLocked appends what this process did under the lock to the
// index. A message the index does not hold yet is left to the next
// refresh.
func (f *Folder) recordLocked(rec []recorded) error {
	if len(rec) == 0 {
		return nil
	}
	x, err := f.loadLocked()
	if err != nil {
		return err
	}
	if len(rec) > len(x.entries)/2 {
		return f.rewriteLocked(x, rec)
	}
	var byUnique map[string]int
	var r indexRecords
	r.b = make([]byte, 0, len(rec)*(len(rec[0].name)+len(rec[0].unique)+16))
	for _, c := range rec {
		u := c.unique
		if c.name != "" {
			u, _ = splitName(c.name)
		}
		i, ok := -1, false
		if c.uid != 0 {
			if i, ok = x.find(c.uid); ok && x.entries[i].unique() != u {
				ok = false
			}
		}
		if !ok {
			if byUnique == nil {
				byUnique = x.byUnique()
			}
			i, ok = byUnique[u]
		}
		if !ok {
			continue
		}
		e := &x.entries[i]
		if c.name == "" {
			r.expunge(e.uid)
		} else if e.name != c.name || e.new {
			r.rename(e.uid, false, c.name)
		}
	}
	_, err = f.appendLocked(x, &r)
	return err
}

// rewriteLocked records changes to half the folder or more (a POP3 QUIT
// that flagged or removed every message) by writing the index whole,
// with the names the renames made, rather than as a block of records
// appended: the block would be most of the file's size again, held in
// memory with the index it changes (its names point into it), and
// compacted away at the end of the session anyway.
func (f *Folder) rewriteLocked(x *index, rec []recorded) error {
	y := x.clone()
	y.stamped = false
	var byUnique map[string]int
	expunged := false
	for _, c := range rec {
		u := c.unique
		if c.name != "" {
			u, _ = splitName(c.name)
		}
		i, ok := -1, false
		if c.uid != 0 {
			if i, ok = y.find(c.uid); ok && y.entries[i].unique() != u {
				ok = false
			}
		}
		if !ok {
			if byUnique == nil {
				byUnique = y.byUnique()
			}
			i, ok = byUnique[u]
		}
		if !ok || y.entries[i].name == "" {
			continue // not in the index yet: the next refresh finds it
		}
		if c.name == "" {
			y.entries[i].name = ""
			expunged = true
		} else {
			y.entries[i].setName(c.name, false)
		}
	}
	if expunged {
		y.entries = slices.DeleteFunc(y.entries, func(e indexEntry) bool { return e.name == "" })
	}
	y.recount()
	return f.writeIndex(y)
}

func dirOf(isNew bool) string {
	if isNew {
		return "new"
	}
	return "cur"
}

// knownOf returns a message of the index by unique name, the zero known
// with ok false when the index does not hold it.
func (f *Folder) knownOf(unique string) (known, bool, error) {
	x, err := f.current()
	if err != nil {
		return known{}, false, err
	}
	for i := range x.entries {
		if e := &x.entries[i]; e.unique() == unique {
			return known{uid: e.uid, name: e.name, new: e.new}, true, nil
		}
	}
	return known{}, false, nil
}

// folderDirs are a folder's new/ and cur/, open for the *at system calls:
// the path to the Maildir is looked up once, not twice for every message.
type folderDirs struct{ new, cur int }

func (f *Folder) openDirs() (folderDirs, error) {
	d := folderDirs{-1, -1}
	var err error
	if d.new, err = unix.Open(filepath.Join(f.path, "new"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		return d, fmt.Errorf("maildir: open %s: %w", filepath.Join(f.path, "new"), err)
	}
	if d.cur, err = unix.Open(filepath.Join(f.path, "cur"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		unix.Close(d.new)
		return d, fmt.Errorf("maildir: open %s: %w", filepath.Join(f.path, "cur"), err)
	}
	return d, nil
}

func (d folderDirs) close() {
	unix.Close(d.new)
	unix.Close(d.cur)
}

// renameat (renameat2(2) without flags: the one every architecture has)
// and unlinkat take NUL-terminated names in reused buffers;
// x/sys/unix's versions make a C string of each name, two allocations a
// message.
func renameat(fromDir int, from []byte, toDir int, to []byte) error {
	_, _, e := unix.Syscall6(unix.SYS_RENAMEAT2, uintptr(fromDir), uintptr(unsafe.Pointer(&from[0])), uintptr(toDir), uintptr(unsafe.Pointer(&to[0])), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func unlinkat(dir int, name []byte) error {
	_, _, e := unix.Syscall(unix.SYS_UNLINKAT, uintptr(dir), uintptr(unsafe.Pointer(&name[0])), 0)
	if e != 0 {
		return e
	}
	return nil
}

// lettersAdd returns a newLetters that adds letters to those the file
// has, sorted without duplicates; letters of a foreign name that are not
// flags are dropped.
func lettersAdd(add string) func(string) string {
	return func(old string) string {
		var set [128]bool
		for _, s := range []string{old, add} {
			for i := 0; i < len(s); i++ {
				if c := s[i]; c >= 'a' && c <= 'z' || strings.IndexByte(systemFlags, c) >= 0 {
					set[c] = true
				}
			}
		}
		b := make([]byte, 0, len(old)+len(add))
		for c := range set {
			if set[c] {
				b = append(b, byte(c))
			}
		}
		return string(b)
	}
}
