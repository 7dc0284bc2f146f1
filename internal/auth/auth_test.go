package auth

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tern-mail/tern/internal/sysexit"
	"golang.org/x/crypto/bcrypt"
)

func TestHashRoundTrip(t *testing.T) {
	for _, scheme := range []string{SchemeArgon2id, SchemeBcrypt, SchemeSHA512, SchemeSHA256, SchemePlain} {
		start := time.Now()
		s, err := HashPassword(scheme, "correct horse")
		took := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: hashing took %v: %s", scheme, took, s)
		if !strings.HasPrefix(s, "{"+scheme+"}") {
			t.Errorf("%s: hash %q lacks its prefix", scheme, s)
		}
		h, err := ParseHash(s)
		if err != nil {
			t.Fatalf("%s: parse own hash: %v", scheme, err)
		}
		start = time.Now()
		if !h.Verify("correct horse") {
			t.Errorf("%s: right password refused", scheme)
		}
		t.Logf("%s: verifying took %v", scheme, time.Since(start))
		if h.Verify("correct horsf") || h.Verify("") || h.Verify("correct horse ") {
			t.Errorf("%s: wrong password accepted", scheme)
		}
		if h.String() != s {
			t.Errorf("%s: String() = %q, want %q", scheme, h.String(), s)
		}
	}
}

// Hashes made by other programs: Dovecot's doveadm pw -s ARGON2ID (via
// libsodium) and htpasswd -B / Dovecot's BLF-CRYPT ($2y$).
func TestForeignHashes(t *testing.T) {
	for _, tc := range []struct{ hash, pass string }{
		// echo -n password | argon2 somesalt -id -t 2 -m 16 -p 4 -l 32 -e
		{"{ARGON2ID}$argon2id$v=19$m=65536,t=2,p=4$c29tZXNhbHQ$GpZ3sK/oH9p7VIiV56G/64Zo/8GaUw434IimaPqxwCo", "password"},
		// doveadm pw -s ARGON2ID -p password
		{"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$jRsSSlLFhVDIYrxTaXsQog$8EhdbCXcEHEhkvgL9CqH2u7krxIH/4lQPmADZ2dTJ8s", "password"},
		// doveadm pw -s BLF-CRYPT -r 5 -p password
		{"{BLF-CRYPT}$2y$05$x76Tw7p5KEYbVRW3mn0gyOrSAK0zM80V2d8y6FqukGRT7zM3BT/1C", "password"},
		// htpasswd -nbB -C 5 u password, without a scheme
		{"$2y$05$3fKOZGUiZNr.NC7n2K/bBeJOHXOHThPsavD51IvEbcxChhAyg09aS", "password"},
		// doveadm pw -s SHA512-CRYPT -p 'correct horse'
		{"{SHA512-CRYPT}$6$P/o06CMs/Eschffr$pxn/kykVzGoLcj6cAKI/BqnhuAiN0EZNFxD.2bfStLNskwvq051wZBZ1T8ypVHG5AWBsm23eW2SU5qEYF7Jua1", "correct horse"},
		// doveadm pw -s SHA256-CRYPT -p 'correct horse'
		{"{SHA256-CRYPT}$5$1D6cd4JKEeZU4b4E$ir3uw/Pq9eW6Fk/DSn/OLlqUBvScIYKHl77.Ra07zq5", "correct horse"},
		// doveadm pw -s CRYPT -p 'correct horse' (bcrypt inside)
		{"{CRYPT}$2y$05$kjFlA60G4MCxSha42iIE5eCA7YwWz.ep/z/JToriHKBO72XBHbE.a", "correct horse"},
		// openssl passwd -6 -salt 'rounds=10000$abcdefgh', as {CRYPT} and bare
		{"{CRYPT}$6$rounds=10000$abcdefgh$4QtuTRriJ3drZ4BfaTQD7R63rJSGHaht/poPXhZcaUXiAO/1Sq1c5nQsZMCg6WsanGq8pAvH.4NpzJCbVZRjJ1", "correct horse"},
		{"$6$rounds=10000$abcdefgh$4QtuTRriJ3drZ4BfaTQD7R63rJSGHaht/poPXhZcaUXiAO/1Sq1c5nQsZMCg6WsanGq8pAvH.4NpzJCbVZRjJ1", "correct horse"},
		// openssl passwd -5 -salt Qw3rty
		{"$5$Qw3rty$gYpA0j9fWUpG9Utbew0rd4MuIgrJrUCSED5qZJxDuV0", "correct horse"},
	} {
		h, err := ParseHash(tc.hash)
		if err != nil {
			t.Fatalf("%s: %v", tc.hash, err)
		}
		if !h.Verify(tc.pass) {
			t.Errorf("%s: %q refused", tc.hash, tc.pass)
		}
		if h.Verify(tc.pass + "x") {
			t.Errorf("%s: wrong password accepted", tc.hash)
		}
	}
}

