package pop3d

import (
	"errors"
	"io"

	"github.com/tern-mail/tern/maildir"
)

// LockName is the file in a Maildir's root whose lock marks a POP3 session.
const LockName = "tern-pop3.lock"

// MaildirBox is a Maildir's INBOX as a POP3 maildrop: a view of the
// folder's index (maildir.View), opened without taking new mail out of
// new/, in UID order.
type MaildirBox struct {
	view *maildir.View
	lock io.Closer
	msgs []Message
	// unseen marks the messages a RETR must flag \Seen (or move out of
	// new/) at QUIT, as the view said at login: a POP3 view does not
	// change during the session, so QUIT asks a bit a message, not the
	// view (a leave-on-server client's QUIT at 100,000 messages was most
	// of its time in those questions).
	unseen []bool
	isNew  bool // some message is in new/
}

// OpenMaildir takes the POP3 session lock of the store
// (maildir.Store.LockSession on LockName; ErrInUse when another session
// holds it, RFC 2449 §8.1.2's [IN-USE]) and lists the maildrop from the
// INBOX's index, which a session that changed the folder left current: a
// login reads one file and no directory. See internal/account for
// opening the store. New messages move to cur/ at QUIT (see Commit).
func OpenMaildir(store *maildir.Store) (*MaildirBox, error) {
	lock, err := store.LockSession(LockName)
	if errors.Is(err, maildir.ErrSessionLocked) {
		return nil, ErrInUse
	}
	if err != nil {
		return nil, err
	}
	b := &MaildirBox{lock: lock}
	if b.view, err = store.Inbox().OpenView(maildir.ViewOptions{KeepNew: true}); err != nil {
		b.Close()
		return nil, err
	}
	// Only the unique name (a part of the file name, no copy) and the
	// size of each message are kept for the session.
	b.msgs = make([]Message, b.view.Len())
	b.unseen = make([]bool, len(b.msgs))
	for i := range b.msgs {
		seq := uint32(i + 1)
		b.msgs[i] = Message{UID: b.view.Unique(seq), Size: b.view.Size(seq)}
		isNew := b.view.IsNew(seq)
		b.unseen[i] = isNew || !b.view.HasFlag(seq, maildir.FlagSeen)
		b.isNew = b.isNew || isNew
	}
	return b, nil
}

// Messages implements Mailbox. The slice is the box's own; the session
// only reads it.
func (b *MaildirBox) Messages() []Message { return b.msgs }

// Open implements Mailbox.
func (b *MaildirBox) Open(i int) (io.ReadCloser, error) {
	return b.view.Open(b.view.UID(uint32(i + 1)))
}

// Commit implements Mailbox: it expunges the deleted messages, adds the
// Seen flag to the retrieved ones and moves the rest of those that were
// in new/ to cur/ (RFC 1939 §6: all in the UPDATE state, so a dropped
// connection changes nothing). Each message is renamed once at most: a
// retrieved message in new/ goes straight to cur/ with its flag. A
// message already gone counts as deleted. The index is told of every
// change as it is made, so the next login reads it without reading the
// directories.
func (b *MaildirBox) Commit(deleted, retrieved []int) error {
	uids := func(idx []int) []uint32 {
		out := make([]uint32, len(idx))
		for k, i := range idx {
			out[k] = b.view.UID(uint32(i + 1))
		}
		return out
	}
	// A session that downloads a mailbox it has seen before
	// (leave-on-server clients) changes nothing here, whatever its
	// size: the view tells which messages need the flag. Asked before
	// the deletions, which renumber the view.
	var unseen []uint32
	for _, i := range retrieved {
		if b.unseen[i] {
			unseen = append(unseen, b.view.UID(uint32(i+1)))
		}
	}
	var derr, serr, cerr error
	if len(deleted) > 0 {
		_, derr = b.view.Delete(uids(deleted))
	}
	if len(unseen) > 0 {
		serr = b.view.StoreSilent(unseen, maildir.FlagsAdd, []string{maildir.FlagSeen})
	}
	// qmail-pop3d and Dovecot move new mail to cur/ when a POP3 session
	// sees it: it is no longer "recent" for an IMAP client afterwards.
	if b.isNew {
		cerr = b.view.ClaimNew()
	}
	return errors.Join(derr, serr, cerr, b.view.Settle())
}

// Close implements Mailbox: it releases the session lock.
func (b *MaildirBox) Close() error {
	if b.view != nil {
		b.view.Close()
	}
	if b.lock == nil {
		return nil
	}
	err := b.lock.Close()
	b.lock = nil
	return err
}
