package maildir

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tern-mail/tern/internal/fsync"
	"golang.org/x/sys/unix"
)

// Delivery is most of what a delivery agent started once per message does
// (tern-deliver, tests/bench/deliver.sh), so its system calls are counted:
// the files here are opened with open(2) itself, not os.OpenFile, because
// the first os.OpenFile of a process sets up Go's poller (epoll_create1,
// eventfd2, two epoll_ctl and four fcntl) for files that can never use it.
// What is left is what qmail-local does: open tmp/, write, fsync, link,
// unlink, open new/, fsync, and a look for maildirsize.

// ErrMessageTooLarge is returned by Deliver when a message is over
// DeliverOptions.MaxSize.
var ErrMessageTooLarge = errors.New("message too large")

// ErrQuotaExceeded is returned by Deliver when the message would take the
// Maildir over the quota in its maildirsize file.
var ErrQuotaExceeded = errors.New("mailbox over quota")

// DeliverOptions changes what Deliver does.
type DeliverOptions struct {
	// Flags, in IMAP's terms, put the message in cur/ with these flags;
	// without flags it goes to new/ unless Cur is set.
	Flags []string
	// Cur puts the message in cur/ even without flags.
	Cur bool
	// Quota enforces the quota of the Maildir's maildirsize file.
	Quota bool
	// MaxSize refuses messages larger than this on disk (0: no limit).
	MaxSize int64
	// Time is the delivery time in the name (default: Store.Now).
	Time time.Time
	// Host is the host name in the name (default: Store.Hostname).
	Host string
	// ModTime, when set, is the file's mtime: the internal date that
	// IMAP APPEND may give.
	ModTime time.Time

	letters string // Flags as letters, when the caller has them already
	// unsynced leaves the fsync of the directory to the caller
	// (DeliverUnsynced).
	unsynced bool
}

// Inbox returns the INBOX, the Maildir's root, without looking at the
// disk again as Folder("INBOX") does: Open and Create have just checked
// it, and a delivery agent started per message counts its stat(2)s.
func (s *Store) Inbox() *Folder { return s.newFolder("INBOX", s.Root) }

// Deliver stores a message durably and returns it. The message is written
// to tmp/ (O_EXCL, mode 0600) with its CRLF line ends turned into LF (a
// lone CR stays), fsynced, linked into new/ (or cur/) and its tmp/ name
// removed, and new/ is fsynced, as qmail does; where link(2) is not
// supported it is renamed instead. Nothing partial is ever visible in new/
// or cur/, and on any error the tmp/ file is removed. The name is
// "<sec>.M<usec>P<pid>Q<n>.<host>,S=<size>,W=<rfc822 size>". The returned
// Message has no UID yet: Sync gives it one.
//
// The file gets fsync, not fdatasync: for a file just created the two
// write the same (its size and blocks are metadata fdatasync must write
// too), and measured on ext4 they cost the same; fsync also covers
// filesystems where fdatasync is weaker.
func (f *Folder) Deliver(r io.Reader, opt DeliverOptions) (Message, error) {
	s := f.store
	flags := opt.letters
	var err error
	if len(opt.Flags) > 0 {
		if flags, err = f.lettersOf(opt.Flags); err != nil {
			return Message{}, err
		}
	}
	t := opt.Time
	if t.IsZero() {
		t = s.now()
	}
	host := opt.Host
	if host == "" {
		host = s.Hostname
	}
	host = escapeHost(host)
	baseName := func() string {
		return fmt.Sprintf("%d.M%dP%dQ%d.%s", t.Unix(), t.Nanosecond()/1000, s.pid, s.seq.Add(1), host)
	}
	fd := -1
	var tmpPath, base string
	for try := 0; ; try++ {
		base = baseName()
		tmpPath = filepath.Join(f.path, "tmp", base)
		fd, err = openRetry(tmpPath, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o600)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) || try >= 10 {
			return Message{}, fmt.Errorf("maildir: deliver: create %w", err)
		}
	}
	tmpLive := true
	defer func() {
		if fd >= 0 {
			unix.Close(fd)
		}
		if tmpLive {
			os.Remove(tmpPath)
		}
	}()
	size, lfs, err := copyLF(fdWriter{fd, tmpPath}, r, opt.MaxSize)
	if err != nil {
		return Message{}, fmt.Errorf("maildir: deliver: write %s: %w", tmpPath, err)
	}
	// The quota is checked before the fsync, which a refused message
	// would waste (a full mailbox refuses every retry of every sender).
	quotaFile := false
	if opt.Quota {
		if quotaFile, err = s.checkQuota(size); err != nil {
			return Message{}, err
		}
	}
	if !opt.ModTime.IsZero() {
		ts := unix.NsecToTimespec(opt.ModTime.UnixNano())
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, tmpPath, []unix.Timespec{ts, ts}, 0); err != nil {
			return Message{}, fmt.Errorf("maildir: deliver: set the date of %s: %w", tmpPath, err)
		}
	}
	if err := ignoringEINTR(func() error { return unix.Fsync(fd) }); err != nil {
		return Message{}, fmt.Errorf("maildir: deliver: fsync %s: %w", tmpPath, err)
	}
	err = unix.Close(fd)
	fd = -1
	if err != nil {
		return Message{}, fmt.Errorf("maildir: deliver: close %s: %w", tmpPath, err)
	}
	dir := "new"
	if flags != "" || opt.Cur {
		dir = "cur"
	}
	var rel string
	for try := 0; ; try++ {
		unique := fmt.Sprintf("%s,S=%d,W=%d", base, size, size+lfs)
		name := unique
		if dir == "cur" {
			name += ":2," + flags
		}
		rel = dir + "/" + name
		err = linkOrRename(tmpPath, filepath.Join(f.path, rel))
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) || try >= 10 {
			return Message{}, fmt.Errorf("maildir: deliver: %w", err)
		}
		base = baseName() // the same name from another Store of this process
	}
	dst := filepath.Join(f.path, rel)
	if err := os.Remove(tmpPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		os.Remove(dst)
		return Message{}, fmt.Errorf("maildir: deliver: remove %w", err)
	}
	tmpLive = false
	if opt.unsynced {
		// The caller syncs the directory, for many messages at once.
	} else if err := syncDir(filepath.Join(f.path, dir)); err != nil {
		// Not durable: take it back, so that the caller's retry does not
		// make a second copy.
		os.Remove(dst)
		return Message{}, fmt.Errorf("maildir: deliver: %w", err)
	}
	// Without a maildirsize when the quota was checked there is no line
	// to add, and no second open(2) to find that out.
	if quotaFile {
		s.addQuotaUsage(size, 1)
	}
	unique, _ := splitName(filepath.Base(rel))
	f.setName(unique, rel)
	return f.message(rel, 0)
}