// Dovecot must accept what tern writes, or the users file is not
// Dovecot's format.
func TestDoveadmVerifiesOurHashes(t *testing.T) {
	if _, err := exec.LookPath("doveadm"); err != nil {
		t.Skip("SKIP: doveadm is not installed (Debian: dovecot-core)")
	}
	for _, scheme := range []string{SchemeArgon2id, SchemeBcrypt, SchemeSHA512, SchemeSHA256} {
		h, err := HashPassword(scheme, "pass word")
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("doveadm", "pw", "-t", h, "-p", "pass word").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "verified") {
			t.Errorf("doveadm pw -t %s: %v: %s", h, err, out)
		}
		out, err = exec.Command("doveadm", "pw", "-t", h, "-p", "pass worf").CombinedOutput()
		if err == nil {
			t.Errorf("doveadm verified a wrong password against %s: %s", h, out)
		}
	}
}

func TestBadHashes(t *testing.T) {
	for _, s := range []string{
		"{SSHA}abc",
		"{ARGON2ID}$argon2i$v=19$m=65536,t=3,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"{ARGON2ID}$argon2id$v=16$m=65536,t=3,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"{ARGON2ID}$argon2id$v=19$m=4194304,t=3,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"{ARGON2ID}$argon2id$v=19$m=65536,t=1000,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"{ARGON2ID}$argon2id$v=19$m=65536,t=3$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"{BLF-CRYPT}$2x$05$/OK.fbVrR/bpIqNJ5ianF.CE5elHaaO4EbggVDjb8P19RukzXSM3e",
		"{BLF-CRYPT}nonsense",
		"{SHA512-CRYPT}$5$Qw3rty$gYpA0j9fWUpG9Utbew0rd4MuIgrJrUCSED5qZJxDuV0",
		"{SHA512-CRYPT}$6$rounds=5000000$abcdefgh$4QtuTRriJ3drZ4BfaTQD7R63rJSGHaht/poPXhZcaUXiAO/1Sq1c5nQsZMCg6WsanGq8pAvH.4NpzJCbVZRjJ1",
		"{CRYPT}$1$abc$def",
		"{MD5-CRYPT}$1$abc$def",
		"{ARGON2ID",
		"plaintext-without-scheme",
	} {
		if _, err := ParseHash(s); err == nil {
			t.Errorf("%s: accepted", s)
		}
	}
	for _, s := range []string{"", "!", "!{PLAIN}x", "*"} {
		h, err := ParseHash(s)
		if err != nil || !h.Locked() || h.Verify("x") || h.Verify("") {
			t.Errorf("%q: want a locked hash, got %v %v", s, h, err)
		}
	}
}

const usersFixture = `# tern users
alice:{PLAIN}wonderland:1001:1001:Alice:/home/alice:/bin/sh
bob@example.org:{PLAIN}builder:::Bob:/var/vmail/bob/Maildir::extra=1:more

carol:!{PLAIN}x:1003:1003::/home/carol:
`

