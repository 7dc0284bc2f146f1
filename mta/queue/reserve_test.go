package queue

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFullDisk: on a queue file system filled to its last byte (a 4 MB
// tmpfs), new mail is refused by Reserve, while an entry already queued
// can still have its envelope rewritten (the ballast gives way) and be
// removed, which frees space.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs for the queue needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=4m,mode=0755"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	q, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	e := &Envelope{Sender: "a@b.example", UID: -1, Recipients: []*Recipient{{Addr: "bob@example.org", State: Queued}}}
	id, err := q.Inject(e, strings.NewReader("Subject: x\n\nhello\n"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// The runner's first save lays the ballast.
	if err := q.Save(e); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, BallastName)); err != nil {
		t.Fatalf("no ballast after a save: %v", err)
	}
	// Fill what is left, to the last block.
	fill, err := os.Create(filepath.Join(dir, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	block := make([]byte, 4096)
	for range 1 << 12 {
		if _, err := fill.Write(block); err != nil {
			break
		}
	}
	fill.Close()
	if err := q.Reserve(100 << 10); !errors.Is(err, ErrNoReserve) {
		t.Fatalf("Reserve on a full disk: %v", err)
	}
	if _, err := q.Inject(&Envelope{Sender: "a@b.example", UID: -1, Recipients: []*Recipient{{Addr: "x@example.org", State: Queued}}},
		strings.NewReader(strings.Repeat("x", 8192)), time.Now()); err == nil {
		t.Fatal("a new message was queued on a full disk")
	}
	// Delivery goes on: a rewrite of the envelope, then removal.
	e.Recipients = append(e.Recipients, &Recipient{Addr: "carol@example.org", State: Queued, Parent: "team@example.org"})
	e.Recipients[0].State = Delivered
	if err := q.Save(e); err != nil {
		t.Fatalf("envelope rewrite on a full disk: %v", err)
	}
	got, err := q.Load(id)
	if err != nil || len(got.Recipients) != 2 {
		t.Fatalf("envelope after the rewrite: %v %v", got, err)
	}
	if err := q.Remove(id); err != nil {
		t.Fatalf("remove on a full disk: %v", err)
	}
}
