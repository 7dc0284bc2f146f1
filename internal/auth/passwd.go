package auth

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/tern-mail/tern/internal/sysexit"
)

// Passwd is what tern-passwd does: make hashes and edit the users file.
type Passwd struct {
	Users  string    // the users file
	Stdin  io.Reader // the password: a terminal (no echo) or one line
	Stdout io.Writer
	Prompt io.Writer // where a terminal prompt goes (stderr)
	Scheme string    // ARGON2ID (default), BLF-CRYPT, SHA512-CRYPT or SHA256-CRYPT
}

// NewUser is an account for Passwd.Add.
type NewUser struct {
	Name   string
	UID    int // -1: the server's own (empty field)
	GID    int
	Home   string
	Create bool // make the home and its Maildir
}

func (p *Passwd) newHash(confirm bool) (string, error) {
	// Check the scheme before asking for a password that would be wasted.
	switch strings.ToUpper(p.Scheme) {
	case "", SchemeArgon2id, SchemeBcrypt, "BCRYPT", SchemeSHA512, SchemeSHA256, SchemePlain:
	default:
		return "", sysexit.New(sysexit.Usage, "%v {%s}: use ARGON2ID, BLF-CRYPT, SHA512-CRYPT or SHA256-CRYPT", ErrUnknownScheme, p.Scheme)
	}
	pw, err := ReadPassword(p.Stdin, p.Prompt, confirm)
	if err != nil {
		return "", err
	}
	h, err := HashPassword(p.Scheme, pw)
	if err != nil {
		return "", sysexit.Wrap(sysexit.Usage, err)
	}
	return h, nil
}

// Hash reads a password and prints its hash.
func (p *Passwd) Hash() error {
	h, err := p.newHash(true)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(p.Stdout, h)
	return err
}

// Add adds an account with a new password; with Create it makes the home
// and its Maildir, owned by the account.
func (p *Passwd) Add(u NewUser) error {
	if err := ValidName(u.Name); err != nil {
		return sysexit.Wrap(sysexit.Usage, err)
	}
	if u.Home == "" {
		return sysexit.New(sysexit.Usage, "add %s: --home is required: the Maildir is HOME/Maildir/", u.Name)
	}
	if !filepath.IsAbs(u.Home) || strings.ContainsAny(u.Home, ":\n\r\x00") {
		return sysexit.New(sysexit.Usage, "add %s: home %q must be an absolute path without a colon", u.Name, u.Home)
	}
	h, err := p.newHash(true)
	if err != nil {
		return err
	}
	e := Entry{Name: u.Name, Pass: h, UID: idField(u.UID), GID: idField(u.GID), Home: u.Home}
	return EditUsersFile(p.Users, func(t *UsersText) error {
		if err := t.Add(e); err != nil {
			return err
		}
		if u.Create {
			if err := CreateHome(u.Home, u.UID, u.GID); err != nil {
				return fmt.Errorf("add %s: %w", u.Name, err)
			}
		}
		return nil
	})
}

func idField(id int) string {
	if id < 0 {
		return ""
	}
	return strconv.Itoa(id)
}

// Set gives user a new password.
func (p *Passwd) Set(user string) error {
	h, err := p.newHash(true)
	if err != nil {
		return err
	}
	return EditUsersFile(p.Users, func(t *UsersText) error { return t.SetPassword(user, h) })
}

// Del removes user's line. The home and its mail are left alone.
func (p *Passwd) Del(user string) error {
	return EditUsersFile(p.Users, func(t *UsersText) error { return t.Delete(user) })
}

// List prints the accounts, one a line: name, uid, gid, home, with "-"
// for an empty field. Never the hashes.
func (p *Passwd) List() error {
	u, err := LoadUsers(p.Users)
	if errors.Is(err, fs.ErrNotExist) {
		return sysexit.Wrap(sysexit.NoInput, err)
	}
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(p.Stdout, 0, 8, 1, ' ', 0)
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	for _, e := range u.Entries {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", e.Name, dash(e.UID), dash(e.GID), dash(e.Home))
	}
	return w.Flush()
}
