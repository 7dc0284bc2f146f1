package tests

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tern-mail/tern/internal/auth"
	"golang.org/x/sys/unix"
)

// login checks a password against the users file the way the servers do.
func login(t *testing.T, users, user, pass string) (*auth.Account, error) {
	t.Helper()
	return auth.NewUsersFile(users).Authenticate(context.Background(), user, pass, netip.MustParseAddr("127.0.0.1"))
}

func TestPasswdHash(t *testing.T) {
	r := NewRoot(t)
	for _, scheme := range []string{"ARGON2ID", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT"} {
		res := r.Run("pass word\n", nil, "tern-passwd", "hash", "--scheme", scheme)
		if res.Code != 0 || !strings.HasPrefix(res.Stdout, "{"+scheme+"}$") {
			t.Fatalf("hash --scheme %s: %v", scheme, res)
		}
		h, err := auth.ParseHash(strings.TrimSpace(res.Stdout))
		if err != nil || !h.Verify("pass word") || h.Verify("pass word\n") || h.Verify("pass wore") {
			t.Errorf("%s: the printed hash %q does not verify the password (%v)", scheme, res.Stdout, err)
		}
		if _, err := exec.LookPath("doveadm"); err == nil {
			out, err := exec.Command("doveadm", "pw", "-t", strings.TrimSpace(res.Stdout), "-p", "pass word").CombinedOutput()
			if err != nil {
				t.Errorf("doveadm does not verify %s: %v: %s", res.Stdout, err, out)
			}
		}
	}
	// CRLF from a Windows-made file is not part of the password.
	res := r.Run("pw\r\n", []string{"TERN_SCHEME=BLF-CRYPT"}, "tern-passwd", "hash")
	if h, err := auth.ParseHash(strings.TrimSpace(res.Stdout)); err != nil || h.Scheme != auth.SchemeBcrypt || !h.Verify("pw") {
		t.Errorf("TERN_SCHEME=BLF-CRYPT, CRLF: %v", res)
	}
	for _, stdin := range []string{"", "\n"} {
		if res := r.Run(stdin, nil, "tern-passwd", "hash"); res.Code != 65 || res.Stdout != "" {
			t.Errorf("hash of %q: %v, want exit 65 and no output", stdin, res)
		}
	}
}

func TestPasswdAddListLogin(t *testing.T) {
	r := NewRoot(t)
	users := filepath.Join(r.Conf, "users")
	home := filepath.Join(r.Home, "alice")
	if res := r.Run("wonderland\n", nil, "tern-passwd", "add", "--home", home, "--create", "alice"); res.Code != 0 {
		t.Fatalf("add alice: %v", res)
	}
	uid, gid := os.Getuid(), os.Getgid()
	if res := r.Run("builder\n", nil, "tern-passwd", "--users", users, "add", "--scheme", "BLF-CRYPT", "--home", "/var/vmail/bob",
		"--uid", fmt.Sprint(uid), "--gid", fmt.Sprint(gid), "bob@example.org"); res.Code != 0 {
		t.Fatalf("add bob: %v", res)
	}
	st, err := os.Stat(users)
	if err != nil || st.Mode().Perm() != 0o640 {
		t.Fatalf("users file: %v, mode %v, want 0640", err, st.Mode().Perm())
	}
	for _, d := range []string{"", "Maildir", "Maildir/cur", "Maildir/new", "Maildir/tmp"} {
		st, err := os.Stat(filepath.Join(home, d))
		if err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v, want a directory with mode 0700", filepath.Join(home, d), err, st)
		}
	}
	res := r.Run("", nil, "tern-passwd", "list")
	want := fmt.Sprintf("alice\\s+-\\s+-\\s+%s\nbob@example.org\\s+%d\\s+%d\\s+/var/vmail/bob\n", regexp.QuoteMeta(home), uid, gid)
	if res.Code != 0 || !regexp.MustCompile("^"+want+"$").MatchString(res.Stdout) {
		t.Errorf("list: %v\nwant the pattern %q", res, want)
	}
	if strings.Contains(res.Stdout, "$") || strings.Contains(res.Stdout, "{") {
		t.Errorf("list shows hashes: %q", res.Stdout)
	}
	acct, err := login(t, users, "alice", "wonderland")
	if err != nil || acct.Maildir != home+"/Maildir/" {
		t.Errorf("alice logs in: %+v %v", acct, err)
	}
	if acct, err := login(t, users, "bob", "builder"); err != nil || acct.UID != uid {
		t.Errorf("bob logs in: %+v %v", acct, err)
	}
	if _, err := login(t, users, "alice", "builder"); err == nil {
		t.Error("alice logs in with bob's password")
	}
	// set changes the password; del removes the account.
	if res := r.Run("looking glass\n", nil, "tern-passwd", "set", "alice"); res.Code != 0 {
		t.Fatalf("set: %v", res)
	}
	if _, err := login(t, users, "alice", "looking glass"); err != nil {
		t.Errorf("new password: %v", err)
	}
	if _, err := login(t, users, "alice", "wonderland"); err == nil {
		t.Error("old password still works")
	}
	if res := r.Run("", nil, "tern-passwd", "del", "bob@example.org"); res.Code != 0 {
		t.Fatalf("del: %v", res)
	}
	if _, err := login(t, users, "bob", "builder"); err == nil {
		t.Error("bob logs in after del")
	}
	// Mistakes and their statuses.
	for _, tc := range []struct {
		stdin string
		args  []string
		code  int
	}{
		{"x\n", []string{"add", "--home", "/h", "alice"}, 65},
		{"x\n", []string{"add", "--home", "/h", "ALICE"}, 65},
		{"x\n", []string{"set", "nobody"}, 67},
		{"", []string{"del", "nobody"}, 67},
		{"", []string{"--users", r.Path("missing"), "list"}, 66},
	} {
		if res := r.Run(tc.stdin, nil, "tern-passwd", tc.args...); res.Code != tc.code || !strings.Contains(res.Stderr, "tern-passwd: fatal: ") {
			t.Errorf("%v: %v, want exit %d", tc.args, res, tc.code)
		}
	}
	if _, err := login(t, users, "alice", "looking glass"); err != nil {
		t.Errorf("after the refused edits: %v", err)
	}
}

