package maildir

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Maildir++ rules for recalculating maildirsize.
const (
	maildirsizeMaxBytes = 5120
	maildirsizeMaxAge   = 15 * time.Minute
)

// Quota is what a maildirsize file says: the limits of its first line
// ("<bytes>S,<count>C", 0 meaning no limit) and the usage that the sum of
// the other lines gives.
type Quota struct {
	MaxBytes, MaxMessages int64
	Bytes, Messages       int64
}

// ErrBadMaildirsize is wrapped by ParseMaildirsize errors.
var ErrBadMaildirsize = errors.New("bad maildirsize")

// ParseMaildirsize reads a Maildir++ maildirsize file. A bad quota line is
// an error. A bad usage line (a delivery cut short while appending) sets
// Damaged and is otherwise skipped: the file must then be recalculated.
func ParseMaildirsize(r io.Reader) (q Quota, damaged bool, err error) {
	sc := bufio.NewScanner(io.LimitReader(r, 1<<20))
	sc.Buffer(make([]byte, 0, 256), 4096)
	if !sc.Scan() {
		if sc.Err() != nil {
			return q, false, fmt.Errorf("%w: %v", ErrBadMaildirsize, sc.Err())
		}
		return q, false, fmt.Errorf("%w: empty", ErrBadMaildirsize)
	}
	if line := strings.TrimSpace(sc.Text()); line != "" {
		for _, part := range strings.Split(line, ",") {
			part = strings.TrimSpace(part)
			if len(part) < 2 {
				return q, false, fmt.Errorf("%w: quota %q", ErrBadMaildirsize, line)
			}
			n, err := strconv.ParseInt(part[:len(part)-1], 10, 64)
			if err != nil || n < 0 {
				return q, false, fmt.Errorf("%w: quota %q", ErrBadMaildirsize, line)
			}
			switch part[len(part)-1] {
			case 'S':
				q.MaxBytes = n
			case 'C':
				q.MaxMessages = n
			default:
				return q, false, fmt.Errorf("%w: quota %q", ErrBadMaildirsize, line)
			}
		}
	}
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 {
			damaged = true
			continue
		}
		b, err1 := strconv.ParseInt(f[0], 10, 64)
		c, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil || b > 1<<50 || b < -1<<50 || c > 1<<40 || c < -1<<40 {
			damaged = true
			continue
		}
		q.Bytes += b
		q.Messages += c
	}
	if err := sc.Err(); err != nil {
		damaged = true
	}
	return q, damaged, nil
}

// QuotaLine returns the first line of a maildirsize file for the limits.
func (q Quota) QuotaLine() string {
	var parts []string
	if q.MaxBytes > 0 {
		parts = append(parts, strconv.FormatInt(q.MaxBytes, 10)+"S")
	}
	if q.MaxMessages > 0 {
		parts = append(parts, strconv.FormatInt(q.MaxMessages, 10)+"C")
	}
	return strings.Join(parts, ",")
}

func (q Quota) over(size, count int64) bool {
	return (q.MaxBytes > 0 && q.Bytes+size > q.MaxBytes) ||
		(q.MaxMessages > 0 && q.Messages+count > q.MaxMessages)
}

func (s *Store) maildirsizePath() string { return filepath.Join(s.Root, "maildirsize") }

// Quota reads the Maildir's maildirsize file. The error wraps
// fs.ErrNotExist when there is none (no quota).
func (s *Store) Quota() (Quota, error) {
	q, _, _, err := s.readQuota()
	return q, err
}

func (s *Store) readQuota() (Quota, bool, os.FileInfo, error) {
	p := s.maildirsizePath()
	// open(2) and os.NewFile rather than os.Open: a delivery opens no
	// other file through the poller, and would set it up for this one.
	fd, err := openRetry(p, unix.O_RDONLY, 0)
	if err != nil {
		return Quota{}, false, nil, fmt.Errorf("maildir: read quota: %w", err)
	}
	file := os.NewFile(uintptr(fd), p)
	defer file.Close()
	st, err := file.Stat()
	if err != nil {
		return Quota{}, false, nil, fmt.Errorf("maildir: read quota %s: %w", p, err)
	}
	q, damaged, err := ParseMaildirsize(file)
	if err != nil {
		return q, damaged, st, fmt.Errorf("maildir: read quota %s: %w", p, err)
	}
	return q, damaged, st, nil
}

