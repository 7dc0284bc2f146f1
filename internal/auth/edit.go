package auth

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tern-mail/tern/internal/fsync"
	"github.com/tern-mail/tern/internal/sysexit"
)

// UsersText is a users file held as its lines, so that an edit changes
// only the line it means to and keeps comments, blank lines and order.
type UsersText struct {
	File  string
	lines []string
	users *Users
}

// ParseUsersText parses data as a users file, keeping its text.
func ParseUsersText(file string, data []byte) (*UsersText, error) {
	u, err := ParseUsers(file, bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	s := string(data)
	s = strings.TrimSuffix(s, "\n")
	var lines []string
	if s != "" || len(data) > 0 {
		lines = strings.Split(s, "\n")
	}
	return &UsersText{File: file, lines: lines, users: u}, nil
}

// Users returns the parsed entries.
func (t *UsersText) Users() *Users { return t.users }

// Bytes returns the file's new contents.
func (t *UsersText) Bytes() []byte {
	if len(t.lines) == 0 {
		return nil
	}
	return []byte(strings.Join(t.lines, "\n") + "\n")
}

func (t *UsersText) reparse() error {
	u, err := ParseUsers(t.File, bytes.NewReader(t.Bytes()))
	if err != nil {
		return err
	}
	t.users = u
	return nil
}

// exact finds an entry whose name is exactly name, ignoring case; edits
// never fall back from user@domain to user as logins do.
func (t *UsersText) exact(name string) (*Entry, bool) { return t.users.Exact(name) }

// FormatEntry renders e as a users file line.
func FormatEntry(e Entry) string {
	s := strings.Join([]string{e.Name, e.Pass, e.UID, e.GID, e.Gecos, e.Home, e.Shell}, ":")
	if e.Extra != "" {
		s += ":" + e.Extra
	}
	return s
}

// Add appends an account. Its name must be new.
func (t *UsersText) Add(e Entry) error {
	if prev, ok := t.exact(e.Name); ok {
		return sysexit.New(sysexit.DataErr, "user %s already exists (%s:%d)", e.Name, t.File, prev.Line)
	}
	for _, f := range []string{e.Pass, e.UID, e.GID, e.Gecos, e.Home, e.Shell} {
		if strings.ContainsAny(f, ":\n\r\x00") {
			return sysexit.New(sysexit.DataErr, "user %s: field %q holds a colon or line break", e.Name, f)
		}
	}
	line := FormatEntry(e)
	if _, _, err := ParseUsersLine(line); err != nil {
		return sysexit.Wrap(sysexit.DataErr, err)
	}
	t.lines = append(t.lines, line)
	return t.reparse()
}

// SetPassword replaces the password field of user's line, leaving the
// rest of the line as it was.
func (t *UsersText) SetPassword(user, hash string) error {
	e, ok := t.exact(user)
	if !ok {
		return sysexit.New(sysexit.NoUser, "no user %s in %s", user, t.File)
	}
	if strings.ContainsAny(hash, ":\n\r\x00") {
		return sysexit.New(sysexit.DataErr, "password hash holds a colon or line break")
	}
	f := strings.SplitN(t.lines[e.Line-1], ":", 3)
	if len(f) < 2 {
		f = append(f, "")
	}
	f[1] = hash
	t.lines[e.Line-1] = strings.Join(f, ":")
	return t.reparse()
}

// Delete removes user's line.
func (t *UsersText) Delete(user string) error {
	e, ok := t.exact(user)
	if !ok {
		return sysexit.New(sysexit.NoUser, "no user %s in %s", user, t.File)
	}
	t.lines = append(t.lines[:e.Line-1], t.lines[e.Line:]...)
	return t.reparse()
}

// EditUsersFile changes the users file at path under its lock: it reads
// the file (a missing one is empty), calls edit, and if edit succeeds
// writes the result to a new file, fsyncs it, renames it over the old one
// and fsyncs the directory, so a reader sees the old file or the new one,
// never half of either, and a crash loses at most this edit. A new file
// is made mode 0640: the hashes are secret. An existing one keeps its
// mode and owner.
func EditUsersFile(path string, edit func(*UsersText) error) error {
	unlock, err := lockFile(path+".lock", 10*time.Second)
	if err != nil {
		return err
	}
	defer unlock()
	data, err := os.ReadFile(path)
	mode, uid, gid := fs.FileMode(0o640), -1, -1
	switch {
	case err == nil:
		if st, err := os.Stat(path); err == nil {
			mode = st.Mode().Perm()
			if s, ok := st.Sys().(*syscall.Stat_t); ok {
				uid, gid = int(s.Uid), int(s.Gid)
			}
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return fmt.Errorf("read users file: %w", err)
	}
	t, err := ParseUsersText(path, data)
	if err != nil {
		return err
	}
	if err := edit(t); err != nil {
		return err
	}
	return writeAtomic(path, t.Bytes(), mode, uid, gid)
}

func writeAtomic(path string, data []byte, mode fs.FileMode, uid, gid int) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("create temporary users file: %w", err)
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("chmod %s: %w", name, err)
	}
	if uid >= 0 && os.Geteuid() == 0 {
		if err := tmp.Chown(uid, gid); err != nil {
			return fmt.Errorf("chown %s: %w", name, err)
		}
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", name, err)
	}
	if err := os.Rename(name, path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", name, path, err)
	}
	ok = true
	return fsync.Dir(dir)
}

