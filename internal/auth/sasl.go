package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/emersion/go-sasl"
)

// SASL mechanism names (RFC 4616 PLAIN; LOGIN from
// draft-murchison-sasl-login, which every mail client still speaks).
const (
	MechPlain = "PLAIN"
	MechLogin = "LOGIN"
)

// ErrBadSASL is a malformed client response: not the client's password
// being wrong, but its protocol; protocols answer it with a syntax error.
var ErrBadSASL = errors.New("malformed SASL response")

// Mechanisms returns the mechanisms to offer. Both send the password in
// the clear, so none are offered on a connection without TLS: RFC 4954 §4
// and RFC 8314 §3 say a server should not; a server that must (a loopback
// listener) passes tls=true on purpose.
func Mechanisms(tls bool) []string {
	if !tls {
		return nil
	}
	return []string{MechPlain, MechLogin}
}

// NewSASLServer returns a server for mechanism mech (case-insensitive)
// that checks credentials with a, and a function that returns the account
// once the exchange has succeeded (nil before). The sasl.Server works on
// decoded bytes: the protocol does the base64 and the "*" cancel.
func NewSASLServer(ctx context.Context, mech string, a Authenticator, remote netip.Addr) (sasl.Server, func() *Account, error) {
	var acct *Account
	check := func(authzid, user, pass string) error {
		// RFC 4616 §2: an authzid asks to act as another user; tern has
		// no administrators who may, so only the user themself.
		if authzid != "" && authzid != user {
			return fmt.Errorf("%w: may not act as %q", ErrAuthFailed, authzid)
		}
		got, err := a.Authenticate(ctx, user, pass, remote)
		if err != nil {
			return err
		}
		acct = got
		return nil
	}
	result := func() *Account { return acct }
	switch strings.ToUpper(mech) {
	case MechPlain:
		return newPlainServer(check), result, nil
	case MechLogin:
		return &loginServer{check: check}, result, nil
	}
	return nil, nil, fmt.Errorf("unsupported SASL mechanism %q", mech)
}

// plainServer is go-sasl's PLAIN server (RFC 4616) with the names and
// the password checked before the account is looked up, and a malformed
// response told apart from a wrong password: go-sasl reports a response
// without exactly two NULs with an anonymous error that only its English
// text tells from the authenticator's, and the protocols answer the two
// differently (ErrBadSASL: 501, BAD, -ERR). The authenticator not having
// been called is what tells them apart here.
type plainServer struct {
	sasl.Server
	checked bool
}

func newPlainServer(check func(authzid, user, pass string) error) *plainServer {
	s := &plainServer{}
	s.Server = sasl.NewPlainServer(func(authzid, user, pass string) error {
		s.checked = true
		// RFC 4616 §2: an authcid and a password of at least one
		// character, identities of at most 255 octets.
		if user == "" || pass == "" || len(authzid) > 255 || len(user) > 255 || len(pass) > maxSASLPassword {
			return fmt.Errorf("%w: PLAIN with an empty or overlong name or password", ErrBadSASL)
		}
		return check(authzid, user, pass)
	})
	return s
}

// maxSASLPassword bounds a password in a SASL response, with room to spare.
const maxSASLPassword = 1024

func (s *plainServer) Next(resp []byte) ([]byte, bool, error) {
	chal, done, err := s.Server.Next(resp)
	if err != nil && !s.checked {
		err = fmt.Errorf("%w: PLAIN wants authzid NUL authcid NUL password (%v)", ErrBadSASL, err)
	}
	// An error ends the exchange, as LOGIN's does (go-sasl says not done
	// for a malformed response).
	return chal, done || err != nil, err
}

// loginServer is the server side of LOGIN, which go-sasl lacks: the
// challenges "Username:" and "Password:", each answered by one response.
// A client may send the user name as an initial response (Outlook does).
type loginServer struct {
	check func(authzid, user, pass string) error
	state int // 0 start, 1 want user, 2 want password, 3 done
	user  string
}

func (s *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch s.state {
	case 0:
		if resp == nil {
			s.state = 1
			return []byte("Username:"), false, nil
		}
		s.state = 1
		return s.Next(resp)
	case 1:
		user, err := parseLoginField(resp, "user name")
		if err != nil {
			s.state = 3
			return nil, true, err
		}
		s.user, s.state = user, 2
		return []byte("Password:"), false, nil
	case 2:
		s.state = 3
		pass, err := parseLoginField(resp, "password")
		if err != nil {
			return nil, true, err
		}
		return nil, true, s.check("", s.user, pass)
	}
	return nil, true, sasl.ErrUnexpectedClientResponse
}

// ParseLoginField checks one LOGIN response.
func parseLoginField(resp []byte, what string) (string, error) {
	if len(resp) == 0 || len(resp) > maxSASLPassword || bytes.IndexByte(resp, 0) >= 0 {
		return "", fmt.Errorf("%w: LOGIN %s empty, overlong or with NUL", ErrBadSASL, what)
	}
	return string(resp), nil
}
