package remote

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/tern-mail/tern/mta/route"
	"github.com/tern-mail/tern/mta/transport"
)

// bigText generates a message of about size octets without allocating,
// with a dot-led line now and then; crlf says which line end to use.
type bigText struct {
	size, done int64
	line       int
	crlf       bool
	pending    []byte
}

var (
	bigHead     = []byte("Subject: big\n\n")
	bigLine     = []byte("a line of a long message, padded to look like text xxxxxxxxxxxxxxxxxxxxxxxxxxxx\n")
	bigDot      = []byte(".a line that starts with a dot\n")
	bigHeadCRLF = []byte("Subject: big\r\n\r\n")
	bigLineCRLF = []byte("a line of a long message, padded to look like text xxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n")
	bigDotCRLF  = []byte(".a line that starts with a dot\r\n")
)

func (b *bigText) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(b.pending) == 0 {
			if b.done >= b.size {
				break
			}
			b.line++
			var l, lc []byte
			switch {
			case b.line == 1:
				l, lc = bigHead, bigHeadCRLF
			case b.line%1000 == 0:
				l, lc = bigDot, bigDotCRLF
			default:
				l, lc = bigLine, bigLineCRLF
			}
			b.done += int64(len(l))
			b.pending = l
			if b.crlf {
				b.pending = lc
			}
		}
		k := copy(p[n:], b.pending)
		b.pending = b.pending[k:]
		n += k
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// A 50 MB message goes out streamed: what is allocated while it is sent
// is a small part of its size, and the server gets every octet.
func TestDeliverLargeMessageStreamed(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 50 MB")
	}
	const size = 50 << 20
	// go-smtp does not renew its read deadline during DATA: room for -race.
	m := newMX(t, "127.0.0.2", 0, func(m *mx) { m.sink, m.srv.ReadTimeout = true, 2*time.Minute })
	h := newHarness(t, []route.Target{m.target("mx.example.org")}, nil)
	want := sha256.New()
	wantLen, _ := io.Copy(want, &bigText{size: size, crlf: true})
	var stored int64
	{
		n, _ := io.Copy(io.Discard, &bigText{size: size})
		stored = n
	}
	msg := &transport.Message{ID: "BIG", Sender: "s@sender.test", Size: stored,
		Open: func() (io.ReadCloser, error) { return io.NopCloser(&bigText{size: size}), nil }}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res := h.tr.Deliver(ctx, msg, transport.Hop{Kind: transport.SMTP, Key: "smtp:example.org", Domain: "example.org"}, rcpts("a@example.org"))
	runtime.ReadMemStats(&after)
	if !res[0].Delivered() {
		t.Fatalf("result %+v", res[0])
	}
	got := m.received()
	if len(got) != 1 || got[0].Len != wantLen || got[0].Sum != hex.EncodeToString(want.Sum(nil)) {
		t.Fatalf("received %d octets (sum %s), want %d", got[0].Len, got[0].Sum, wantLen)
	}
	// Allocation counts the test's generator and the server too; a
	// client that held the text would add 50 MB and more.
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("allocated %d KiB while sending %d MiB (generator and server included)", alloc>>10, size>>20)
	if alloc > size/10 {
		t.Errorf("allocated %d octets while sending a %d octet message: not streamed", alloc, size)
	}
}
