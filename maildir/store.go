package maildir

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Defaults for the fields of Store.
const (
	DefaultLockTimeout  = 10 * time.Second
	DefaultStaleLockAge = 30 * time.Second
	// TmpMaxAge is how old a file in tmp/ must be before CleanTmp removes
	// it (the maildir spec's 36 hours).
	TmpMaxAge = 36 * time.Hour
)

// Store is a Maildir++ root. Its INBOX is the root itself; every other
// folder is a directory ".name" beside cur/, new/ and tmp/.
//
// The exported fields may be changed after Open and before the Store is
// used; a Store is then safe for concurrent use.
type Store struct {
	// Root is the directory of the Maildir.
	Root string
	// Hostname goes into new file names and lock files.
	Hostname string
	// Now is the clock used for file names, UIDVALIDITY and quota age.
	Now func() time.Time
	// LockTimeout bounds the wait for a folder's tern-uidlist.lock.
	LockTimeout time.Duration
	// StaleLockAge is the age after which a lock file is broken.
	StaleLockAge time.Duration

	pid int
	seq atomic.Int64 // the Q<n> delivery counter of this Store
	// mutation, set only by tests, breaks a rule of the index on
	// purpose, to show that the tests catch it.
	mutation int
}

func newStore(root string) (*Store, error) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return &Store{
		Root:         root,
		Hostname:     host,
		Now:          time.Now,
		LockTimeout:  DefaultLockTimeout,
		StaleLockAge: DefaultStaleLockAge,
		pid:          os.Getpid(),
	}, nil
}

func checkMaildir(dir string) error {
	for _, sub := range []string{"", "cur", "new", "tmp"} {
		p := filepath.Join(dir, sub)
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("maildir: open %s: %w", p, err)
		}
		if !st.IsDir() {
			return fmt.Errorf("maildir: open %s: not a directory", p)
		}
	}
	return nil
}

// Open opens an existing Maildir. The error wraps fs.ErrNotExist when the
// root or one of its cur/, new/ and tmp/ is missing.
func Open(root string) (*Store, error) {
	if err := checkMaildir(root); err != nil {
		return nil, err
	}
	return newStore(root)
}

// Create makes root and its cur/, new/ and tmp/ with perm (0700 when perm
// is 0) where they are missing, and opens it.
func Create(root string, perm fs.FileMode) (*Store, error) {
	if perm == 0 {
		perm = 0o700
	}
	if err := makeMaildir(root, perm); err != nil {
		return nil, err
	}
	return Open(root)
}

func makeMaildir(dir string, perm fs.FileMode) error {
	if err := os.MkdirAll(dir, perm); err != nil {
		return fmt.Errorf("maildir: create %s: %w", dir, err)
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		p := filepath.Join(dir, sub)
		if err := os.Mkdir(p, perm); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("maildir: create %s: %w", p, err)
		}
	}
	return syncDir(dir)
}

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// isInbox reports whether name is the IMAP INBOX, which is case-insensitive
// (RFC 3501 §5.1).
func isInbox(name string) bool { return strings.EqualFold(name, "INBOX") }

// ValidateFolderName checks a UTF-8 folder name: "." separates levels,
// levels must not be empty, and "/", control characters and invalid UTF-8
// are refused, so a name can never leave the Maildir.
func ValidateFolderName(name string) error {
	if name == "" {
		return fmt.Errorf("maildir: empty folder name")
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("maildir: folder name %q: invalid UTF-8", name)
	}
	if len(name) > 200 {
		return fmt.Errorf("maildir: folder name %q: longer than 200 bytes", name)
	}
	for _, part := range strings.Split(name, ".") {
		if part == "" {
			return fmt.Errorf("maildir: folder name %q: empty level (\"..\", or a leading or trailing \".\")", name)
		}
	}
	for _, r := range name {
		if r == '/' {
			return fmt.Errorf("maildir: folder name %q: contains \"/\"", name)
		}
		if unicode.IsControl(r) {
			return fmt.Errorf("maildir: folder name %q: contains a control character", name)
		}
	}
	return nil
}

// folderDir returns the directory name of a subfolder: "." and the modified
// UTF-7 form of its name.
func folderDir(name string) (string, error) {
	if err := ValidateFolderName(name); err != nil {
		return "", err
	}
	enc, err := EncodeMUTF7(name)
	if err != nil {
		return "", err
	}
	return "." + enc, nil
}

