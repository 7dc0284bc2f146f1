package maildir

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"
)

// chunkReader returns data in reads of the sizes in sizes, in turn.
type chunkReader struct {
	data  []byte
	sizes []int
	i     int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := 1
	if len(r.sizes) > 0 {
		n = max(r.sizes[r.i%len(r.sizes)], 1)
		r.i++
	}
	n = min(n, len(p), len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

// lfReference is what copyLF must write: every CRLF as LF, a lone CR kept.
func lfReference(in []byte) []byte { return bytes.ReplaceAll(in, []byte("\r\n"), []byte("\n")) }

// countingWriter counts the writes copyLF makes.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

func checkCopyLF(t *testing.T, in []byte, r io.Reader) *countingWriter {
	t.Helper()
	var w countingWriter
	size, lfs, err := copyLF(&w, r, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := lfReference(in)
	if !bytes.Equal(w.Bytes(), want) {
		t.Fatalf("copyLF wrote %q, want %q", w.Bytes(), want)
	}
	if size != int64(len(want)) || lfs != int64(bytes.Count(want, []byte("\n"))) {
		t.Fatalf("copyLF says size %d, %d LF; wrote %d, %d LF", size, lfs, len(want), bytes.Count(want, []byte("\n")))
	}
	return &w
}

func TestCopyLFChunks(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"), 5000)
	for _, in := range [][]byte{
		nil,
		[]byte("\r"),
		[]byte("\r\n"),
		[]byte("\r\r\n\r"),
		[]byte("a\rb\r\nc\n\r"),
		big,
		append(bytes.Repeat([]byte("x"), 32<<10-1), "\r\nnext\r"...),
	} {
		for _, sizes := range [][]int{nil, {1}, {2, 3}, {32 << 10}, {32<<10 - 1, 1}, {100000}} {
			checkCopyLF(t, in, &chunkReader{data: in, sizes: sizes})
		}
		checkCopyLF(t, in, iotest.OneByteReader(bytes.NewReader(in)))
		checkCopyLF(t, in, iotest.DataErrReader(bytes.NewReader(in)))
	}
	// A small message from several readers is one write; a big one is
	// written 64 KiB or more at a time.
	w := checkCopyLF(t, []byte("Return-Path: <a@b>\r\nSubject: x\r\n\r\nbody\r\n"),
		io.MultiReader(bytes.NewReader([]byte("Return-Path: <a@b>\r\n")), bytes.NewReader([]byte("Subject: x\r\n\r\n")), bytes.NewReader([]byte("body\r\n"))))
	if w.writes != 1 {
		t.Errorf("a small message took %d writes, want 1", w.writes)
	}
	w = checkCopyLF(t, big, bytes.NewReader(big))
	if max := len(big)/(64<<10) + 1; w.writes > max {
		t.Errorf("%d bytes took %d writes, want at most %d", len(big), w.writes, max)
	}
}

func TestCopyLFMaxSize(t *testing.T) {
	in := bytes.Repeat([]byte("line\r\n"), 100)
	// 600 bytes in, 500 stored.
	if _, _, err := copyLF(io.Discard, bytes.NewReader(in), 499); err != ErrMessageTooLarge {
		t.Errorf("over the limit: %v, want ErrMessageTooLarge", err)
	}
	if _, _, err := copyLF(io.Discard, bytes.NewReader(in), 500); err != nil {
		t.Errorf("at the limit after CRLF becomes LF: %v", err)
	}
}

// FuzzCopyLF checks the conversion against bytes.ReplaceAll for any input
// cut into reads anywhere.
func FuzzCopyLF(f *testing.F) {
	f.Add([]byte("a\r\nb\rc\n"), uint8(1), uint8(2))
	f.Add([]byte("\r\r\n\r"), uint8(0), uint8(3))
	f.Fuzz(func(t *testing.T, in []byte, a, b uint8) {
		checkCopyLF(t, in, &chunkReader{data: in, sizes: []int{int(a), int(b)}})
	})
}

// TestDeliverNoQuotaFileNoAppend: with no maildirsize, a delivery does
// not make one (the usage line is appended only to a file that was there
// when the quota was checked).
func TestDeliverNoQuotaFileNoAppend(t *testing.T) {
	s, err := Create(filepath.Join(t.TempDir(), "Maildir"), 0)
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.Folder("INBOX")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Deliver(bytes.NewReader([]byte("Subject: x\n\nb\n")), DeliverOptions{Quota: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.Root, "maildirsize")); !os.IsNotExist(err) {
		t.Errorf("maildirsize after a delivery without quota: %v", err)
	}
	if err := s.SetQuota(1<<20, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Deliver(bytes.NewReader([]byte("Subject: y\n\nbody\n")), DeliverOptions{Quota: true}); err != nil {
		t.Fatal(err)
	}
	q, err := s.Quota()
	if err != nil {
		t.Fatal(err)
	}
	if q.Messages != 2 {
		t.Errorf("quota counts %d messages after a counted and an appended delivery, want 2", q.Messages)
	}
}
