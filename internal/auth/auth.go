// Package auth holds tern's accounts: the users file (Dovecot's
// passwd-file layout), password hashes, the checkpassword interface,
// server-side SASL PLAIN and LOGIN, and the slowing of failed logins.
// tern-pop3d, tern-smtpd and tern-imapd share it, so a user logs in the
// same way, and fails the same way, whichever protocol they speak.
package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/tern-mail/tern/internal/sysexit"
)

// ErrAuthFailed means the name or password was wrong. It never says which:
// telling "no such user" from "wrong password" would let anyone list the
// accounts.
var ErrAuthFailed = errors.New("authentication failed")

// ErrTemporary wraps trouble that is not the client's fault: a users file
// that cannot be read, a checkpassword program that exited 111 or crashed.
// Protocols answer it with a temporary error (SMTP 454, IMAP NO
// [UNAVAILABLE], POP3 -ERR [SYS/TEMP]) rather than "wrong password".
var ErrTemporary = errors.New("temporary authentication failure")

// Authenticator checks a user's password. It returns the account, or an
// error that is ErrAuthFailed (wrong credentials) or ErrTemporary (try
// again later); remote is the client's address, for checkpassword
// programs and for logs.
type Authenticator interface {
	Authenticate(ctx context.Context, user, pass string, remote netip.Addr) (*Account, error)
}

func temporary(format string, args ...any) error {
	return sysexit.Wrap(sysexit.TempFail, fmt.Errorf("%w: %w", ErrTemporary, fmt.Errorf(format, args...)))
}

// UsersFile authenticates against a users file, reading it again when it
// changes, so that a long-running --listen server sees what tern-passwd
// wrote without a restart.
type UsersFile struct {
	Path string
	// Log, when set, is told about {PLAIN} passwords each time the file
	// is read: accepted so that tests and first setups can write the
	// file by hand, but never meant to stay.
	Log *slog.Logger

	mu    sync.Mutex
	users *Users
	stamp FileStamp
	dummy *Hash
}

// FileStamp tells whether a file changed since it was read: a rewrite in
// place changes its size or time, an atomic replacement its inode.
type FileStamp struct {
	ino, size int64
	mtime     time.Time
}

// StampOf is the stamp of a file as stat(2) saw it.
func StampOf(st os.FileInfo) FileStamp {
	return FileStamp{size: st.Size(), mtime: st.ModTime(), ino: inode(st)}
}

// NewUsersFile returns an authenticator over the users file at path. The
// file is read at the first login, and again whenever it changes.
func NewUsersFile(path string) *UsersFile { return &UsersFile{Path: path} }

// Users returns the file's current contents, reading it if it changed.
func (f *UsersFile) Users() (*Users, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := os.Stat(f.Path)
	if err != nil {
		return nil, temporary("users file %s: %w", f.Path, err)
	}
	stamp := StampOf(st)
	if f.users != nil && stamp == f.stamp {
		return f.users, nil
	}
	u, err := LoadUsers(f.Path)
	if err != nil {
		// A half-edited file must not lock everyone out for good, nor
		// let anyone in: refuse for now.
		return nil, temporary("%w", err)
	}
	f.users, f.stamp, f.dummy = u, stamp, nil
	if f.Log != nil {
		for _, e := range u.Entries {
			if e.hash.Scheme == SchemePlain {
				f.Log.Warn("plain-text password in users file; replace it with tern-passwd set", "file", f.Path, "line", e.Line, "user", e.Name)
			}
		}
	}
	return u, nil
}

// Authenticate implements Authenticator. A login for an unknown (or
// locked) user verifies the password against a hash of the same scheme
// and cost as the file's first account, so that the answer takes as long
// as a wrong password for a real account.
func (f *UsersFile) Authenticate(ctx context.Context, user, pass string, remote netip.Addr) (*Account, error) {
	u, err := f.Users()
	if err != nil {
		return nil, err
	}
	var e *Entry
	if ValidName(user) == nil {
		e, _ = u.Lookup(user)
	}
	h := f.dummyFor(u)
	if e != nil && !e.hash.Locked() {
		h = e.hash
	}
	ok := h.Verify(pass)
	if !ok || e == nil || pass == "" {
		return nil, ErrAuthFailed
	}
	return e.Account(), nil
}

func (f *UsersFile) dummyFor(u *Users) *Hash {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dummy != nil && f.users == u {
		return f.dummy
	}
	model := &Hash{Scheme: SchemeArgon2id, locked: true}
	for i := range u.Entries {
		if h := u.Entries[i].hash; !h.Locked() {
			model = h
			break
		}
	}
	d := model.dummy()
	if f.users == u {
		f.dummy = d
	}
	return d
}