func (s *Store) folderPath(name string) (string, error) {
	if isInbox(name) {
		return s.Root, nil
	}
	d, err := folderDir(name)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.Root, d), nil
}

func (s *Store) newFolder(name, path string) *Folder {
	if isInbox(name) {
		name = "INBOX"
	}
	return &Folder{store: s, name: name, path: path}
}

// Folder returns the folder called name: "INBOX" in any case for the root,
// otherwise a subfolder such as "Lists.Go". The error wraps fs.ErrNotExist
// when there is no such folder.
func (s *Store) Folder(name string) (*Folder, error) {
	p, err := s.folderPath(name)
	if err != nil {
		return nil, err
	}
	if err := checkMaildir(p); err != nil {
		return nil, err
	}
	return s.newFolder(name, p), nil
}

// CreateFolder makes a subfolder with the maildirfolder marker file. Parent
// levels are not created: Maildir++ is flat, ".a.b" alone is a folder.
// The error wraps fs.ErrExist when the folder is there already.
func (s *Store) CreateFolder(name string) (*Folder, error) {
	if isInbox(name) {
		return nil, fmt.Errorf("maildir: create folder INBOX: %w", fs.ErrExist)
	}
	p, err := s.folderPath(name)
	if err != nil {
		return nil, err
	}
	if err := os.Mkdir(p, 0o700); err != nil {
		return nil, fmt.Errorf("maildir: create folder %s: %w", p, err)
	}
	if err := makeMaildir(p, 0o700); err != nil {
		return nil, err
	}
	marker := filepath.Join(p, "maildirfolder")
	mf, err := os.OpenFile(marker, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("maildir: create %s: %w", marker, err)
	}
	mf.Close()
	if err := syncDir(s.Root); err != nil {
		return nil, err
	}
	return s.newFolder(name, p), nil
}

// Folders returns the UTF-8 names of all folders, "INBOX" first, the rest
// sorted. Directories whose names are not canonical modified UTF-7 or that
// lack cur/ are skipped.
func (s *Store) Folders() ([]string, error) {
	ents, err := os.ReadDir(s.Root)
	if err != nil {
		return nil, fmt.Errorf("maildir: list folders in %s: %w", s.Root, err)
	}
	var names []string
	for _, e := range ents {
		n := e.Name()
		if len(n) < 2 || n[0] != '.' || n[1] == '.' {
			continue
		}
		dec, err := DecodeMUTF7(n[1:])
		if err != nil || ValidateFolderName(dec) != nil || isInbox(dec) {
			continue
		}
		if st, err := os.Stat(filepath.Join(s.Root, n, "cur")); err != nil || !st.IsDir() {
			continue
		}
		names = append(names, dec)
	}
	sort.Strings(names)
	return append([]string{"INBOX"}, names...), nil
}

// RenameFolder renames a folder and every folder below it ("a" to "b" moves
// ".a.x" to ".b.x"). INBOX cannot be renamed, nor a folder moved below
// itself. The error wraps fs.ErrExist when a target is there already. The
// renames are one rename(2) each; a crash between them leaves some
// subfolders under the old name, each complete.
func (s *Store) RenameFolder(oldName, newName string) error {
	if isInbox(oldName) || isInbox(newName) {
		return fmt.Errorf("maildir: rename folder %q to %q: INBOX cannot be renamed or replaced", oldName, newName)
	}
	oldDir, err := folderDir(oldName)
	if err != nil {
		return err
	}
	newDir, err := folderDir(newName)
	if err != nil {
		return err
	}
	if oldName == newName || strings.HasPrefix(newName, oldName+".") {
		return fmt.Errorf("maildir: rename folder %q to %q: a folder cannot move below itself", oldName, newName)
	}
	if err := checkMaildir(filepath.Join(s.Root, oldDir)); err != nil {
		return err
	}
	ents, err := os.ReadDir(s.Root)
	if err != nil {
		return fmt.Errorf("maildir: rename folder: read %s: %w", s.Root, err)
	}
	type move struct{ from, to string }
	moves := []move{{oldDir, newDir}}
	for _, e := range ents {
		if n := e.Name(); strings.HasPrefix(n, oldDir+".") {
			moves = append(moves, move{n, newDir + n[len(oldDir):]})
		}
	}
	for _, m := range moves {
		to := filepath.Join(s.Root, m.to)
		if _, err := os.Lstat(to); err == nil {
			return fmt.Errorf("maildir: rename folder to %s: %w", to, fs.ErrExist)
		}
	}
	for _, m := range moves {
		from, to := filepath.Join(s.Root, m.from), filepath.Join(s.Root, m.to)
		if err := os.Rename(from, to); err != nil {
			return fmt.Errorf("maildir: rename folder %s: %w", from, err)
		}
	}
	return syncDir(s.Root)
}

