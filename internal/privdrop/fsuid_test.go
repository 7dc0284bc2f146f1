package privdrop

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

func TestAsUser(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	mine := filepath.Join(dir, "nobody")
	if err := os.Mkdir(mine, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chown(mine, 65534, 65534)
	rootOnly := filepath.Join(dir, "root")
	if err := os.Mkdir(rootOnly, 0o700); err != nil {
		t.Fatal(err)
	}
	// Many at once, interleaved with root's own work on other goroutines:
	// each file is owned by nobody, root's directory stays shut to them,
	// and root's rights are back everywhere else.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 32 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			errs <- AsUser(65534, 65534, func() error {
				p := filepath.Join(mine, "f"+string(rune('a'+i%26))+string(rune('a'+i/26)))
				if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
					return err
				}
				var st syscall.Stat_t
				if err := syscall.Stat(p, &st); err != nil {
					return err
				}
				if st.Uid != 65534 || st.Gid != 65534 {
					return errors.New("file not owned by nobody")
				}
				if err := os.WriteFile(filepath.Join(rootOnly, "x"), nil, 0o600); !errors.Is(err, fs.ErrPermission) {
					return errors.New("root's directory was writable as nobody")
				}
				return nil
			})
		}()
		go func() {
			defer wg.Done()
			if _, err := os.ReadDir(rootOnly); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// fn's error comes back; root is refused.
	want := errors.New("from fn")
	if err := AsUser(65534, 65534, func() error { return want }); err != want {
		t.Errorf("AsUser returned %v, want fn's error", err)
	}
	if err := AsUser(0, 0, func() error { return nil }); err == nil {
		t.Error("AsUser(0, 0) ran")
	}
	if err := os.WriteFile(filepath.Join(mine, "root-again"), nil, 0o600); err != nil {
		t.Errorf("root after AsUser: %v", err)
	}
}

// BenchmarkAsUser is what a delivery as root pays to act as its account:
// a goroutine locked to a thread, the thread's groups and fs ids set,
// checked, and put back. Compare with a delivery's ~1-3 ms of fsyncs.
func BenchmarkAsUser(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("SKIP: needs root")
	}
	for b.Loop() {
		if err := AsUser(65534, 65534, func() error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
