package imapd

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"testing"
)

// TestMemPipe: what one end writes, in writes of any size, the other
// reads in order; after Close, what was written is still read, then EOF,
// and writes fail.
func TestMemPipe(t *testing.T) {
	a, b := memPipe()
	data := make([]byte, 3*maxPipeBuf+17)
	rand.New(rand.NewSource(1)).Read(data)
	go func() {
		rest := data
		for len(rest) > 0 {
			n := min(len(rest), 1+rand.Intn(100000))
			if _, err := a.Write(rest[:n]); err != nil {
				t.Error(err)
				return
			}
			rest = rest[n:]
		}
		a.Close()
	}()
	got, err := io.ReadAll(b)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d of %d bytes, %v", len(got), len(data), err)
	}
	if _, err := b.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("write after the other end closed: %v", err)
	}
}