// DeleteFolder removes a folder and the messages in it; folders below it
// stay (IMAP DELETE, RFC 3501 §6.3.4). The folder is first renamed to a
// hidden "..tern-trash." name, so a crash never leaves a half-deleted folder
// visible; CleanTmp removes such leftovers.
func (s *Store) DeleteFolder(name string) error {
	if isInbox(name) {
		return fmt.Errorf("maildir: delete folder INBOX: not allowed")
	}
	p, err := s.folderPath(name)
	if err != nil {
		return err
	}
	if err := checkMaildir(p); err != nil {
		return err
	}
	trash := filepath.Join(s.Root, fmt.Sprintf("..tern-trash.%d.%d.%d", s.now().UnixNano(), s.pid, s.seq.Add(1)))
	if err := os.Rename(p, trash); err != nil {
		return fmt.Errorf("maildir: delete folder %s: %w", p, err)
	}
	if err := syncDir(s.Root); err != nil {
		return err
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("maildir: delete folder %s: %w", trash, err)
	}
	return nil
}

// CleanTmp removes files in the tmp/ of every folder last changed before
// now minus TmpMaxAge (36 hours, as the maildir spec says), and what a
// crashed DeleteFolder left. It returns how many files it removed.
func (s *Store) CleanTmp(now time.Time) (removed int, err error) {
	names, err := s.Folders()
	if err != nil {
		return 0, err
	}
	for _, name := range names {
		p, err := s.folderPath(name)
		if err != nil {
			continue
		}
		tmp := filepath.Join(p, "tmp")
		ents, err := os.ReadDir(tmp)
		if err != nil {
			return removed, fmt.Errorf("maildir: clean %s: %w", tmp, err)
		}
		for _, e := range ents {
			info, err := e.Info()
			if err != nil || info.IsDir() || !info.ModTime().Before(now.Add(-TmpMaxAge)) {
				continue
			}
			f := filepath.Join(tmp, e.Name())
			if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return removed, fmt.Errorf("maildir: clean %s: %w", f, err)
			}
			removed++
		}
	}
	ents, err := os.ReadDir(s.Root)
	if err != nil {
		return removed, fmt.Errorf("maildir: clean %s: %w", s.Root, err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "..tern-trash.") {
			p := filepath.Join(s.Root, e.Name())
			if err := os.RemoveAll(p); err != nil {
				return removed, fmt.Errorf("maildir: clean %s: %w", p, err)
			}
			removed++
		}
	}
	return removed, nil
}

// ErrSessionLocked is returned by LockSession when another process holds
// the lock.
var ErrSessionLocked = errors.New("maildir: held by another session")

// LockSession takes an exclusive lock for a whole session (POP3's: RFC
// 1939 §8 wants a maildrop locked while a session has it) on the file
// name at the top of the Maildir, without waiting: ErrSessionLocked when
// another session holds it. Close releases it.
//
// It is an open file description lock (F_OFD_SETLK): the kernel drops it
// when the process dies, so a crashed session never locks a user out, and
// the NFS client turns it into a server-side lock, so two hosts over one
// Maildir exclude each other too. It is not the link(2) lock of the
// index: a session lock is held for minutes, by a process that may die.
func (s *Store) LockSession(name string) (io.Closer, error) {
	if name == "" || strings.ContainsAny(name, "/") || name[0] == '.' {
		return nil, fmt.Errorf("maildir: bad session lock name %q", name)
	}
	lock, err := os.OpenFile(filepath.Join(s.Root, name), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("maildir: open session lock: %w", err)
	}
	flock := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if err := unix.FcntlFlock(lock.Fd(), unix.F_OFD_SETLK, &flock); err != nil {
		lock.Close()
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			return nil, ErrSessionLocked
		}
		return nil, fmt.Errorf("maildir: lock %s: %w", lock.Name(), err)
	}
	return lock, nil
}
