package maildir

import (
	"bytes"
	"strings"
	"testing"
)

// BenchmarkDeliver measures one durable delivery (write, fsync, link,
// fsync of new/) of a small and a 100 KB message.
func BenchmarkDeliver(b *testing.B) {
	for _, bc := range []struct {
		name string
		size int
	}{{"small", 600}, {"100KB", 100 << 10}} {
		b.Run(bc.name, func(b *testing.B) {
			line := strings.Repeat("x", 70) + "\r\n"
			msg := []byte("Subject: bench\r\n\r\n" + strings.Repeat(line, bc.size/len(line)))
			s := newTestStore(b)
			f := inbox(b, s)
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				if _, err := f.Deliver(bytes.NewReader(msg), DeliverOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSync measures a Sync that finds one new message in a folder of
// 1000.
func BenchmarkSync(b *testing.B) {
	s := newTestStore(b)
	f := inbox(b, s)
	for range 1000 {
		f.Deliver(strings.NewReader("x\n"), DeliverOptions{})
	}
	f.Sync()
	for b.Loop() {
		f.Deliver(strings.NewReader("x\n"), DeliverOptions{})
		if _, err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}
