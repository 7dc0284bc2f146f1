package imapd

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// benchMailbox is an account with n messages in cur/, named with their
// sizes, selected by a logged-in session.
func benchMailbox(b *testing.B, n int) *wire {
	mb := newMailbox(b, 0)
	for i := 0; i < n; i++ {
		body := fmt.Sprintf("Subject: message %d\nFrom: a%d@example.org\n\nbody %d\n", i, i%97, i)
		name := fmt.Sprintf("%d.M%dP1Q1.bench,S=%d,W=%d:2,S", 1700000000+i, i, len(body), len(body)+4)
		if err := os.WriteFile(filepath.Join(mb.dir, "cur", name), []byte(body), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	w := mb.loggedIn()
	w.ok("s", "SELECT INBOX")
	return w
}

// BenchmarkFetchFast: FETCH 1:* FAST of 10,000 messages through the
// front and imapserver, from the index alone.
func BenchmarkFetchFast(b *testing.B) {
	w := benchMailbox(b, 10000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if lines := w.ok("f", "FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)"); len(lines) != 10000 {
			b.Fatalf("%d lines", len(lines))
		}
	}
}

// BenchmarkSearchHeader: a SUBJECT search of 10,000 messages, which
// reads each one's header.
func BenchmarkSearchHeader(b *testing.B) {
	w := benchMailbox(b, 10000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w.ok("h", "UID SEARCH SUBJECT nothing-like-it")
	}
}

// BenchmarkNoop: the cost of a command that changes nothing, its Poll
// included, at 10,000 messages.
func BenchmarkNoop(b *testing.B) {
	w := benchMailbox(b, 10000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w.ok("n", "NOOP")
	}
}
