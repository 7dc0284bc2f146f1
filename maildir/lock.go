package maildir

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrLockTimeout is returned when a folder's lock could not be taken in
// Store.LockTimeout. Callers should answer "try again later".
var ErrLockTimeout = errors.New("timed out waiting for the lock")

// dotLock is a lock file made with link(2), which is atomic on NFS too
// where O_EXCL may not be: write a unique file, link it to the lock name,
// and trust the link count of the unique file rather than link's return
// value (an NFS reply can be lost after the link was made).
type dotLock struct {
	path, tmp string
	ino       uint64
}

func (s *Store) lockFile(path string) (*dotLock, error) {
	host := s.Hostname
	tmp := fmt.Sprintf("%s.%s.%d.%x", path, escapeHost(host), s.pid, rand.Uint64())
	content := fmt.Sprintf("%d %s %d\n", s.pid, host, time.Now().Unix())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("maildir: lock %s: %w", path, err)
	}
	_, err = f.WriteString(content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("maildir: lock %s: write %s: %w", path, tmp, err)
	}
	timeout := s.LockTimeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		lerr := os.Link(tmp, path)
		var st unix.Stat_t
		if err := statRetry(tmp, &st); err != nil {
			// The check failed: a lock our link may have made is never
			// left behind for everyone to wait out.
			if lerr == nil {
				os.Remove(path)
			}
			os.Remove(tmp)
			return nil, fmt.Errorf("maildir: lock %s: stat %s: %w", path, tmp, err)
		}
		if st.Nlink == 2 {
			return &dotLock{path: path, tmp: tmp, ino: st.Ino}, nil
		}
		if lerr != nil && !errors.Is(lerr, fs.ErrExist) {
			os.Remove(tmp)
			return nil, fmt.Errorf("maildir: lock %s: %w", path, lerr)
		}
		s.breakStaleLock(path)
		if time.Now().After(deadline) {
			os.Remove(tmp)
			return nil, fmt.Errorf("maildir: lock %s: %w after %v", path, ErrLockTimeout, timeout)
		}
		time.Sleep(wait/2 + rand.N(wait))
		if wait < 50*time.Millisecond {
			wait *= 2
		}
	}
}

// breakStaleLock removes the lock file when it is older than StaleLockAge
// (a holder refreshes it by touch during long work) or when it names a
// process of this host that no longer exists. The lock is checked again
// just before the unlink, so only a lock taken in that instant can be lost;
// link(2) locks elsewhere (Dovecot's dotlocks) accept the same window.
func (s *Store) breakStaleLock(path string) {
	var st1 unix.Stat_t
	if unix.Lstat(path, &st1) != nil {
		return
	}
	age := s.StaleLockAge
	if age <= 0 {
		age = DefaultStaleLockAge
	}
	stale := time.Since(time.Unix(st1.Mtim.Unix())) > age
	if !stale {
		b, err := os.ReadFile(path)
		if err != nil {
			return
		}
		fields := strings.Fields(string(b))
		if len(fields) >= 2 && fields[1] == s.Hostname {
			if pid, err := strconv.Atoi(fields[0]); err == nil && pid > 0 && !processAlive(pid) {
				stale = true
			}
		}
	}
	if !stale {
		return
	}
	var st2 unix.Stat_t
	if unix.Lstat(path, &st2) != nil || st2.Ino != st1.Ino || st2.Mtim != st1.Mtim {
		return
	}
	os.Remove(path)
}

func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// touch refreshes the lock's mtime so that others do not take it for stale
// during long work.
func (l *dotLock) touch() {
	now := time.Now()
	os.Chtimes(l.path, now, now)
}

// unlock removes the lock file if it is still ours, and the unique file.
func (l *dotLock) unlock() {
	var st unix.Stat_t
	err := unix.Lstat(l.path, &st)
	// A shared file system can fail a look at a name just made or
	// replaced for an instant (GlusterFS answers EBADFD, NFS ESTALE):
	// look again rather than leave the lock for everyone to wait out.
	for try := 0; err != nil && err != unix.ENOENT && try < 5; try++ {
		time.Sleep(time.Duration(try+1) * 2 * time.Millisecond)
		err = unix.Lstat(l.path, &st)
	}
	if err == nil && st.Ino == l.ino {
		os.Remove(l.path)
	}
	os.Remove(l.tmp)
}

// statRetry is stat(2), looked at again a few times when a shared file
// system fails it for an instant (ESTALE, EBADFD) rather than for good.
func statRetry(p string, st *unix.Stat_t) error {
	err := unix.Stat(p, st)
	for try := 0; (err == unix.ESTALE || err == unix.EBADFD) && try < 5; try++ {
		time.Sleep(time.Duration(try+1) * 2 * time.Millisecond)
		err = unix.Stat(p, st)
	}
	return err
}

// retryStale reads a small file that another host may replace by rename
// again when the read fails with ESTALE: opened anew by its name, it is
// the new file.
func retryStale[T any](read func() (T, error)) (T, error) {
	v, err := read()
	for try := 0; errors.Is(err, unix.ESTALE) && try < 3; try++ {
		v, err = read()
	}
	return v, err
}
