package conf

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWatcher: a change to a control file is seen at the next look after
// a second, a directory that stops loading leaves the previous one in
// force (logged once), and a fixed one is read again.
func TestWatcher(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		// A rename, as tern-passwd writes: a new inode each time.
		tmp := filepath.Join(dir, ".tmp")
		if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	write("hostname", "mx.example.org\n")
	write("domains", "example.org\n")
	write("users", "bob:{PLAIN}x::::/home/bob:\n")
	var log bytes.Buffer
	w, err := Watch(dir, Loader{Hostname: os.Hostname}, slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	w.Now = func() time.Time { return now }
	known := func(addr string) bool {
		r, err := w.Current().LookupUser(addr)
		return err == nil && r != nil
	}
	if !known("bob@example.org") || known("carol@example.org") {
		t.Fatal("first load: want bob and not carol")
	}
	write("users", "bob:{PLAIN}x::::/home/bob:\ncarol:{PLAIN}y::::/home/carol:\n")
	now = now.Add(2 * time.Second)
	if !known("carol@example.org") {
		t.Fatal("carol, added to the users file, is unknown after the next look")
	}
	write("aliases", "this is not an alias line\n")
	now = now.Add(2 * time.Second)
	if !known("carol@example.org") {
		t.Fatal("a broken aliases file took the previous directory away")
	}
	now = now.Add(2 * time.Second)
	w.Current()
	if n := strings.Count(log.String(), "does not load"); n != 1 {
		t.Fatalf("the broken directory logged %d times, want once:\n%s", n, log.String())
	}
	os.Remove(filepath.Join(dir, "aliases"))
	write("users", "bob:{PLAIN}x::::/home/bob:\n")
	now = now.Add(2 * time.Second)
	if known("carol@example.org") {
		t.Fatal("carol, removed from the users file, is still known")
	}
	// Within the second, no look at the files.
	write("users", "bob:{PLAIN}x::::/home/bob:\ndave:{PLAIN}y::::/home/dave:\n")
	if known("dave@example.org") {
		t.Fatal("looked at the files again within a second")
	}
	now = now.Add(time.Second)
	if !known("dave@example.org") {
		t.Fatal("dave unknown a second later")
	}
}