// SetQuota writes a new maildirsize with these limits and the usage counted
// afresh; with both 0 it removes the file (no quota).
func (s *Store) SetQuota(maxBytes, maxMessages int64) error {
	if maxBytes <= 0 && maxMessages <= 0 {
		if err := os.Remove(s.maildirsizePath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("maildir: remove quota: %w", err)
		}
		return nil
	}
	return s.writeQuota(Quota{MaxBytes: maxBytes, MaxMessages: maxMessages})
}

// RecalculateQuota counts the messages of every folder and writes a new
// maildirsize with the same limits, atomically. Without a maildirsize it
// does nothing.
func (s *Store) RecalculateQuota() error {
	q, _, _, err := s.readQuota()
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.writeQuota(q)
}

func (s *Store) writeQuota(limits Quota) error {
	bytesUsed, count, err := s.usage()
	if err != nil {
		return err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\n%d %d\n", limits.QuotaLine(), bytesUsed, count)
	// The Maildir++ spec writes the new file in tmp/ and renames it.
	tmp := filepath.Join(s.Root, "tmp", fmt.Sprintf("%d.M%dP%dQ%d.%s.maildirsize",
		time.Now().Unix(), time.Now().Nanosecond()/1000, s.pid, s.seq.Add(1), escapeHost(s.Hostname)))
	file, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("maildir: write quota: %w", err)
	}
	_, err = file.Write(b.Bytes())
	if err == nil {
		err = file.Sync()
	}
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.maildirsizePath())
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("maildir: write quota: %w", err)
	}
	return syncDir(s.Root)
}

// usage adds up the sizes (S=, or the file's) and count of the messages in
// new/ and cur/ of every folder.
func (s *Store) usage() (size, count int64, err error) {
	names, err := s.Folders()
	if err != nil {
		return 0, 0, err
	}
	for _, name := range names {
		p, err := s.folderPath(name)
		if err != nil {
			continue
		}
		for _, dir := range []string{"new", "cur"} {
			d := filepath.Join(p, dir)
			ents, err := readDirNames(d)
			if err != nil {
				return 0, 0, err
			}
			for _, n := range ents {
				if strings.HasPrefix(n, ".") {
					continue
				}
				u, _ := splitName(n)
				sz, _ := nameSizes(u)
				if sz < 0 {
					st, err := os.Stat(filepath.Join(d, n))
					if err != nil {
						continue // gone meanwhile
					}
					sz = st.Size()
				}
				size += sz
				count++
			}
		}
	}
	return size, count, nil
}

// checkQuota tells whether a message of size bytes fits, and whether
// there is a maildirsize at all (no file, no quota: nothing to append to
// after the delivery). Following the Maildir++ spec the file is
// recalculated first when it has grown over 5120 bytes or is damaged, or
// when it is older than 15 minutes and the message would not fit by its
// sums.
func (s *Store) checkQuota(size int64) (exists bool, err error) {
	q, damaged, st, err := s.readQuota()
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	if damaged || st.Size() > maildirsizeMaxBytes ||
		(q.over(size, 1) && s.now().Sub(st.ModTime()) > maildirsizeMaxAge) {
		if err := s.writeQuota(q); err != nil {
			return true, err
		}
		if q, _, _, err = s.readQuota(); err != nil {
			return true, err
		}
	}
	if q.over(size, 1) {
		return true, fmt.Errorf("maildir: deliver %d bytes to %s (%d of %d bytes, %d of %d messages used): %w",
			size, s.Root, q.Bytes, q.MaxBytes, q.Messages, q.MaxMessages, ErrQuotaExceeded)
	}
	return true, nil
}

// addQuotaUsage appends a usage line to maildirsize if there is one. The
// append is one small O_APPEND write, which Maildir++ relies on being
// atomic. A failure is not an error of the delivery: the next
// recalculation corrects the sums.
func (s *Store) addQuotaUsage(size, count int64) {
	fd, err := openRetry(s.maildirsizePath(), unix.O_WRONLY|unix.O_APPEND, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	fdWriter{fd, s.maildirsizePath()}.Write([]byte(strconv.FormatInt(size, 10) + " " + strconv.FormatInt(count, 10) + "\n"))
}
