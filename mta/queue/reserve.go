package queue

import (
	"errors"
	"fmt"

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
