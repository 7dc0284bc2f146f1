package queue

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestInjectAfterQueueRemade: a Queue kept open (tern-smtpd's) while its
// incoming/ is replaced syncs the new directory, not the one it opened.
func TestInjectAfterQueueRemade(t *testing.T) {
	dir := t.TempDir()
	q, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	inject := func() {
		t.Helper()
		e := &Envelope{Sender: "a@b.example", UID: -1, Recipients: []*Recipient{{Addr: "c@d.example", State: Queued}}}
		if _, err := q.Inject(e, strings.NewReader("Subject: x\n\nbody\n"), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	inject()
	old, _ := q.inDir.Stat()
	in := filepath.Join(dir, Incoming)
	if err := os.Rename(in, in+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(in, 0o733); err != nil {
		t.Fatal(err)
	}
	inject()
	held, _ := q.inDir.Stat()
	now, _ := os.Stat(in)
	if os.SameFile(held, old) || !os.SameFile(held, now) {
		t.Fatal("after incoming/ was made anew, the queue still syncs the old directory")
	}
	if ids, _ := q.Incoming(); len(ids) != 1 {
		t.Fatalf("new incoming/ holds %v", ids)
	}
}

// BenchmarkInject: one 4 KiB message into the queue, flushes included, by
// 1 and by 8 concurrent callers on one Queue (tern-smtpd's case), written
// the usual way (temporary file, fsync, rename, fsync of incoming/ shared
// by the callers) or into entries made ahead (KeepReady: one fdatasync).
// ns/op is the queue's cost per message. TMPDIR chooses the file system.
func BenchmarkInject(b *testing.B) {
	for _, conc := range []int{1, 8} {
		for _, ahead := range []bool{false, true} {
			b.Run(fmt.Sprintf("callers=%d/ahead=%v", conc, ahead), func(b *testing.B) {
				benchInject(b, conc, ahead)
			})
		}
	}
}

func benchInject(b *testing.B, conc int, ahead bool) {
	q, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	if ahead {
		q.KeepReady(32)
		defer q.Close()
	}
	body := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n", 64)
	var wg sync.WaitGroup
	next := make(chan struct{})
	go func() {
		for i := 0; i < b.N; i++ {
			next <- struct{}{}
		}
		close(next)
	}()
	b.ResetTimer()
	for g := 0; g < conc; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				e := &Envelope{Sender: "a@b.example", UID: -1, Recipients: []*Recipient{{Addr: "c@d.example", State: Queued}}}
				// Prepared entries take messages whose text was looked
				// at already, as tern-smtpd's are.
				inject := q.Inject
				if ahead {
					inject = q.InjectScanned
				}
				if _, err := inject(e, strings.NewReader(body), time.Now()); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkIngestBacklog: taking in a backlog of 4 KiB submissions one
// Ingest at a time, or with IngestAll in batches of 128 (tern-queue's
// scan). ns/op is the cost per message.
func BenchmarkIngestBacklog(b *testing.B) {
	for _, batch := range []int{1, 128} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			q, err := Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			body := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n", 64)
			var ids []string
			for i := 0; i < b.N; i++ {
				e := &Envelope{Sender: "a@b.example", UID: -1, Recipients: []*Recipient{{Addr: "c@d.example", State: Queued}}}
				id, err := q.Inject(e, strings.NewReader(body), time.Now())
				if err != nil {
					b.Fatal(err)
				}
				ids = append(ids, id)
			}
			b.ResetTimer()
			for len(ids) > 0 {
				n := min(len(ids), batch)
				for _, in := range q.IngestAll(ids[:n]) {
					if in.Err != nil {
						b.Fatal(in.Err)
					}
				}
				ids = ids[n:]
			}
		})
	}
}
