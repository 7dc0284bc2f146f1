// Package account opens the mail store of an account once a server knows
// who logged in: it gives up root for the account's uid and gid, then
// opens the account's Maildir, making it when a new account logs in
// before its first delivery.
//
// tern-pop3d and tern-imapd both call Open right after a successful
// login (LOGIN, AUTHENTICATE, USER/PASS, AUTH, or --preauth), and touch
// no mailbox before it: a session never reads or writes mail as root.
// Folders, flags and UIDs are then maildir's business; neither server
// builds a path into the Maildir or reads a flag letter itself.
package account

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/tern-mail/tern/internal/auth"
	"github.com/tern-mail/tern/internal/privdrop"
	"github.com/tern-mail/tern/maildir"
)

// Open becomes the account, when the process runs as root, and opens its
// Maildir (see OpenStore). An account without a uid and gid of its own
// is refused under root: its mail would be served as root.
func Open(a *auth.Account) (*maildir.Store, error) {
	if os.Geteuid() == 0 {
		if a.UID <= 0 || a.GID <= 0 {
			return nil, fmt.Errorf("account %s has no uid and gid of its own: refusing to serve its mailbox as root", a.Name)
		}
		if err := privdrop.To(a.UID, a.GID); err != nil {
			return nil, err
		}
	}
	return OpenStore(a.Maildir)
}

// OpenStore opens the Maildir at path, making it (mode 0700) when it is
// missing, as a new account's first login may find it. Old files that a
// killed delivery left in tmp/ are removed on the way (36 hours, the
// maildir convention): a login is when someone looks, and a failure there
// costs only disk, so it does not stop the login.
func OpenStore(path string) (*maildir.Store, error) {
	store, err := maildir.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		store, err = maildir.Create(path, 0o700)
	}
	if err != nil {
		return nil, err
	}
	_, _ = store.CleanTmp(store.Now())
	return store, nil
}
