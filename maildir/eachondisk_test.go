package maildir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEachOnDisk(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	s, err := Create(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := s.Folder("INBOX")
	base := time.Unix(1700000000, 0)
	// Delivered out of order: arrival is what the names say.
	for _, d := range []time.Duration{3 * time.Second, time.Second, 2*time.Second + 5*time.Microsecond, 2 * time.Second} {
		if _, err := f.Deliver(strings.NewReader("Subject: x\n\n"+d.String()+"\n"), DeliverOptions{Time: base.Add(d)}); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	err = f.EachOnDisk(func(m Message) error {
		if m.UID != 0 {
			t.Errorf("UID %d from EachOnDisk", m.UID)
		}
		b, err := os.ReadFile(m.Path)
		if err != nil {
			return err
		}
		got = append(got, strings.TrimSpace(strings.SplitN(string(b), "\n\n", 2)[1]))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "1s 2s 2.000005s 3s"; strings.Join(got, " ") != want {
		t.Errorf("order %q, want %q", strings.Join(got, " "), want)
	}
	if _, err := os.Stat(filepath.Join(dir, "tern-uidlist")); !os.IsNotExist(err) {
		t.Errorf("EachOnDisk wrote a UID list: %v", err)
	}
}