// openRetry is open(2) with O_CLOEXEC, retried on EINTR as os.OpenFile
// does, its error a *fs.PathError as os.OpenFile's is.
func openRetry(path string, mode int, perm uint32) (int, error) {
	for {
		fd, err := unix.Open(path, mode|unix.O_CLOEXEC, perm)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		return fd, nil
	}
}

func ignoringEINTR(fn func() error) error {
	for {
		if err := fn(); err != unix.EINTR {
			return err
		}
	}
}

// fdWriter writes to a file descriptor, all of p or an error.
type fdWriter struct {
	fd   int
	path string
}

func (w fdWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k, err := unix.Write(w.fd, p[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, &fs.PathError{Op: "write", Path: w.path, Err: err}
		}
		if k == 0 {
			return n, &fs.PathError{Op: "write", Path: w.path, Err: io.ErrShortWrite}
		}
		n += k
	}
	return n, nil
}

// syncDir makes a change to dir durable (see internal/fsync, which opens
// it without the poller, as the top of this file asks).
func syncDir(dir string) error {
	if err := fsync.Dir(dir); err != nil {
		return fmt.Errorf("maildir: %w", err)
	}
	return nil
}

// linkOrRename links tmp to dst, falling back to rename on filesystems
// without hard links. It never replaces an existing dst (rename would).
// (link and unlink cost no more than rename here: on ext4 both land in
// the one journal commit that the fsync of new/ forces.)
func linkOrRename(tmp, dst string) error {
	err := os.Link(tmp, dst)
	if err == nil || errors.Is(err, fs.ErrExist) {
		return err
	}
	if !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.ENOTSUP) && !errors.Is(err, syscall.ENOSYS) && !errors.Is(err, syscall.EMLINK) {
		return err
	}
	if _, serr := os.Lstat(dst); serr == nil {
		return &fs.PathError{Op: "rename", Path: dst, Err: fs.ErrExist}
	}
	return os.Rename(tmp, dst)
}

// copyLF copies r to w turning CRLF into LF, and returns the bytes written
// and how many of them are LF. It reads 32 KiB at a time and writes
// 64 KiB or more at a time, so a small message is one write(2) although
// it comes from several readers (the added header lines, the header, the
// body).
func copyLF(w io.Writer, r io.Reader, maxSize int64) (size, lfs int64, err error) {
	const readSize, writeSize = 32 << 10, 64 << 10
	buf := make([]byte, readSize)
	// A chunk never grows when CRLF becomes LF; the +1 is a CR held
	// back from the chunk before.
	out := make([]byte, 0, writeSize+readSize+1)
	pendingCR := false
	for {
		n, rerr := r.Read(buf)
		start := len(out)
		in := buf[:n]
		if pendingCR && len(in) > 0 {
			if in[0] != '\n' {
				out = append(out, '\r')
			}
			pendingCR = false
		}
		for len(in) > 0 {
			i := bytes.IndexByte(in, '\r')
			if i < 0 {
				out = append(out, in...)
				break
			}
			out = append(out, in[:i]...)
			in = in[i+1:]
			if len(in) == 0 {
				pendingCR = true
				break
			}
			if in[0] != '\n' {
				out = append(out, '\r')
			}
		}
		if rerr == io.EOF && pendingCR {
			out = append(out, '\r')
			pendingCR = false
		}
		size += int64(len(out) - start)
		lfs += int64(bytes.Count(out[start:], []byte{'\n'}))
		if maxSize > 0 && size > maxSize {
			return size, lfs, ErrMessageTooLarge
		}
		if rerr != nil && rerr != io.EOF {
			return size, lfs, fmt.Errorf("read message: %w", rerr)
		}
		if len(out) >= writeSize || (rerr == io.EOF && len(out) > 0) {
			if _, err := w.Write(out); err != nil {
				return size, lfs, err
			}
			out = out[:0]
		}
		if rerr == io.EOF {
			return size, lfs, nil
		}
	}
}