func TestPasswdKeepsComments(t *testing.T) {
	r := NewRoot(t)
	before := "# tern users, edited by hand\n\n" +
		"alice:{PLAIN}old:1000:1000:Alice A:/home/alice:/bin/sh:userdb_quota_rule=*:storage=1G\n" +
		"# bob leaves soon\n" +
		"bob:{PLAIN}bob::::/home/bob:\n" +
		"   \n" +
		"carol:{PLAIN}carol::::/home/carol\n"
	users := r.WriteFile("etc/tern/users", before)
	if err := os.Chmod(users, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, step := range [][]string{{"set", "alice"}, {"del", "bob"}, {"add", "--home", "/home/dave", "dave"}} {
		if res := r.Run("new\n", nil, "tern-passwd", step...); res.Code != 0 {
			t.Fatalf("%v: %v", step, res)
		}
	}
	data, _ := os.ReadFile(users)
	hash := regexp.MustCompile(`\{ARGON2ID\}[^:]*`)
	got := hash.ReplaceAllString(string(data), "HASH")
	want := "# tern users, edited by hand\n\n" +
		"alice:HASH:1000:1000:Alice A:/home/alice:/bin/sh:userdb_quota_rule=*:storage=1G\n" +
		"# bob leaves soon\n" +
		"   \n" +
		"carol:{PLAIN}carol::::/home/carol\n" +
		"dave:HASH::::/home/dave:\n"
	if got != want {
		t.Errorf("after set, del, add:\n%s\nwant:\n%s", got, want)
	}
	if st, _ := os.Stat(users); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want the file's own 0600 kept", st.Mode().Perm())
	}
	// A bad line stops every edit, naming file and line.
	r.WriteFile("etc/tern/users", string(data)+"eve:{MD5}x::::/home/eve:\n")
	res := r.Run("x\n", nil, "tern-passwd", "add", "--home", "/home/f", "frank")
	if res.Code != 78 || !strings.Contains(res.Stderr, users+":8: user eve: unknown password scheme") {
		t.Errorf("edit of a broken file: %v", res)
	}
}

// Several tern-passwd processes adding at once must all get their entry
// in: the lock serializes them and none rewrites a stale copy.
func TestPasswdConcurrentAdds(t *testing.T) {
	r := NewRoot(t)
	users := filepath.Join(r.Conf, "users")
	// A lock left by a dead process is broken, not waited on forever.
	host, _ := os.Hostname()
	if err := os.WriteFile(users+".lock", fmt.Appendf(nil, "%d %s\n", 1<<22+12345, host), 0o600); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	results := make([]Result, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i] = r.Run(fmt.Sprintf("pw%d\n", i), nil, "tern-passwd", "add", "--scheme", "BLF-CRYPT", "--home", fmt.Sprintf("/home/u%d", i), fmt.Sprintf("u%d", i))
		}(i)
	}
	wg.Wait()
	for i, res := range results {
		if res.Code != 0 {
			t.Errorf("add u%d: %v", i, res)
		}
	}
	u, err := auth.LoadUsers(users)
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Entries) != n {
		t.Errorf("%d entries after %d concurrent adds", len(u.Entries), n)
	}
	for i := 0; i < n; i++ {
		if _, err := login(t, users, fmt.Sprintf("u%d", i), fmt.Sprintf("pw%d", i)); err != nil {
			t.Errorf("u%d: %v", i, err)
		}
	}
	left, _ := filepath.Glob(filepath.Join(r.Conf, "*"))
	if len(left) != 1 {
		t.Errorf("left in the control directory: %v", left)
	}
}

