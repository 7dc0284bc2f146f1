package maildir

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestDeliverUnsynced: the message is whole and visible at once, SyncEntry
// syncs its directory, and Discard takes it back without a trace.
func TestDeliverUnsynced(t *testing.T) {
	s, err := Create(filepath.Join(t.TempDir(), "Maildir"), 0)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []Message
	for _, opt := range []DeliverOptions{{}, {Flags: []string{FlagSeen}}} {
		m, err := s.Inbox().DeliverUnsynced(bytes.NewReader([]byte("Subject: x\r\n\r\nbody\r\n")), opt)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(m.Path)
		if err != nil || string(b) != "Subject: x\n\nbody\n" {
			t.Fatalf("%s: %q, %v", m.Path, b, err)
		}
		if err := SyncEntry(m); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	if msgs[0].Dir != "new" || msgs[1].Dir != "cur" {
		t.Errorf("dirs %s and %s, want new and cur", msgs[0].Dir, msgs[1].Dir)
	}
	for _, m := range msgs {
		if err := Discard(m); err != nil {
			t.Fatal(err)
		}
		if err := Discard(m); err != nil {
			t.Errorf("Discard of a message already gone: %v", err)
		}
	}
	for _, d := range []string{"new", "cur", "tmp"} {
		if e, _ := os.ReadDir(filepath.Join(s.Root, d)); len(e) != 0 {
			t.Errorf("%s/ after Discard: %v", d, e)
		}
	}
}
