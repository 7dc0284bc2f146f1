package tests

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const sampleMsg = "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: hello\r\n\r\nline one\r\nline two\r\n"

// files lists the regular files in a Maildir subdirectory.
func files(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	return names
}

// visible lists what a mail reader would see: new/ and cur/.
func visible(t testing.TB, md string) []string {
	return append(files(t, filepath.Join(md, "new")), files(t, filepath.Join(md, "cur"))...)
}

func readOnly(t testing.TB, md string) string {
	t.Helper()
	names := visible(t, md)
	if len(names) != 1 {
		t.Fatalf("%s: want one message, have %v", md, names)
	}
	dir := "new"
	if _, err := os.Stat(filepath.Join(md, dir, names[0])); err != nil {
		dir = "cur"
	}
	b, err := os.ReadFile(filepath.Join(md, dir, names[0]))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var nameRE = regexp.MustCompile(`^(\d+)\.M(\d+)P(\d+)Q(\d+)\.[^,:/]+,S=(\d+),W=(\d+)$`)

func TestDeliverBasic(t *testing.T) {
	r := NewRoot(t)
	md := r.Path("home", "bob", "Maildir")
	if err := os.MkdirAll(filepath.Dir(md), 0o755); err != nil {
		t.Fatal(err)
	}
	res := r.Run(sampleMsg, nil, "tern-deliver", "-f", "alice@example.org", "-r", "bob@example.net", md)
	if res.Code != 0 {
		t.Fatalf("deliver: %v", res)
	}
	names := files(t, filepath.Join(md, "new"))
	if len(names) != 1 {
		t.Fatalf("new/ holds %v", names)
	}
	got := readOnly(t, md)
	want := "Return-Path: <alice@example.org>\nDelivered-To: bob@example.net\n" + strings.ReplaceAll(sampleMsg, "\r\n", "\n")
	if got != want {
		t.Errorf("stored:\n%q\nwant:\n%q", got, want)
	}
	m := nameRE.FindStringSubmatch(names[0])
	if m == nil {
		t.Fatalf("name %q does not follow <sec>.M<usec>P<pid>Q<n>.<host>,S=,W=", names[0])
	}
	if s, _ := strconv.Atoi(m[5]); s != len(want) {
		t.Errorf("S=%d, want %d", s, len(want))
	}
	if w, _ := strconv.Atoi(m[6]); w != len(want)+strings.Count(want, "\n") {
		t.Errorf("W=%d, want %d", w, len(want)+strings.Count(want, "\n"))
	}
	st, err := os.Stat(filepath.Join(md, "new", names[0]))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	if tmp := files(t, filepath.Join(md, "tmp")); len(tmp) != 0 {
		t.Errorf("tmp/ not empty: %v", tmp)
	}
}

func TestDeliverEnvironmentAndDefaults(t *testing.T) {
	r := NewRoot(t)
	home := r.Path("home", "carol")
	if err := os.MkdirAll(home, 0o755); err != nil {
		t.Fatal(err)
	}
	// No Maildir yet: the first delivery makes $HOME/Maildir, as
	// procmail and dovecot-lda do. Envelope from qmail's variables.
	msg := "From alice@example.org Mon Nov 23 10:00:00 2026\nSubject: x\n\nbody\n"
	res := r.Run(msg, []string{"HOME=" + home, "SENDER=alice@example.org", "RECIPIENT=carol@example.net"}, "tern-deliver")
	if res.Code != 0 {
		t.Fatalf("deliver: %v", res)
	}
	got := readOnly(t, filepath.Join(home, "Maildir"))
	if want := "Return-Path: <alice@example.org>\nDelivered-To: carol@example.net\nSubject: x\n\nbody\n"; got != want {
		t.Errorf("stored %q, want %q (the mbox From line must go)", got, want)
	}
}

func TestDeliverFolder(t *testing.T) {
	r := NewRoot(t)
	md := r.Path("Maildir")
	for _, tc := range []struct{ folder, dir string }{
		{"Lists.Go", ".Lists.Go"},
		{"Entwürfe", ".Entw&APw-rfe"},
		{"Lists.Go", ".Lists.Go"}, // again: the folder exists now
	} {
		res := r.Run("Subject: f\n\nb\n", nil, "tern-deliver", "-m", tc.folder, md)
		if res.Code != 0 {
			t.Fatalf("deliver -m %s: %v", tc.folder, res)
		}
		if _, err := os.Stat(filepath.Join(md, tc.dir, "maildirfolder")); err != nil {
			t.Errorf("folder %s: %v", tc.folder, err)
		}
	}
	if n := len(files(t, filepath.Join(md, ".Lists.Go", "new"))); n != 2 {
		t.Errorf(".Lists.Go/new holds %d messages, want 2", n)
	}
	if n := len(visible(t, md)); n != 0 {
		t.Errorf("INBOX holds %d messages, want 0", n)
	}
	for _, bad := range []string{"../escape", "a/b", "a..b", ".hidden"} {
		res := r.Run("Subject: f\n\nb\n", nil, "tern-deliver", "-m", bad, md)
		if res.Code == 0 {
			t.Errorf("-m %q accepted", bad)
		}
	}
	if _, err := os.Stat(r.Path("escape")); err == nil {
		t.Error("-m ../escape made a directory outside the Maildir")
	}
}

func TestDeliverRefusals(t *testing.T) {
	r := NewRoot(t)
	md := r.Path("Maildir")
	for _, tc := range []struct {
		name  string
		msg   string
		args  []string
		code  int
		words string
	}{
		{"loop", "Delivered-To: bob@example.net\nSubject: x\n\nb\n", []string{"-r", "Bob@Example.NET", md}, 65, "looping"},
		{"too big", "Subject: x\n\n" + strings.Repeat("x", 5000) + "\n", []string{"--max-size", "4096", md}, 65, "limit"},
		{"two maildirs", "Subject: x\n\nb\n", []string{md, md}, 64, "MAILDIR"},
		{"unknown flag", "Subject: x\n\nb\n", []string{"--bogus", md}, 64, "bogus"},
		{"no parent", "Subject: x\n\nb\n", []string{r.Path("no", "such", "Maildir")}, 73, "create"},
		{"empty", "", []string{md}, 65, "no message"},
		{"no HOME", "Subject: x\n\nb\n", nil, 64, "HOME"},
	} {
		cmd := r.Cmd("tern-deliver", tc.args...)
		var env []string
		for _, e := range cmd.Env {
			if !strings.HasPrefix(e, "HOME=") {
				env = append(env, e)
			}
		}
		cmd.Env = env
		res := RunCmd(t, cmd, tc.msg)
		if res.Code != tc.code || !strings.Contains(res.Stderr, tc.words) || !strings.HasPrefix(res.Stderr, "tern-deliver: fatal: ") {
			t.Errorf("%s: %v\nwant exit %d and %q", tc.name, res, tc.code, tc.words)
		}
		if v := visible(t, md); len(v) != 0 {
			t.Errorf("%s: a refused message is visible: %v", tc.name, v)
		}
		if tmp := files(t, filepath.Join(md, "tmp")); len(tmp) != 0 {
			t.Errorf("%s: tmp/ not cleaned: %v", tc.name, tmp)
		}
	}
}

func TestDeliverQuota(t *testing.T) {
	r := NewRoot(t)
	md := r.Path("Maildir")
	if res := r.Run("Subject: first\n\nb\n", nil, "tern-deliver", md); res.Code != 0 {
		t.Fatalf("first delivery: %v", res)
	}
	// A Maildir++ quota of 2000 bytes; the first message is counted.
	r.WriteFile("Maildir/maildirsize", "2000S\n")
	big := "Subject: big\n\n" + strings.Repeat("y", 3000) + "\n"
	res := r.Run(big, nil, "tern-deliver", md)
	if res.Code != 75 || !strings.Contains(res.Stderr, "quota") {
		t.Errorf("over quota: %v, want 75", res)
	}
	res = r.Run(big, nil, "tern-deliver", "--quota-hard", md)
	if res.Code != 73 {
		t.Errorf("over quota with --quota-hard: %v, want 73", res)
	}
	if res := r.Run("Subject: small\n\nb\n", nil, "tern-deliver", md); res.Code != 0 {
		t.Errorf("a message within quota: %v", res)
	}
	if n := len(visible(t, md)); n != 2 {
		t.Errorf("%d messages visible, want 2", n)
	}
}

// TestDeliverPermissionDenied runs tern-deliver as nobody against a
// Maildir only root may write.
func TestDeliverPermissionDenied(t *testing.T) {
	NeedRoot(t)
	r := NewRoot(t)
	if err := os.Chmod(r.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	md := r.Path("Maildir")
	if res := r.Run("Subject: x\n\nb\n", nil, "tern-deliver", md); res.Code != 0 {
		t.Fatalf("setup: %v", res)
	}
	if err := os.Chmod(md, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := r.Cmd("tern-deliver", md)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.Dir = "/"
	res := RunCmd(t, cmd, "Subject: y\n\nb\n")
	if res.Code != 77 || !strings.Contains(res.Stderr, "permission denied") {
		t.Errorf("as nobody: %v, want 77", res)
	}
}

// mountTmpfs mounts a small tmpfs for the test and unmounts it after.
func mountTmpfs(t *testing.T, dir, opts string) {
	t.Helper()
	NeedRoot(t)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tern-test", dir).CombinedOutput(); err != nil {
		skipLoudly(t, "cannot mount a tmpfs here (%v: %s)", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
}

func TestDeliverDiskFull(t *testing.T) {
	r := NewRoot(t)
	disk := r.Path("disk")
	mountTmpfs(t, disk, "size=256k")
	md := filepath.Join(disk, "Maildir")
	if res := r.Run("Subject: fits\n\nb\n", nil, "tern-deliver", md); res.Code != 0 {
		t.Fatalf("a small message on the small disk: %v", res)
	}
	big := "Subject: big\n\n" + strings.Repeat(strings.Repeat("z", 99)+"\n", 5000)
	res := r.Run(big, nil, "tern-deliver", md)
	if res.Code != 75 || !strings.Contains(res.Stderr, "no space left") {
		t.Errorf("full disk: %v, want 75 and ENOSPC named", res)
	}
	if n := len(visible(t, md)); n != 1 {
		t.Errorf("%d messages visible, want only the first", n)
	}
	if tmp := files(t, filepath.Join(md, "tmp")); len(tmp) != 0 {
		t.Errorf("tmp/ keeps the failed message: %v", tmp)
	}
}

func TestDeliverReadOnlyFileSystem(t *testing.T) {
	r := NewRoot(t)
	disk := r.Path("ro")
	mountTmpfs(t, disk, "size=1m")
	md := filepath.Join(disk, "Maildir")
	if res := r.Run("Subject: x\n\nb\n", nil, "tern-deliver", md); res.Code != 0 {
		t.Fatalf("setup: %v", res)
	}
	if out, err := exec.Command("mount", "-o", "remount,ro", disk).CombinedOutput(); err != nil {
		skipLoudly(t, "cannot remount read-only: %v %s", err, out)
	}
	res := r.Run("Subject: y\n\nb\n", nil, "tern-deliver", md)
	if res.Code != 73 || !strings.Contains(res.Stderr, "read-only") {
		t.Errorf("read-only Maildir: %v, want 73", res)
	}
}

// TestDeliverKill9 kills tern-deliver at random moments while it reads and
// writes; a reader must never see a partial message: every visible file is
// complete, and each run left either one whole message or none. It runs
// until kills have landed mid-delivery (the run left its file in tmp/) and
// some runs completed, so that both outcomes were seen, or fails.
func TestDeliverKill9(t *testing.T) {
	r := NewRoot(t)
	md := r.Path("Maildir")
	minRuns, minCut, maxRuns := 40, 5, 400
	if testing.Short() {
		minRuns, minCut = 10, 2
	}
	body := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n", 4096) // 256 KiB
	count := func(sub string) int {
		entries, err := os.ReadDir(filepath.Join(md, sub))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		return len(entries)
	}
	runs, cutMid, completed := 0, 0, 0
	for ; runs < maxRuns && (runs < minRuns || cutMid < minCut || completed == 0); runs++ {
		inTmp, inNew := count("tmp"), count("new")
		msg := fmt.Sprintf("Subject: run %d\n\n%s", runs, body)
		cmd := r.Cmd("tern-deliver", md)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		p := StartCmd(t, cmd, nil)
		// Write part or all of the message, then kill at a random moment.
		cut := len(msg)
		if rand.IntN(2) == 0 {
			cut = rand.IntN(len(msg))
		}
		go func() {
			_, _ = io.WriteString(stdin, msg[:cut])
			if cut == len(msg) {
				stdin.Close()
			}
		}()
		time.Sleep(time.Duration(rand.IntN(8000)) * time.Microsecond)
		p.Kill()
		if _, ok := p.Wait(10 * time.Second); !ok {
			t.Fatalf("run %d: tern-deliver still running 10s after SIGKILL", runs)
		}
		stdin.Close()
		switch {
		case count("new") > inNew:
			completed++
		case count("tmp") > inTmp:
			cutMid++
		}
	}
	if cutMid < minCut || completed == 0 {
		t.Fatalf("after %d runs, %d kills landed mid-delivery (want %d) and %d runs completed (want one): the kill moments missed", runs, cutMid, minCut, completed)
	}
	want := func(name string) bool {
		b, err := os.ReadFile(filepath.Join(md, "new", name))
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(b, []byte("\n\n"))
		return i > 0 && string(b[i+2:]) == body && bytes.HasPrefix(b, []byte("Subject: run "))
	}
	visible := 0
	for _, name := range files(t, filepath.Join(md, "new")) {
		if !want(name) {
			t.Errorf("partial message visible: %s", name)
		}
		visible++
	}
	if visible != completed {
		t.Errorf("%d messages visible, but %d runs completed", visible, completed)
	}
	t.Logf("%d runs killed with SIGKILL: %d cut mid-delivery (left in tmp/), %d complete, the rest killed before they began", runs, cutMid, completed)
}

// TestDeliverStartsLean guards what tern-deliver's start-up costs, most of
// the cost of a delivery (tests/bench/deliver.sh): the packages whose init
// the Go runtime runs (GODEBUG=inittrace=1) must not include urfave/cli or
// what it brings, and no init of a tern package may allocate more than a
// little. An init that builds a table (crc32.MakeTable, regexp.MustCompile,
// a map literal of hundreds of entries) runs in every delivery, whether the
// delivery uses it or not: build it on first use instead (sync.OnceValue).
func TestDeliverStartsLean(t *testing.T) {
	r := NewRoot(t)
	res := r.Run("", []string{"GODEBUG=inittrace=1"}, "tern-deliver", "--help")
	if res.Code != 0 {
		t.Fatalf("tern-deliver --help: %s", res)
	}
	// init github.com/tern-mail/tern/maildir @0.57 ms, 0.19 ms clock, 9568 bytes, 4 allocs
	line := regexp.MustCompile(`(?m)^init (\S+) @\S+ ms, (\S+) ms clock, (\d+) bytes, (\d+) allocs$`)
	inits := line.FindAllStringSubmatch(res.Stderr, -1)
	if len(inits) == 0 {
		t.Fatalf("no inittrace lines on stderr:\n%s", res.Stderr)
	}
	for _, m := range inits {
		pkg, bytes := m[1], m[3]
		for _, heavy := range []string{"github.com/urfave/cli/v2", "text/template", "net/netip", "regexp"} {
			if pkg == heavy {
				t.Errorf("tern-deliver runs the init of %s (%s ms, %s bytes): something links it again (go list -deps ./cmd/tern-deliver)", pkg, m[2], bytes)
			}
		}
		if n, _ := strconv.Atoi(bytes); strings.HasPrefix(pkg, "github.com/tern-mail/tern/") && n > 1024 {
			t.Errorf("the init of %s allocates %d bytes (%s ms) in every delivery: build what it builds on first use", pkg, n, m[2])
		}
	}
}
