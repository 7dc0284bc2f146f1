package queue

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tern-mail/tern/internal/sysexit"
	"golang.org/x/sys/unix"
)

// ErrNoReserve is matched (errors.Is) by Reserve's refusal.
var ErrNoReserve = errors.New("queue file system below its reserve")

// Reserve refuses new mail while the queue's file system has less free
// space than 1.5 times maxSize, the message size limit: Postfix's rule
// (queue_minfree at least 1.5 x message_size_limit). What is left is for
// the queue runner, which must be able to rewrite envelopes and write
// bounces to deliver, and so remove, what is queued; a full disk would
// stop it. maxSize 0 (no limit) checks nothing. The refusal is temporary
// (75): the sender keeps the message until space is freed.
func (q *Queue) Reserve(maxSize int64) error {
	if maxSize <= 0 {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(q.Dir, &st); err != nil {
		return sysexit.Wrap(sysexit.TempFail, fmt.Errorf("check free space of queue %s: %w", q.Dir, err))
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	need := maxSize + maxSize/2
	if free < need {
		return sysexit.Wrap(sysexit.TempFail, fmt.Errorf("%w: %s has %d bytes free, and new mail needs %d (1.5 x the message size limit of %d) so that queued mail can still be delivered; free space or grow the file system",
			ErrNoReserve, q.Dir, free, need, maxSize))
	}
	return nil
}

// BallastName is the file of space set aside in the queue directory for
// envelope rewrites on a full file system (see Save).
const BallastName = ".ballast"

// ballastSize is enough for many envelope rewrites: an envelope is a few
// hundred bytes a recipient.
const ballastSize = 1 << 20

// layBallast makes the ballast when it is missing and the file system has
// room for it beyond the space kept free; failures are left for the next
// Save.
func (q *Queue) layBallast() {
	p := filepath.Join(q.Dir, BallastName)
	if _, err := os.Stat(p); err == nil {
		return
	}
	var st unix.Statfs_t
	if unix.Statfs(q.Dir, &st) != nil || int64(st.Bavail)*int64(st.Bsize) < 2*ballastSize {
		return
	}
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return
	}
	// Blocks really allocated (Fallocate), not a sparse file that frees
	// nothing when removed.
	err = unix.Fallocate(int(f.Fd()), 0, 0, ballastSize)
	if err != nil {
		_, err = f.Write(make([]byte, ballastSize))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
	}
}

// dropBallast frees the ballast's space, and reports whether there was
// any to free.
func (q *Queue) dropBallast() bool {
	return os.Remove(filepath.Join(q.Dir, BallastName)) == nil
}