func TestParseUsers(t *testing.T) {
	u, err := ParseUsers("users", strings.NewReader(usersFixture))
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Entries) != 3 {
		t.Fatalf("%d entries, want 3", len(u.Entries))
	}
	e, ok := u.Lookup("ALICE")
	if !ok || e.Line != 2 {
		t.Fatalf("lookup ALICE: %+v %v", e, ok)
	}
	a := e.Account()
	if *a != (Account{Name: "alice", UID: 1001, GID: 1001, Home: "/home/alice", Maildir: "/home/alice/Maildir/"}) {
		t.Errorf("alice: %+v", a)
	}
	e, ok = u.Lookup("bob")
	if !ok || e.Name != "bob@example.org" || e.Extra != "extra=1:more" {
		t.Fatalf("lookup bob: %+v %v", e, ok)
	}
	if a := e.Account(); a.UID != -1 || a.GID != -1 || a.Maildir != "/var/vmail/bob/Maildir/" {
		t.Errorf("bob: %+v", a)
	}
	if _, ok := u.Lookup("alice@anything.example"); !ok {
		t.Error("alice@anything.example does not find alice")
	}
	if _, ok := u.Exact("bob"); ok {
		t.Error("Exact(bob) finds bob@example.org")
	}
	if _, ok := u.Lookup("dave"); ok {
		t.Error("dave found")
	}
}

func TestParseUsersErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"alice:{PLAIN}x:1:1::/h:\nalice:{PLAIN}y:1:1::/h:\n", "users:2: user alice is already on line 1"},
		{"\n\nbob:{PLAIN}x:abc:1::/h:\n", "users:3: user bob: uid \"abc\""},
		{"bob:{PLAIN}x:1:-1::/h:\n", "users:1: user bob: gid"},
		{"bob:{MD5}x:1:1::/h:\n", "users:1: user bob: unknown password scheme {MD5}"},
		{"bob:{PLAIN}x:1:1::home:\n", "users:1: user bob: home \"home\" is not an absolute path"},
		{"b b:{PLAIN}x\n", "users:1: user name \"b b\""},
		{"#ok\n" + "x:{PLAIN}" + strings.Repeat("a", 5000) + "\n", "users:2: line longer than 4096 bytes"},
		{"a@b@c:{PLAIN}x\n", "users:1: user name \"a@b@c\" has more than one '@'"},
	} {
		_, err := ParseUsers("users", strings.NewReader(tc.in))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%.30q: error %v, want prefix %q", tc.in, err, tc.want)
		} else if sysexit.Code(err) != sysexit.Config {
			t.Errorf("%.30q: status %d, want 78", tc.in, sysexit.Code(err))
		}
	}
}

