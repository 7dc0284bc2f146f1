package pop3d

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/emersion/go-sasl"
	"github.com/tern-mail/tern/internal/account"
	"github.com/tern-mail/tern/internal/auth"
)

// Backend is the Auth of tern-pop3d: accounts from internal/auth, the
// mailbox from the account's Maildir, privileges dropped in between.
type Backend struct {
	Authenticator auth.Authenticator
	Remote        netip.Addr
	// Open opens an account's mailbox; nil means OpenMaildir of its
	// Maildir. Tests replace it.
	Open func(a *auth.Account) (Mailbox, error)
}

// Mechanisms implements Auth.
func (b *Backend) Mechanisms(tls bool) []string { return auth.Mechanisms(tls) }

// Login implements Auth.
func (b *Backend) Login(ctx context.Context, user, pass string) (Mailbox, error) {
	a, err := b.Authenticator.Authenticate(ctx, user, pass, b.Remote)
	if err != nil {
		return nil, authError(err)
	}
	return b.open(a)
}

// SASL implements Auth.
func (b *Backend) SASL(ctx context.Context, mech string) (sasl.Server, func() (string, Mailbox, error), error) {
	srv, account, err := auth.NewSASLServer(ctx, mech, b.Authenticator, b.Remote)
	if err != nil {
		return nil, nil, err
	}
	return saslServer{srv}, func() (string, Mailbox, error) {
		a := account()
		if a == nil {
			return "", nil, ErrAuthFailed
		}
		box, err := b.open(a)
		return a.Name, box, err
	}, nil
}

// saslServer maps internal/auth's errors to the session's.
type saslServer struct{ sasl.Server }

func (s saslServer) Next(resp []byte) ([]byte, bool, error) {
	c, done, err := s.Server.Next(resp)
	if err != nil {
		err = authError(err)
	}
	return c, done, err
}

func authError(err error) error {
	switch {
	case errors.Is(err, auth.ErrTemporary):
		return fmt.Errorf("%w: %w", ErrTemporary, err)
	case errors.Is(err, auth.ErrAuthFailed), errors.Is(err, auth.ErrBadSASL):
		return fmt.Errorf("%w: %w", ErrAuthFailed, err)
	}
	return err
}

// open opens the account's mail store through internal/account, which
// becomes the account first when running as root: a POP3 session never
// reads or writes mail as root.
func (b *Backend) open(a *auth.Account) (Mailbox, error) {
	if b.Open != nil {
		return b.Open(a)
	}
	store, err := account.Open(a)
	if err != nil {
		return nil, err
	}
	return OpenMaildir(store)
}
