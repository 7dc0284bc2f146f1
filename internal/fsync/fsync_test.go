package fsync

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Dir(dir); err != nil {
		t.Errorf("Dir(%s): %v", dir, err)
	}
	err := Dir(filepath.Join(dir, "missing"))
	var pe *fs.PathError
	if !errors.Is(err, fs.ErrNotExist) || !errors.As(err, &pe) || pe.Path != filepath.Join(dir, "missing") {
		t.Errorf("missing directory: %v, want a PathError naming it with ErrNotExist", err)
	}
	if err := Dir(filepath.Join(dir, "f")); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("a file: %v, want ENOTDIR", err)
	}
}

// TestDirWritableNotReadable: a directory its user may write but not read
// (mode 0333, as the queue's incoming/ is to submitters) is flushed
// through its parent. Root reads every directory, so as root the test
// runs itself again as nobody (uid 65534) with setpriv, as .ci/run does.
func TestDirWritableNotReadable(t *testing.T) {
	if os.Getenv("FSYNC_TEST_DIR") != "" {
		if err := Dir(os.Getenv("FSYNC_TEST_DIR")); err != nil {
			t.Fatalf("Dir: %v", err)
		}
		return
	}
	// Not t.TempDir, whose parent only its owner may search.
	base, err := os.MkdirTemp("", "fsync-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	dir := filepath.Join(base, "incoming")
	if err := os.Mkdir(dir, 0o333); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		if err := Dir(dir); err != nil {
			t.Errorf("Dir on a write-only directory: %v", err)
		}
		return
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("running as root, and setpriv (Debian package util-linux) is missing to run this as another user")
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	for d := filepath.Dir(base); d != "/"; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err != nil || st.Mode().Perm()&0o001 == 0 {
			t.Skipf("%s is not searchable by others; the test cannot run as nobody", d)
		}
	}
	// The test binary's own directory is private: nobody runs a copy.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "fsync.test")
	if err := os.WriteFile(bin, exe, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", bin, "-test.run=^TestDirWritableNotReadable$")
	cmd.Env = append(os.Environ(), "FSYNC_TEST_DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "PASS") {
		t.Errorf("as nobody: %v\n%s", err, out)
	}
}
