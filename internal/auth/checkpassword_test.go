package auth

import (
	"context"
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeCheckpassword is a checkpassword program in shell: it reads fd 3 as
// djb's does, knows alice/secret, answers 111 for "trouble", sets USER and
// HOME and runs its arguments as the subprogram.
const fakeCheckpassword = `#!/bin/sh
input=$(head -c 512 <&3 | tr '\0' '\n')
user=$(printf '%s\n' "$input" | sed -n 1p)
pass=$(printf '%s\n' "$input" | sed -n 2p)
stamp=$(printf '%s\n' "$input" | sed -n 3p)
printf '%s %s\n' "$TCPREMOTEIP" "$stamp" > "$(dirname "$0")/seen"
case "$user" in
trouble) echo "database down" >&2; exit 111 ;;
hang) sleep 30; exit 1 ;;
crash) kill -SEGV $$ ;;
esac
[ "$user" = alice ] && [ "$pass" = secret ] || exit 1
USER=alice HOME=/home/alice SHELL=/bin/sh
export USER HOME SHELL
exec "$@"
`

func TestCheckpassword(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "checkpassword")
	if err := os.WriteFile(prog, []byte(fakeCheckpassword), 0o755); err != nil {
		t.Fatal(err)
	}
	c := &Checkpassword{Prog: prog, Timeout: 2 * time.Second}
	ctx := context.Background()
	acct, err := c.Authenticate(ctx, "alice", "secret", remote)
	if err != nil {
		t.Fatal(err)
	}
	want := Account{Name: "alice", UID: os.Getuid(), GID: os.Getgid(), Home: "/home/alice", Maildir: "/home/alice/Maildir/"}
	if *acct != want {
		t.Errorf("account %+v, want %+v", *acct, want)
	}
	seen, _ := os.ReadFile(filepath.Join(dir, "seen"))
	if !strings.HasPrefix(string(seen), "192.0.2.7 <"+strconv.Itoa(os.Getpid())+".") {
		t.Errorf("the program saw %q, want TCPREMOTEIP and a timestamp", seen)
	}
	for _, tc := range []struct {
		user, pass string
		want       error
	}{
		{"alice", "wrong", ErrAuthFailed},
		{"bob", "secret", ErrAuthFailed},
		{"alice", "", ErrAuthFailed},
		{"al\x00ice", "secret", ErrAuthFailed},
		{"trouble", "x", ErrTemporary},
		{"crash", "x", ErrTemporary},
		{"hang", "x", ErrTemporary},
	} {
		start := time.Now()
		_, err := c.Authenticate(ctx, tc.user, tc.pass, remote)
		if !errors.Is(err, tc.want) {
			t.Errorf("%q/%q: %v, want %v", tc.user, tc.pass, err, tc.want)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%q: took %v", tc.user, d)
		}
		if tc.user == "trouble" && !strings.Contains(err.Error(), "database down") {
			t.Errorf("trouble: %v does not carry the program's message", err)
		}
	}
	// A program that is not there is trouble, not a wrong password.
	if _, err := (&Checkpassword{Prog: filepath.Join(dir, "missing")}).Authenticate(ctx, "alice", "secret", remote); !errors.Is(err, ErrTemporary) {
		t.Errorf("missing program: %v", err)
	}
	// A program that never runs its subprogram says nothing of the user.
	lazy := filepath.Join(dir, "lazy")
	os.WriteFile(lazy, []byte("#!/bin/sh\nexit 0\n"), 0o755)
	if _, err := (&Checkpassword{Prog: lazy}).Authenticate(ctx, "alice", "secret", remote); !errors.Is(err, ErrTemporary) {
		t.Errorf("program without subprogram: %v", err)
	}
}

// A real checkpassword program: Debian's checkpw, which checks the
// password in ~/Maildir/.password ($MAILDIR/.password when MAILDIR is set)
// of a system account and then becomes that account. It sets uids and
// groups, so the accepted password needs root; as anyone else only the
// refusals are tried.
func TestDebianCheckpw(t *testing.T) {
	const prog = "/usr/bin/checkpw"
	if _, err := os.Stat(prog); err != nil {
		t.Skip("SKIP: checkpw is not installed (Debian package checkpw; .ci/run installs it)")
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ".password"), []byte("right one"), 0o600); err != nil {
		t.Fatal(err)
	}
	// env sets MAILDIR, which Authenticate's clean environment would drop,
	// and execs checkpw with fd 3 still open.
	c := &Checkpassword{Prog: "/usr/bin/env", Args: []string{"MAILDIR=" + dir, prog}, Timeout: 10 * time.Second}
	ctx := context.Background()
	for _, tc := range []struct{ user, pass string }{
		{me.Username, "wrong one"},
		{me.Username, "right on"},
		{"no-such-user-" + strconv.Itoa(os.Getpid()), "right one"},
	} {
		if _, err := c.Authenticate(ctx, tc.user, tc.pass, remote); !errors.Is(err, ErrAuthFailed) {
			t.Errorf("%s/%q: %v, want %v", tc.user, tc.pass, err, ErrAuthFailed)
		}
	}
	t.Run("accepted", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("SKIP: checkpw sets the account's groups and uid, which needs root")
		}
		acct, err := c.Authenticate(ctx, me.Username, "right one", remote)
		if err != nil {
			t.Fatal(err)
		}
		want := Account{Name: me.Username, UID: 0, GID: 0, Home: me.HomeDir, Maildir: MaildirOf(me.HomeDir)}
		if *acct != want {
			t.Errorf("account %+v, want %+v", *acct, want)
		}
	})
}
