package pop3d

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tern-mail/tern/maildir"
	"golang.org/x/sys/unix"
)

// LockName is the file in a Maildir's root whose lock marks a POP3 session.
const LockName = "tern-pop3.lock"

// MaildirBox is a Maildir's INBOX as a POP3 maildrop.
type MaildirBox struct {
	inbox  *maildir.Folder
	lock   *os.File
	msgs   []Message
	unseen []bool // by index in msgs: no Seen flag at login
}

// OpenMaildir takes the POP3 session lock of the Maildir at path (making
// the Maildir when it is missing, as a new account's first login may find
// it), moves new messages to cur/ keeping their unique names, and lists
// the maildrop in arrival order, as the file names tell it.
//
// The lock is an open file description lock (F_OFD_SETLK) on LockName:
// the kernel drops it when the process dies, so a crashed session never
// locks a user out, and the NFS client turns it into a server-side lock,
// so two hosts over one Maildir exclude each other too. A held lock gives
// ErrInUse (RFC 2449 §8.1.2, [IN-USE]).
func OpenMaildir(path string) (*MaildirBox, error) {
	store, err := maildir.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		store, err = maildir.Create(path, 0o700)
	}
	if err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(path, LockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open POP3 lock: %w", err)
	}
	flock := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if err := unix.FcntlFlock(lock.Fd(), unix.F_OFD_SETLK, &flock); err != nil {
		lock.Close()
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			return nil, ErrInUse
		}
		return nil, fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	b := &MaildirBox{lock: lock}
	// Files a killed delivery left in tmp/ are removed after 36 hours
	// (the maildir convention); a login is when someone looks. A failure
	// here costs nothing but disk, so it does not stop the login.
	_, _ = store.CleanTmp(time.Now())
	if err := b.load(store); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func (b *MaildirBox) load(store *maildir.Store) error {
	inbox, err := store.Folder("INBOX")
	if err != nil {
		return err
	}
	b.inbox = inbox
	// Only the unique name and the size of each message are kept: the
	// whole maildir.Message was 200 bytes more a message, 20 MB at
	// 100,000.
	var msgs []Message
	var fresh []string
	var unseen []bool
	err = inbox.EachOnDisk(func(m maildir.Message) error {
		msgs = append(msgs, Message{UID: m.Unique, Size: m.RFC822Size})
		if m.Dir == "new" {
			fresh = append(fresh, m.Unique)
		}
		unseen = append(unseen, !strings.Contains(m.Flags, "S"))
		return nil
	})
	if err != nil {
		return err
	}
	// qmail-pop3d and Dovecot move new mail to cur/ when a POP3 session
	// sees it: it is no longer "recent" for an IMAP client afterwards.
	// All at once, so the folder's lock is taken once per few thousand
	// messages rather than once each; a message removed meanwhile is
	// skipped (RETR will say so).
	if err := inbox.MoveToCurAll(fresh); err != nil {
		return err
	}
	b.msgs, b.unseen = msgs, unseen
	return nil
}

// Messages implements Mailbox. The slice is the box's own; the session
// only reads it.
func (b *MaildirBox) Messages() []Message { return b.msgs }

// Open implements Mailbox.
func (b *MaildirBox) Open(uid string) (io.ReadCloser, error) {
	f, err := b.inbox.OpenFile(uid)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// Commit implements Mailbox: expunges the deleted messages and adds the
// Seen flag to the retrieved ones. A message already gone counts as
// deleted.
func (b *MaildirBox) Commit(deleted, retrieved []int) error {
	var errs []error
	for _, i := range deleted {
		if err := b.inbox.Remove(b.msgs[i].UID); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	// Only messages that were unseen at login need the flag: a session
	// that downloads a mailbox it has seen before (leave-on-server
	// clients) then changes nothing, whatever its size.
	var flag []string
	for _, i := range retrieved {
		if b.unseen[i] {
			flag = append(flag, b.msgs[i].UID)
		}
	}
	if err := b.inbox.AddFlagsAll(flag, "S"); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Close implements Mailbox: it releases the session lock.
func (b *MaildirBox) Close() error {
	if b.lock == nil {
		return nil
	}
	err := b.lock.Close()
	b.lock = nil
	return err
}
