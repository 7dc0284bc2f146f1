package tests

import (
	"os"
	"testing"
)

// TestHarnessBuilt checks that every program directory produced a binary,
// so a test for a missing program fails here rather than oddly elsewhere.
func TestHarnessBuilt(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(root + "/cmd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, err := os.Stat(Bin(e.Name())); err != nil {
			t.Errorf("program %s was not built: %v", e.Name(), err)
		}
	}
	r := NewRoot(t)
	env := r.Env("HOME=/x", "EXTRA=1")
	var home, extra int
	for _, e := range env {
		switch e {
		case "HOME=/x":
			home++
		case "EXTRA=1":
			extra++
		}
	}
	if home != 1 || extra != 1 {
		t.Errorf("Env override: %v", env)
	}
}
