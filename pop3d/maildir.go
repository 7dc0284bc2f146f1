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
	list   []maildir.Listed // as of login: where each file was, its flags
	fresh  int              // how many of them are in new/
	unseen int              // how many are in new/ or lack the Seen flag
	msgs   []Message
}

// OpenMaildir takes the POP3 session lock of the Maildir at path (making
// the Maildir when it is missing, as a new account's first login may find
// it) and lists the maildrop in arrival order, as the file names tell it,
// through the folder's listing cache (maildir.Folder.List). New messages
// move to cur/ at QUIT (see Commit).
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
	// Nothing is renamed at login: a message in new/ is renamed once,
	// at QUIT, straight to its place in cur/ with the Seen flag when it
	// was retrieved. Moving it at login and flagging it at QUIT made two
	// renames of every new message (100,000 took 2.1 s at login and
	// 2.3 s at QUIT); and a login that changes nothing leaves the
	// listing cache good for the next one.
	list, err := inbox.List(true)
	if err != nil {
		return err
	}
	// Only the unique name (a part of the file name, no copy) and the
	// size of each message are kept for the session.
	msgs := make([]Message, len(list))
	for i, l := range list {
		u := l.Unique()
		msgs[i] = Message{UID: u, Size: l.RFC822Size}
		if l.New {
			b.fresh++
		}
		if l.New || !strings.Contains(l.Name[len(u):], "S") {
			b.unseen++
		}
	}
	b.list, b.msgs = list, msgs
	return nil
}

// Messages implements Mailbox. The slice is the box's own; the session
// only reads it.
func (b *MaildirBox) Messages() []Message { return b.msgs }

// Open implements Mailbox. The file is opened where the listing saw it;
// only when it has moved since (another program renamed or removed it)
// is it looked for again.
func (b *MaildirBox) Open(i int) (io.ReadCloser, error) {
	l := b.list[i]
	p := b.inbox.Path() + "/" + l.Dir() + "/" + l.Name
	// open(2) itself and read(2) on the descriptor: an os.File costs
	// four fcntl(2) and an epoll_ctl(2) more a message, to find out that
	// a regular file cannot be polled.
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		return &fileReader{fd: fd, path: p}, nil
	}
	if !errors.Is(err, unix.ENOENT) {
		return nil, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	f, err := b.inbox.OpenFile(l.Unique())
	if err != nil {
		return nil, err
	}
	return f, nil
}

// fileReader reads a message file by its descriptor.
type fileReader struct {
	fd   int
	path string
}

func (r *fileReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := unix.Read(r.fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, &fs.PathError{Op: "read", Path: r.path, Err: err}
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (r *fileReader) Close() error {
	if r.fd < 0 {
		return nil
	}
	err := unix.Close(r.fd)
	r.fd = -1
	return err
}

// Commit implements Mailbox: it expunges the deleted messages, adds the
// Seen flag to the retrieved ones and moves the rest of those that were
// in new/ to cur/ (RFC 1939 §6: all in the UPDATE state, so a dropped
// connection changes nothing). Each message is renamed once at most. A
// message already gone counts as deleted.
func (b *MaildirBox) Commit(deleted, retrieved []int) error {
	var touched []bool // only when there is new mail to move
	if b.fresh > 0 {
		touched = make([]bool, len(b.list))
	}
	gone := make([]maildir.Listed, 0, len(deleted))
	var flag, move []maildir.Listed
	for _, i := range deleted {
		if touched != nil {
			touched[i] = true
		}
		gone = append(gone, b.list[i])
	}
	// Only messages that were unseen at login need the flag: a session
	// that downloads a mailbox it has seen before (leave-on-server
	// clients) then changes nothing, whatever its size.
	// Counted at login: when every message was seen already, the
	// 100,000 retrieved ones are not looked at again.
	for j := 0; j < len(retrieved) && b.unseen > 0; j++ {
		i := retrieved[j]
		if touched != nil {
			touched[i] = true
		}
		if l := b.list[i]; l.New || !strings.Contains(l.Flags(), "S") {
			if flag == nil {
				flag = make([]maildir.Listed, 0, min(b.unseen, len(retrieved)))
			}
			flag = append(flag, l)
		}
	}
	// qmail-pop3d and Dovecot move new mail to cur/ when a POP3 session
	// sees it: it is no longer "recent" for an IMAP client afterwards.
	for i := 0; i < len(b.list) && b.fresh > 0; i++ {
		if l := b.list[i]; l.New && !touched[i] {
			move = append(move, l)
		}
	}
	return errors.Join(
		b.inbox.RemoveListed(gone),
		b.inbox.AddFlagsListed(flag, "S"),
		b.inbox.AddFlagsListed(move, ""))
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
