package mda

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/tern-mail/tern/internal/sysexit"
	"github.com/tern-mail/tern/maildir"
)

// Delivery is one message to put into a Maildir.
type Delivery struct {
	Envelope
	Maildir   string // the Maildir's path; "" means Home/Maildir/
	Home      string // the account's home, for the default Maildir
	Folder    string // a Maildir++ folder ("Lists.Go"), created when missing; "" is INBOX
	QuotaHard bool   // an over-quota delivery fails for good (73), not for now (75)
	MaxSize   int64  // refuse a message larger than this many bytes; 0 means no limit
	// Detail is the recipient's +detail (RFC 5233): with no Folder, the
	// message goes into the folder of that name when one exists, else
	// into INBOX, as Dovecot's lmtp_save_to_detail_mailbox does.
	Detail string
	// Unsynced leaves the fsync of the directory the message is linked
	// into to the caller, who flushes it once for many messages
	// (maildir.DeliverUnsynced, maildir.SyncEntry).
	Unsynced bool
}

// Deliver reads one message from msg and stores it durably. The error, if
// any, carries the exit status the caller should return (see sysexit), and
// on every error nothing is left visible in the Maildir.
func Deliver(msg io.Reader, d Delivery) (maildir.Message, error) {
	path, err := d.maildirPath()
	if err != nil {
		return maildir.Message{}, err
	}
	store, err := openStore(path)
	if err != nil {
		return maildir.Message{}, err
	}
	var folder *maildir.Folder
	if d.Folder == "" && d.Detail != "" {
		folder = detailFolder(store, d.Detail)
	} else if folder, err = openFolder(store, d.Folder); err != nil {
		return maildir.Message{}, err
	}
	if d.MaxSize > 0 {
		msg = &limitReader{r: msg, left: d.MaxSize}
	}
	body, err := Prepare(msg, d.Envelope)
	if err != nil {
		return maildir.Message{}, classify(err, path, d)
	}
	deliver := folder.Deliver
	if d.Unsynced {
		deliver = folder.DeliverUnsynced
	}
	m, err := deliver(body, maildir.DeliverOptions{Quota: true})
	if err != nil {
		return maildir.Message{}, classify(err, path, d)
	}
	return m, nil
}

func (d Delivery) maildirPath() (string, error) {
	if d.Maildir != "" {
		return d.Maildir, nil
	}
	if d.Home == "" {
		return "", sysexit.New(sysexit.Usage, "no Maildir given and HOME is not set: name the Maildir as an argument")
	}
	return filepath.Join(d.Home, "Maildir"), nil
}

// openStore opens the Maildir, making it when it is missing but its parent
// exists, as procmail and dovecot-lda do: a new account's first mail
// creates its Maildir. A missing parent is a mistake worth a bounce, not a
// directory tree made on a guess.
func openStore(path string) (*maildir.Store, error) {
	s, err := maildir.Open(path)
	if err == nil {
		return s, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, classifyFS(fmt.Errorf("open Maildir %s: %w", path, err))
	}
	parent := filepath.Dir(filepath.Clean(path))
	if st, perr := os.Stat(parent); perr != nil || !st.IsDir() {
		return nil, sysexit.New(sysexit.CantCreate, "no Maildir at %s and no directory %s to make one in: create it (tern-passwd add --create, or mkdir -p %s/{cur,new,tmp})", path, parent, path)
	}
	s, err = maildir.Create(path, 0o700)
	if err != nil {
		return nil, classifyFS(fmt.Errorf("create Maildir %s: %w", path, err))
	}
	return s, nil
}

func openFolder(s *maildir.Store, name string) (*maildir.Folder, error) {
	if name == "" || strings.EqualFold(name, "INBOX") {
		return s.Inbox(), nil
	}
	f, err := s.Folder(name)
	if err == nil {
		return f, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, classifyFS(fmt.Errorf("open folder %s: %w", name, err))
	}
	f, err = s.CreateFolder(name)
	if err != nil {
		return nil, classifyFS(fmt.Errorf("create folder %s: %w", name, err))
	}
	return f, nil
}

// detailFolder is the folder a +detail names when it exists; anything
// else (no such folder, a name that is not a folder's) is INBOX: a
// subaddress never makes a folder, nor loses a message.
func detailFolder(s *maildir.Store, detail string) *maildir.Folder {
	if f, err := s.Folder(detail); err == nil {
		return f
	}
	return s.Inbox()
}

func classify(err error, path string, d Delivery) error {
	var tooBig *sizeError
	switch {
	case errors.As(err, &tooBig):
		return sysexit.New(sysexit.DataErr, "message larger than the limit of %d bytes (#5.2.3)", d.MaxSize)
	case errors.Is(err, maildir.ErrQuotaExceeded):
		code := sysexit.TempFail
		if d.QuotaHard {
			code = sysexit.CantCreate
		}
		return sysexit.New(code, "mailbox %s is over its quota (#%s): %w", path, quotaStatus(code), err)
	case errors.Is(err, maildir.ErrLockTimeout):
		return sysexit.Wrap(sysexit.TempFail, err)
	}
	return classifyFS(err)
}

func quotaStatus(code int) string {
	if code == sysexit.TempFail {
		return "4.2.2"
	}
	return "5.2.2"
}

// classifyFS keeps an already classified error and otherwise derives the
// status from the system error inside (sysexit.Code does that).
func classifyFS(err error) error {
	return sysexit.Wrap(sysexit.Code(err), err)
}

type sizeError struct{}

func (*sizeError) Error() string { return "message too large" }

// limitReader fails once more than left bytes have been read, so a store
// reading from it gives up and removes what it wrote.
type limitReader struct {
	r    io.Reader
	left int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return 0, &sizeError{}
	}
	return n, err
}
