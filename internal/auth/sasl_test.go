package auth

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
)

// exchange runs a client against a server the way a protocol does.
func exchange(t *testing.T, mech string, client sasl.Client, initial bool) (*Account, error) {
	t.Helper()
	a := NewUsersFile(writeUsers(t, "alice:{PLAIN}secret:::::/home/alice:\n"))
	srv, result, err := NewSASLServer(context.Background(), mech, a, netip.MustParseAddr("::1"))
	if err != nil {
		t.Fatal(err)
	}
	_, ir, err := client.Start()
	if err != nil {
		t.Fatal(err)
	}
	resp := ir
	if !initial {
		resp = nil
	}
	for i := 0; i < 5; i++ {
		chal, done, err := srv.Next(resp)
		if err != nil {
			return nil, err
		}
		if done {
			return result(), nil
		}
		if !initial && i == 0 {
			// The first challenge asks for what the client would
			// have sent as its initial response.
			resp = ir
			continue
		}
		if resp, err = client.Next(chal); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("exchange does not end")
	return nil, nil
}

func TestSASL(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mech    string
		client  sasl.Client
		initial bool
		ok      bool
	}{
		{"plain", "PLAIN", sasl.NewPlainClient("", "alice", "secret"), true, true},
		{"plain no initial response", "plain", sasl.NewPlainClient("", "alice", "secret"), false, true},
		{"plain authzid self", "PLAIN", sasl.NewPlainClient("alice", "alice", "secret"), true, true},
		{"plain authzid other", "PLAIN", sasl.NewPlainClient("bob", "alice", "secret"), true, false},
		{"plain wrong", "PLAIN", sasl.NewPlainClient("", "alice", "Secret"), true, false},
		{"login", "LOGIN", sasl.NewLoginClient("alice", "secret"), false, true},
		{"login initial response", "LOGIN", sasl.NewLoginClient("alice", "secret"), true, true},
		{"login wrong", "LOGIN", sasl.NewLoginClient("alice", "nope"), false, false},
	} {
		acct, err := exchange(t, tc.mech, tc.client, tc.initial)
		if tc.ok && (err != nil || acct == nil || acct.Name != "alice") {
			t.Errorf("%s: %v %v", tc.name, acct, err)
		}
		if !tc.ok && (!errors.Is(err, ErrAuthFailed) || acct != nil) {
			t.Errorf("%s: %v %v, want ErrAuthFailed", tc.name, acct, err)
		}
	}
	if _, _, err := NewSASLServer(context.Background(), "CRAM-MD5", nil, netip.Addr{}); err == nil {
		t.Error("CRAM-MD5 accepted")
	}
	if m := Mechanisms(false); len(m) != 0 {
		t.Errorf("mechanisms without TLS: %v", m)
	}
	if m := Mechanisms(true); strings.Join(m, " ") != "PLAIN LOGIN" {
		t.Errorf("mechanisms with TLS: %v", m)
	}
}

func TestLoginChallenges(t *testing.T) {
	a := NewUsersFile(writeUsers(t, "alice:{PLAIN}secret:::::/home/alice:\n"))
	srv, result, _ := NewSASLServer(context.Background(), "LOGIN", a, netip.Addr{})
	steps := []struct {
		resp []byte
		chal string
		done bool
	}{{nil, "Username:", false}, {[]byte("alice"), "Password:", false}, {[]byte("secret"), "", true}}
	for _, s := range steps {
		chal, done, err := srv.Next(s.resp)
		if err != nil || string(chal) != s.chal || done != s.done {
			t.Fatalf("after %q: %q %v %v, want %q %v", s.resp, chal, done, err, s.chal, s.done)
		}
	}
	if result() == nil {
		t.Error("no account after success")
	}
	if _, _, err := srv.Next([]byte("more")); err == nil {
		t.Error("response after the end accepted")
	}
}

