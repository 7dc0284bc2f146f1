package imapd

import (
	"bytes"
	"compress/flate"
	"io"
	"math/rand"
	"testing"
)

// roundTrip compresses data with compress/flate at level, flushing
// every flushEvery bytes, and decodes it with the inflater.
func roundTrip(t testing.TB, data []byte, level, flushEvery int) {
	var buf bytes.Buffer
	zw, err := flate.NewWriter(&buf, level)
	if err != nil {
		t.Fatal(err)
	}
	for rest := data; len(rest) > 0; {
		n := min(len(rest), max(flushEvery, 1))
		zw.Write(rest[:n])
		zw.Flush()
		rest = rest[n:]
	}
	zw.Close()
	got, err := io.ReadAll(newInflater(bytes.NewReader(buf.Bytes())))
	if err != nil {
		t.Fatalf("level %d: %v", level, err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("level %d, flush every %d: %d bytes back of %d, differing", level, flushEvery, len(got), len(data))
	}
}

func TestInflateRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	text := bytes.Repeat([]byte("a UID FETCH 1:* (FLAGS BODY.PEEK[HEADER])\r\n"), 2000)
	random := make([]byte, 200000)
	rng.Read(random)
	mixed := append(append([]byte{}, text...), random[:70000]...)
	for _, data := range [][]byte{nil, []byte("x"), text, random, mixed} {
		for _, level := range []int{flate.NoCompression, flate.BestSpeed, flate.DefaultCompression, flate.BestCompression, flate.HuffmanOnly} {
			for _, every := range []int{1 << 30, 4096, 37} {
				roundTrip(t, data, level, every)
			}
		}
	}
}

// blockingReader hands out what it was given and then blocks, as a
// client's socket does after a flush: reading past it is a test failure.
type blockingReader struct {
	data []byte
	t    *testing.T
}

func (b *blockingReader) ReadByte() (byte, error) {
	if len(b.data) == 0 {
		b.t.Fatal("the inflater read past the flushed data")
	}
	c := b.data[0]
	b.data = b.data[1:]
	return c, nil
}

// TestInflateReturnsAtBlockEnd: the data of a block is returned without
// a byte read past the block, whether the sync flush's empty stored
// block follows or not (Z_PARTIAL_FLUSH).
func TestInflateReturnsAtBlockEnd(t *testing.T) {
	for _, level := range []int{flate.BestSpeed, flate.DefaultCompression, flate.HuffmanOnly} {
		var buf bytes.Buffer
		zw, _ := flate.NewWriter(&buf, level)
		cmd := bytes.Repeat([]byte("7 UID STORE 1 +FLAGS.SILENT (\\Flagged)\r\n"), 40)
		zw.Write(cmd)
		zw.Flush()
		// compress/flate's Flush ends the block and adds an empty
		// stored block (00 00 ff ff): drop it, leaving what a partial
		// flush leaves, the data block alone and maybe a few bits.
		stream := bytes.TrimSuffix(buf.Bytes(), []byte{0, 0, 0xff, 0xff})
		z := newInflater(&blockingReader{data: stream, t: t})
		got := make([]byte, 0, len(cmd))
		for len(got) < len(cmd) {
			p := make([]byte, 4096)
			n, err := z.Read(p)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, p[:n]...)
		}
		if !bytes.Equal(got, cmd) {
			t.Fatalf("level %d: got %q", level, got)
		}
	}
}

// FuzzInflate: whatever compress/flate writes, the inflater reads back;
// whatever bytes come, it neither panics nor loops.
func FuzzInflate(f *testing.F) {
	f.Add([]byte("hello hello hello"), byte(6), uint16(5))
	f.Fuzz(func(t *testing.T, data []byte, level byte, every uint16) {
		roundTrip(t, data, int(level%10), int(every)+1)
		io.Copy(io.Discard, io.LimitReader(newInflater(bytes.NewReader(data)), 1<<20))
	})
}
