package account

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tern-mail/tern/internal/auth"
)

func TestOpenStoreMakesAndCleans(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "home", "Maildir")
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"cur", "new", "tmp"} {
		if st, err := os.Stat(filepath.Join(dir, sub)); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v", sub, st, err)
		}
	}
	stale := filepath.Join(s.Root, "tmp", "1.M1P1Q1.old")
	os.WriteFile(stale, []byte("partial"), 0o600)
	old := time.Now().Add(-37 * time.Hour)
	os.Chtimes(stale, old, old)
	fresh := filepath.Join(s.Root, "tmp", "2.M1P1Q1.new")
	os.WriteFile(fresh, []byte("being delivered"), 0o600)
	if _, err := OpenStore(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("a 37-hour-old tmp/ file was kept: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("a delivery in progress was removed: %v", err)
	}
}

func TestOpenRefusesRootlessAccountAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the refusal only applies to a server running as root")
	}
	_, err := Open(&auth.Account{Name: "nobodys", UID: -1, GID: -1, Maildir: filepath.Join(t.TempDir(), "Maildir")})
	if err == nil {
		t.Fatal("an account without uid and gid was opened as root")
	}
}