// TestPlainMalformed: a PLAIN response that is not "authzid NUL authcid
// NUL password" with a name and a password is ErrBadSASL, never a failed
// login, and the account is not looked up.
func TestPlainMalformed(t *testing.T) {
	for _, in := range []string{"", "alice\x00secret", "\x00\x00secret", "\x00alice\x00", "a\x00b\x00c\x00d",
		strings.Repeat("a", 300) + "\x00alice\x00x", "\x00alice\x00" + strings.Repeat("p", 1025)} {
		a := &fixedAuth{}
		srv, result, _ := NewSASLServer(context.Background(), "PLAIN", a, netip.Addr{})
		if _, done, err := srv.Next([]byte(in)); !errors.Is(err, ErrBadSASL) || !done || a.calls != 0 || result() != nil {
			t.Errorf("%q: done %v, %v, %d lookups; want ErrBadSASL and none", in, done, err, a.calls)
		}
	}
}

// FuzzPlain drives the PLAIN server with one arbitrary response: it is
// malformed (ErrBadSASL, no lookup), or its three parts are what was looked
// up, and only alice/secret gets in.
func FuzzPlain(f *testing.F) {
	f.Add([]byte("\x00alice\x00secret"))
	f.Add([]byte("alice\x00alice\x00secret"))
	f.Add([]byte("\x00alice"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a := &fixedAuth{}
		srv, result, _ := NewSASLServer(context.Background(), "PLAIN", a, netip.Addr{})
		_, done, err := srv.Next(b)
		if !done {
			t.Fatalf("%q: not done", b)
		}
		switch {
		case errors.Is(err, ErrBadSASL):
			if a.calls != 0 || result() != nil {
				t.Errorf("%q: malformed, yet %d lookups", b, a.calls)
			}
		case err == nil:
			if s := string(b); s != "\x00alice\x00secret" && s != "alice\x00alice\x00secret" || result() == nil {
				t.Errorf("%q: let in", b)
			}
		}
	})
}

// FuzzLogin drives the LOGIN state machine with arbitrary responses; it
// must never panic nor accept anything but alice/secret.
func FuzzLogin(f *testing.F) {
	f.Add([]byte("alice"), []byte("secret"), true)
	f.Add([]byte(""), []byte("\x00"), false)
	a := &fixedAuth{}
	f.Fuzz(func(t *testing.T, user, pass []byte, initial bool) {
		srv, result, _ := NewSASLServer(context.Background(), "LOGIN", a, netip.Addr{})
		resps := [][]byte{user, pass, pass}
		if !initial {
			resps = append([][]byte{nil}, resps...)
		}
		for _, r := range resps {
			_, done, err := srv.Next(r)
			if err != nil || done {
				break
			}
		}
		if acct := result(); acct != nil && (string(user) != "alice" || string(pass) != "secret") {
			t.Errorf("accepted %q %q", user, pass)
		}
	})
}

// fixedAuth lets alice/secret in and counts the lookups.
type fixedAuth struct {
	calls int
}

func (a *fixedAuth) Authenticate(_ context.Context, user, pass string, _ netip.Addr) (*Account, error) {
	a.calls++
	if user == "alice" && pass == "secret" {
		return &Account{Name: "alice"}, nil
	}
	return nil, ErrAuthFailed
}

func FuzzParseUsersLine(f *testing.F) {
	for _, l := range strings.Split(usersFixture, "\n") {
		f.Add(l)
	}
	f.Fuzz(func(t *testing.T, line string) {
		e, ok, err := ParseUsersLine(line)
		if err != nil || !ok {
			return
		}
		if strings.Contains(line, "\n") {
			t.Fatalf("line break accepted: %q", line)
		}
		// What was parsed prints back to the same line.
		if got := FormatEntry(e); got != line && e.Extra == "" && strings.Count(line, ":") == 6 {
			t.Errorf("FormatEntry = %q, want %q", got, line)
		}
	})
}
