package maildir

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// AddFlagsListed is AddFlagsAll for messages as List gave them: each is
// renamed from where it was listed straight to cur/ with the flags added
// to those in its listed name, in one rename(2) (a message in new/ gets
// its flags and its place in cur/ at once). Only a message that has moved
// since (another program renamed it) is looked for, through AddFlagsAll;
// one that is gone is skipped. With no flags it moves messages in new/ to
// cur/ and leaves the others as they are.
//
// A POP3 QUIT after downloading 100,000 new messages does exactly 100,000
// renames this way, with no map of the folder's names built first and no
// string made for each: the names are put together in two buffers reused
// for every message.
func (f *Folder) AddFlagsListed(list []Listed, flags string) error {
	flags, err := NormalizeFlags(flags)
	if err != nil || len(list) == 0 {
		return err
	}
	var moved []string
	var from, to []byte
	err = f.eachListed(list, func(dirs folderDirs, l Listed) error {
		unique, old := splitName(l.Name)
		to = appendFlagged(append(append(to[:0], unique...), ":2,"...), old, flags)
		if !l.New && string(to) == l.Name {
			return nil // already so (the comparison makes no string)
		}
		to = append(to, 0)
		from = append(append(from[:0], l.Name...), 0)
		fromDir := dirs.cur
		if l.New {
			fromDir = dirs.new
		}
		err := renameat(fromDir, from, dirs.cur, to)
		switch {
		case errors.Is(err, unix.ENOENT):
			moved = append(moved, unique)
		case err != nil:
			return fmt.Errorf("maildir: set flags of %s: %w", filepath.Join(f.path, l.Dir(), l.Name), err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(moved) == 0 {
		return nil
	}
	if flags == "" {
		return f.MoveToCurAll(moved)
	}
	return f.AddFlagsAll(moved, flags)
}

// RemoveListed is Remove for messages as List gave them: each file is
// unlinked where it was listed, and looked for (through Remove) only
// when it has moved since. One that is gone counts as removed. The quota
// file, if any, is told once.
func (f *Folder) RemoveListed(list []Listed) error {
	if len(list) == 0 {
		return nil
	}
	var moved []string
	var size, count int64
	var name []byte
	err := f.eachListed(list, func(dirs folderDirs, l Listed) error {
		dir := dirs.cur
		if l.New {
			dir = dirs.new
		}
		name = append(append(name[:0], l.Name...), 0)
		err := unlinkat(dir, name)
		switch {
		case err == nil:
			size += l.Size
			count++
		case errors.Is(err, unix.ENOENT):
			moved = append(moved, l.Unique())
		default:
			return fmt.Errorf("maildir: remove message %s: %w", filepath.Join(f.path, l.Dir(), l.Name), err)
		}
		return nil
	})
	// The quota file is told of what was removed, even when not all of it
	// was.
	if count > 0 {
		f.store.addQuotaUsage(-size, -count)
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, u := range moved {
		if err := f.Remove(u); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// eachListed calls do for each message of list with new/ and cur/ open,
// in batches of renameBatch, each under the folder's lock as every rename
// in tern is, so that a Sync never misses a message in the middle of one.
// It stops at do's first error.
func (f *Folder) eachListed(list []Listed, do func(folderDirs, Listed) error) error {
	dirs, err := f.openDirs()
	if err != nil {
		return err
	}
	defer dirs.close()
	for len(list) > 0 {
		n := min(len(list), renameBatch)
		lk, err := f.lock()
		if err != nil {
			return err
		}
		for _, l := range list[:n] {
			if err := do(dirs, l); err != nil {
				lk.unlock()
				return err
			}
		}
		lk.unlock()
		list = list[n:]
	}
	return nil
}

// appendFlagged appends the union of two sets of flag letters, sorted, as
// NormalizeFlags makes it, without a string for each message. Letters of
// old that are not flags (a foreign name) are dropped, as SetFlags does.
func appendFlagged(b []byte, old, add string) []byte {
	var set [128]bool
	for _, s := range []string{old, add} {
		for i := 0; i < len(s); i++ {
			if c := s[i]; c >= 'a' && c <= 'z' || strings.IndexByte(systemFlags, c) >= 0 {
				set[c] = true
			}
		}
	}
	for c := range set {
		if set[c] {
			b = append(b, byte(c))
		}
	}
	return b
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