func writeUsers(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(p, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	return p
}

var remote = netip.MustParseAddr("192.0.2.7")

func TestUsersFileAuthenticate(t *testing.T) {
	p := writeUsers(t, usersFixture)
	a := NewUsersFile(p)
	ctx := context.Background()
	acct, err := a.Authenticate(ctx, "alice", "wonderland", remote)
	if err != nil || acct.Name != "alice" {
		t.Fatalf("alice: %v %v", acct, err)
	}
	if acct, err := a.Authenticate(ctx, "bob", "builder", remote); err != nil || acct.Name != "bob@example.org" {
		t.Fatalf("bob: %v %v", acct, err)
	}
	for _, tc := range [][2]string{{"alice", "Wonderland"}, {"alice", ""}, {"nobody", "x"}, {"carol", "x"}, {"carol", ""}, {"a:b", "x"}, {"", ""}} {
		if _, err := a.Authenticate(ctx, tc[0], tc[1], remote); !errors.Is(err, ErrAuthFailed) {
			t.Errorf("%q %q: %v, want ErrAuthFailed", tc[0], tc[1], err)
		}
	}
	// The file changes under a running server: the change is seen.
	if err := os.WriteFile(p, []byte("alice:{PLAIN}new:::::\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Minute)
	os.Chtimes(p, future, future)
	if _, err := a.Authenticate(ctx, "alice", "new", remote); err != nil {
		t.Errorf("after the file changed: %v", err)
	}
	// A broken or missing file is trouble, not a wrong password.
	os.WriteFile(p, []byte("alice:{NOPE}x\n"), 0o640)
	os.Chtimes(p, future.Add(time.Minute), future.Add(time.Minute))
	if _, err := a.Authenticate(ctx, "alice", "new", remote); !errors.Is(err, ErrTemporary) || !strings.Contains(err.Error(), p+":1:") {
		t.Errorf("broken file: %v, want ErrTemporary naming %s:1", err, p)
	}
	os.Remove(p)
	if _, err := a.Authenticate(ctx, "alice", "new", remote); !errors.Is(err, ErrTemporary) || sysexit.Code(err) != sysexit.TempFail {
		t.Errorf("missing file: %v, want ErrTemporary", err)
	}
}

// A login for an unknown user must cost what a wrong password for a real
// one costs, or timing tells which names exist. Checked by what is
// computed, not by a clock: the dummy hash an unknown user is checked
// against has the scheme and every cost parameter of the file's account.
// (A timed comparison failed on a loaded machine with nothing wrong.)
func TestUnknownUserCost(t *testing.T) {
	for _, scheme := range []string{SchemeArgon2id, SchemeBcrypt, SchemeSHA512, SchemeSHA256} {
		h, err := HashPassword(scheme, "secret")
		if err != nil {
			t.Fatal(err)
		}
		a := NewUsersFile(writeUsers(t, "alice:"+h+":::::\n"))
		ctx := context.Background()
		if _, err := a.Authenticate(ctx, "nobody", "wrong", remote); !errors.Is(err, ErrAuthFailed) {
			t.Fatalf("%s: unknown user: %v", scheme, err)
		}
		u, err := a.Users()
		if err != nil {
			t.Fatal(err)
		}
		real, d := u.Entries[0].hash, a.dummyFor(u)
		if d.Scheme != real.Scheme || d.memory != real.memory || d.time != real.time || d.lanes != real.lanes || len(d.salt) != len(real.salt) {
			t.Errorf("%s: dummy %s m=%d t=%d p=%d salt %d, account %s m=%d t=%d p=%d salt %d", scheme,
				d.Scheme, d.memory, d.time, d.lanes, len(d.salt), real.Scheme, real.memory, real.time, real.lanes, len(real.salt))
		}
		if scheme == SchemeBcrypt {
			dc, _ := bcrypt.Cost([]byte(d.text))
			rc, _ := bcrypt.Cost([]byte(real.text))
			if dc != rc {
				t.Errorf("bcrypt: dummy cost %d, account cost %d", dc, rc)
			}
		}
		if scheme == SchemeSHA512 || scheme == SchemeSHA256 {
			if dr, rr := shaRounds(d.text), shaRounds(real.text); dr != rr {
				t.Errorf("%s: dummy rounds %q, account rounds %q", scheme, dr, rr)
			}
		}
		if d.Verify("wrong") || d.Verify("secret") || d.Verify("") {
			t.Errorf("%s: the dummy hash accepts a password", scheme)
		}
		if a.dummyFor(u) != d {
			t.Errorf("%s: the dummy is made again for every login (its cost is paid once)", scheme)
		}
	}
}

// shaRounds is the rounds= field of a SHA-crypt hash, "" for the default.
func shaRounds(text string) string {
	f := strings.Split(text, "$")
	if len(f) > 2 && strings.HasPrefix(f[2], "rounds=") {
		return f[2]
	}
	return ""
}

func TestThrottle(t *testing.T) {
	now := time.Unix(1700000000, 0)
	var slept []time.Duration
	th := &Throttle{Base: time.Second, Max: 8 * time.Second, Forget: time.Minute,
		Now:   func() time.Time { return now },
		Sleep: func(_ context.Context, d time.Duration) error { slept = append(slept, d); now = now.Add(d); return nil },
	}
	a := Throttled{Authenticator: NewUsersFile(writeUsers(t, "alice:{PLAIN}pw:::::\n")), Throttle: th}
	ctx := context.Background()
	other := netip.MustParseAddr("2001:db8::1")
	sameNet := netip.MustParseAddr("2001:db8::ffff")
	for i := 0; i < 6; i++ {
		a.Authenticate(ctx, "alice", "bad", remote)
	}
	a.Authenticate(ctx, "alice", "bad", other)
	a.Authenticate(ctx, "alice", "bad", sameNet)
	want := []time.Duration{1, 2, 4, 8, 8, 8, 1, 2}
	for i := range want {
		want[i] *= time.Second
	}
	if !slices.Equal(slept, want) {
		t.Errorf("waits %v, want %v", slept, want)
	}
	// Success ends the slowing; so does time.
	if _, err := a.Authenticate(ctx, "alice", "pw", remote); err != nil {
		t.Fatal(err)
	}
	if th.Failures(remote) != 0 {
		t.Errorf("failures after success: %d", th.Failures(remote))
	}
	now = now.Add(2 * time.Minute)
	if th.Failures(other) != 0 {
		t.Errorf("failures after Forget: %d", th.Failures(other))
	}
	slept = nil
	a.Authenticate(ctx, "alice", "bad", other)
	if !slices.Equal(slept, []time.Duration{time.Second}) {
		t.Errorf("after Forget: waits %v, want [1s]", slept)
	}
	// A temporary failure is not the client's: no wait.
	slept = nil
	os.Remove(a.Authenticator.(*UsersFile).Path)
	if _, err := a.Authenticate(ctx, "alice", "pw", remote); !errors.Is(err, ErrTemporary) || len(slept) != 0 {
		t.Errorf("temporary failure: %v, waits %v", err, slept)
	}
}

// The real clock and sleep: the wait really happens and is cut short by
// the context.
func TestThrottleRealSleep(t *testing.T) {
	th := &Throttle{Base: 50 * time.Millisecond}
	a := Throttled{Authenticator: NewUsersFile(writeUsers(t, "alice:{PLAIN}pw:::::\n")), Throttle: th}
	start := time.Now()
	a.Authenticate(context.Background(), "alice", "bad", remote)
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("failure answered after %v, want >= 50ms", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	th.Base = time.Hour
	start = time.Now()
	if _, err := a.Authenticate(ctx, "alice", "bad", remote); !errors.Is(err, ErrAuthFailed) {
		t.Errorf("cancelled wait: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancelled wait took %v", d)
	}
}

// FuzzParseHash: any password field parses or is refused, never panics,
// and a parsed one prints as it was stored.
func FuzzParseHash(f *testing.F) {
	for _, s := range []string{
		"{SHA512-CRYPT}$6$rounds=10000$abcdefgh$4QtuTRriJ3drZ4BfaTQD7R63rJSGHaht/poPXhZcaUXiAO/1Sq1c5nQsZMCg6WsanGq8pAvH.4NpzJCbVZRjJ1",
		"$5$Qw3rty$gYpA0j9fWUpG9Utbew0rd4MuIgrJrUCSED5qZJxDuV0",
		"{CRYPT}$2y$05$kjFlA60G4MCxSha42iIE5eCA7YwWz.ep/z/JToriHKBO72XBHbE.a",
		"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$jRsSSlLFhVDIYrxTaXsQog$8EhdbCXcEHEhkvgL9CqH2u7krxIH/4lQPmADZ2dTJ8s",
		"{PLAIN}x", "!", "{", "$6$", "{CRYPT}$5$rounds=$",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseHash(s)
		if err != nil {
			return
		}
		if h.Locked() {
			return
		}
		if _, err := ParseHash(h.String()); err != nil {
			t.Fatalf("%q parsed, but its String %q does not: %v", s, h.String(), err)
		}
		if h.Scheme == SchemeSHA512 || h.Scheme == SchemeSHA256 {
			h.Verify("x") // bounded rounds: must return
		}
	})
}