// lockFile takes the lock at lock with link(2), which is atomic on NFS
// too where O_EXCL and flock are not: a unique file holding "pid host" is
// linked to the lock name. A lock whose holder on this host is dead, or
// that is older than staleAfter, is broken. It waits up to wait and then
// gives up with a temporary error.
func lockFile(lock string, wait time.Duration) (unlock func(), err error) {
	const staleAfter = 5 * time.Minute
	host, _ := os.Hostname()
	mine := fmt.Sprintf("%s.%d.%d", lock, os.Getpid(), time.Now().UnixNano())
	if err := os.WriteFile(mine, fmt.Appendf(nil, "%d %s\n", os.Getpid(), host), 0o600); err != nil {
		return nil, fmt.Errorf("create lock file: %w", err)
	}
	defer os.Remove(mine)
	deadline := time.Now().Add(wait)
	delay := 5 * time.Millisecond
	for {
		err := os.Link(mine, lock)
		if err == nil {
			return func() { os.Remove(lock) }, nil
		}
		// On NFS link can succeed and report failure; the link count
		// says what happened.
		if st, serr := os.Stat(mine); serr == nil {
			if s, ok := st.Sys().(*syscall.Stat_t); ok && s.Nlink == 2 {
				return func() { os.Remove(lock) }, nil
			}
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("take lock %s: %w", lock, err)
		}
		if staleLock(lock, host, staleAfter) {
			os.Remove(lock)
			continue
		}
		if time.Now().After(deadline) {
			return nil, sysexit.New(sysexit.TempFail, "users file locked by another program (%s); try again", lock)
		}
		time.Sleep(delay)
		delay = min(delay*2, 200*time.Millisecond)
	}
}

func staleLock(lock, host string, staleAfter time.Duration) bool {
	st, err := os.Stat(lock)
	if err != nil {
		return false
	}
	if time.Since(st.ModTime()) > staleAfter {
		return true
	}
	data, err := os.ReadFile(lock)
	if err != nil {
		return false
	}
	f := strings.Fields(string(data))
	if len(f) != 2 || f[1] != host {
		return false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 0 {
		return false
	}
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

// CreateHome makes home and home's Maildir with cur, new and tmp, mode
// 0700, owned by uid:gid when they are not -1. What exists is kept.
func CreateHome(home string, uid, gid int) error {
	if !filepath.IsAbs(home) {
		return sysexit.New(sysexit.Usage, "home %q is not an absolute path", home)
	}
	md := strings.TrimSuffix(MaildirOf(home), "/")
	dirs := []string{home, md, filepath.Join(md, "cur"), filepath.Join(md, "new"), filepath.Join(md, "tmp")}
	if md == filepath.Clean(home) {
		dirs = dirs[1:]
	}
	if err := os.MkdirAll(filepath.Dir(filepath.Clean(dirs[0])), 0o755); err != nil {
		return fmt.Errorf("create parent of %s: %w", home, err)
	}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create %s: %w", d, err)
		}
		if uid >= 0 || gid >= 0 {
			if err := os.Lchown(d, uid, gid); err != nil {
				return fmt.Errorf("chown %s to %d:%d: %w", d, uid, gid, err)
			}
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := fsync.Dir(filepath.Dir(dirs[i])); err != nil {
			return err
		}
	}
	return nil
}
