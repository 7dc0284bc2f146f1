// Package fsync makes a change to a directory durable: a name created,
// linked, renamed or removed in it is on disk only once the directory
// itself has been fsynced (fsync(2): "calling fsync() on the file does not
// ensure that the entry in the directory containing the file has also
// reached disk"). The queue, the Maildir store and the control directory's
// editors all need it after every such change, and share this one way.
//
// It leans on nothing but golang.org/x/sys/unix and imports nothing of
// tern's, so that maildir/ may use it and stay a library of its own.
package fsync

import (
	"errors"
	"io/fs"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Dir fsyncs the directory dir. It opens dir with open(2), not os.Open:
// the first os.Open of a process sets up Go's poller (an epoll instance,
// an eventfd and several fcntl) for a descriptor that can never use it,
// and a delivery agent started once per message would pay for that every
// time (tests/bench/deliver.sh).
//
// fsync(2) needs a descriptor opened for reading, and a directory may be
// writable but not readable (the queue's incoming/, where users submit):
// then the file system holding it is flushed with syncfs(2) instead,
// through dir's parent, which covers the entry too.
func Dir(dir string) error {
	fd, err := open(dir)
	if errors.Is(err, unix.EACCES) {
		parent, perr := open(filepath.Dir(dir))
		if perr != nil {
			return &fs.PathError{Op: "open directory", Path: dir, Err: err}
		}
		defer unix.Close(parent)
		if err := retry(func() error { return unix.Syncfs(parent) }); err != nil {
			return &fs.PathError{Op: "syncfs", Path: filepath.Dir(dir), Err: err}
		}
		return nil
	}
	if err != nil {
		return &fs.PathError{Op: "open directory", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	if err := retry(func() error { return unix.Fsync(fd) }); err != nil {
		return &fs.PathError{Op: "fsync directory", Path: dir, Err: err}
	}
	return nil
}

func open(dir string) (int, error) {
	var fd int
	err := retry(func() error {
		var err error
		fd, err = unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		return err
	})
	return fd, err
}

// retry repeats a system call interrupted by a signal (EINTR): Go's
// runtime sends SIGURG to preempt goroutines, and open(2) and fsync(2) on
// some file systems (NFS, FUSE) can be interrupted by it.
func retry(call func() error) error {
	for {
		if err := call(); err != unix.EINTR {
			return err
		}
	}
}