func TestPasswdUsage(t *testing.T) {
	r := NewRoot(t)
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"--bogus", "list"},
		{"hash", "extra"},
		{"hash", "--scheme", "MD5"},
		{"add", "alice"},
		{"add", "--home", "/h"},
		{"add", "--home", "/h", "a", "b"},
		{"add", "--home", "relative", "alice"},
		{"add", "--home", "/h", "al:ice"},
		{"add", "--home", "/h", "--uid", "-5", "alice"},
		{"set"},
		{"del", "a", "b"},
		{"list", "x"},
	} {
		res := r.Run("pw\n", nil, "tern-passwd", args...)
		if res.Code != 64 || !strings.Contains(res.Stderr, "tern-passwd: ") {
			t.Errorf("%v: %v, want exit 64", args, res)
		}
	}
	if _, err := os.Stat(filepath.Join(r.Conf, "users")); err == nil {
		t.Error("a refused command wrote the users file")
	}
	if res := r.Run("", nil, "tern-passwd", "--help"); res.Code != 0 || !strings.Contains(res.Stdout, "hash") {
		t.Errorf("--help: %v", res)
	}
}

// Every flag and environment variable of tern-passwd is in its man page.
func TestPasswdManPage(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	page, err := os.ReadFile(filepath.Join(root, "man", "tern-passwd.1"))
	if err != nil {
		t.Fatal(err)
	}
	r := NewRoot(t)
	flag := regexp.MustCompile(`--([a-z][a-z-]+)`)
	env := regexp.MustCompile(`\$(TERN_[A-Z_]+)`)
	for _, cmd := range []string{"", "hash", "add", "set", "del", "list"} {
		args := []string{"--help"}
		if cmd != "" {
			args = []string{cmd, "--help"}
		}
		res := r.Run("", nil, "tern-passwd", args...)
		for _, m := range flag.FindAllStringSubmatch(res.Stdout, -1) {
			if !strings.Contains(string(page), "Fl -"+m[1]) {
				t.Errorf("man/tern-passwd.1 lacks --%s (from %s --help)", m[1], cmd)
			}
		}
		for _, m := range env.FindAllStringSubmatch(res.Stdout, -1) {
			if !strings.Contains(string(page), "Ev "+m[1]) {
				t.Errorf("man/tern-passwd.1 lacks %s", m[1])
			}
		}
	}
}

// --create as root hands the home and Maildir to the account's ids.
func TestPasswdCreateOwner(t *testing.T) {
	NeedRoot(t)
	r := NewRoot(t)
	home := filepath.Join(r.Home, "vmail", "carol")
	if res := r.Run("pw\n", nil, "tern-passwd", "add", "--uid", "4321", "--gid", "4322", "--create", "--home", home, "carol"); res.Code != 0 {
		t.Fatalf("add: %v", res)
	}
	for _, d := range []string{home, filepath.Join(home, "Maildir", "new")} {
		st, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if s := st.Sys().(*syscall.Stat_t); s.Uid != 4321 || s.Gid != 4322 {
			t.Errorf("%s owned by %d:%d, want 4321:4322", d, s.Uid, s.Gid)
		}
	}
}

// openPty returns a pseudo-terminal pair, for driving the password prompt.
func openPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		skipLoudly(t, "no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// On a terminal the password is asked twice, without echo.
func TestPasswdTerminal(t *testing.T) {
	r := NewRoot(t)
	for _, tc := range []struct {
		typed string
		code  int
	}{{"sesame\nsesame\n", 0}, {"sesame\nsesamf\n", 65}} {
		m, s := openPty(t)
		cmd := r.Cmd("tern-passwd", "hash", "--scheme", "BLF-CRYPT")
		var stdout strings.Builder
		cmd.Stdin, cmd.Stdout, cmd.Stderr = s, &stdout, s
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Answer each prompt with the next typed line; the reads end
		// with an error once the program has exited and closed its side.
		var screen strings.Builder
		done := make(chan struct{})
		go func() {
			defer close(done)
			typed := tc.typed
			buf := make([]byte, 256)
			for {
				n, err := m.Read(buf)
				screen.Write(buf[:n])
				if err != nil {
					return
				}
				if typed != "" && (strings.HasSuffix(screen.String(), "Password: ") || strings.HasSuffix(screen.String(), "Again: ")) {
					line, rest, _ := strings.Cut(typed, "\n")
					typed = rest
					m.Write([]byte(line + "\n"))
				}
			}
		}()
		waited := make(chan error, 1)
		go func() { waited <- cmd.Wait() }()
		var err error
		select {
		case err = <-waited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("tern-passwd still running; the terminal showed %q", screen.String())
		}
		st, _ := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
		if st.Lflag&unix.ECHO == 0 {
			t.Error("echo left off after tern-passwd exited")
		}
		s.Close()
		<-done
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != tc.code {
			t.Errorf("exit %d, want %d; terminal %q", code, tc.code, screen.String())
		}
		if strings.Contains(screen.String(), "sesame") {
			t.Errorf("the password was echoed: %q", screen.String())
		}
		if tc.code == 0 {
			h, err := auth.ParseHash(strings.TrimSpace(stdout.String()))
			if err != nil || !h.Verify("sesame") {
				t.Errorf("hash %q: %v", stdout.String(), err)
			}
		}
	}
}
