package maildir

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// DeliverUnsynced is Deliver without its last step, the fsync of the
// directory the message is linked into (new/, or cur/ with flags). The
// file itself is written and fsynced, and nothing partial is ever visible,
// as with Deliver; but until SyncEntry has returned for it, a crash may
// lose the directory entry. A caller that delivers many messages at once
// (an LMTP server) makes their entries durable with one SyncEntry per
// directory, and answers for each message only after that; when SyncEntry
// fails it takes the messages back with Discard, so that the retry it asks
// for does not leave a second copy.
func (f *Folder) DeliverUnsynced(r io.Reader, opt DeliverOptions) (Message, error) {
	opt.unsynced = true
	return f.Deliver(r, opt)
}

// SyncEntry fsyncs the directory holding m: every entry linked into it
// before the call is durable when it returns without error.
func SyncEntry(m Message) error { return syncDir(filepath.Dir(m.Path)) }

// Discard removes a message whose entry could not be made durable. (A
// maildirsize line already added for it stays: the file is an estimate
// that Maildir++ recalculates, and a failed fsync is rare.)
func Discard(m Message) error {
	if err := os.Remove(m.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
