package queue

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// poolNames lists the prepared entries in incoming/.
func poolNames(t *testing.T, q *Queue) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(q.Dir, Incoming))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), PoolPrefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

func waitPool(t *testing.T, q *Queue, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(poolNames(t, q)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d prepared entries, want %d", len(poolNames(t, q)), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newMessage(i int) (*Envelope, string) {
	e := &Envelope{Sender: "a@b.example", UID: -1, Recipients: []*Recipient{{Addr: "bob@example.org", State: Queued}}}
	return e, fmt.Sprintf("Subject: %d\n\n%s\n", i, strings.Repeat("body line\n", i*50))
}

func TestPoolInject(t *testing.T) {
	for _, tmpfile := range []bool{true, false} {
		t.Run(fmt.Sprintf("O_TMPFILE=%v", tmpfile), func(t *testing.T) {
			noTmpfile = !tmpfile
			defer func() { noTmpfile = false }()
			testPoolInject(t)
		})
	}
}

func testPoolInject(t *testing.T) {
	q, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	q.KeepReady(4)
	waitPool(t, q, 4)
	now := time.Now()
	sealed := 0
	for i := range 20 {
		e, text := newMessage(i)
		id, err := q.InjectScanned(e, strings.NewReader(text), now)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(filepath.Join(q.Dir, Incoming, id))
		if err != nil {
			t.Fatal(err)
		}
		if sid, err := checkSeal(f); err == nil {
			sealed++
			if sid != id {
				t.Errorf("sealed as %s, named %s", sid, id)
			}
		}
		f.Close()
		got, err := q.Ingest(id)
		if err != nil {
			t.Fatal(err)
		}
		m, _ := q.Message(got)
		var b bytes.Buffer
		b.ReadFrom(m)
		m.Close()
		if b.String() != text || got.Size != int64(len(text)) {
			t.Errorf("message %d: size %d, %q", i, got.Size, b.String())
		}
	}
	// The first four at least went into prepared entries; the pool is
	// refilled as it is used.
	if sealed < 4 {
		t.Errorf("%d of 20 messages went into prepared entries", sealed)
	}
	waitPool(t, q, 2)
	q.Close()
	ents, _ := os.ReadDir(filepath.Join(q.Dir, Incoming))
	for _, e := range ents {
		t.Errorf("left in incoming/ after Close: %s", e.Name())
	}
}

// sealedEntry injects one message through a prepared entry and returns
// its ID and the file's bytes.
func sealedEntry(t testing.TB, q *Queue, i int) (string, []byte) {
	t.Helper()
	pe, err := q.prepare()
	if err != nil {
		t.Fatal(err)
	}
	e, text := newMessage(i)
	e.Arrived = time.Now()
	e.ID = q.NewID(e.Arrived)
	id, err := q.injectPrepared(pe, e, strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(q.Dir, Incoming, id))
	if err != nil {
		t.Fatal(err)
	}
	return id, b
}

func TestSealCoversEveryByte(t *testing.T) {
	q, _ := Open(t.TempDir())
	id, b := sealedEntry(t, q, 1)
	p := filepath.Join(q.Dir, Incoming, id)
	check := func(b []byte) error {
		os.WriteFile(p, b, 0o600)
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		_, err = checkSeal(f)
		return err
	}
	if err := check(b); err != nil {
		t.Fatalf("intact entry: %v", err)
	}
	for i := range b {
		if i >= len(Format)+1 && i < sealOffset {
			continue // "seal ": a different key is no seal line either
		}
		c := bytes.Clone(b)
		c[i] ^= 0x20
		if check(c) == nil {
			t.Fatalf("byte %d changed (%q), seal still holds", i, b[i])
		}
	}
	for _, n := range []int{len(b) - 1, len(b) / 2, sealEnd - 1, 0} {
		if check(b[:n]) == nil {
			t.Errorf("cut to %d bytes, seal still holds", n)
		}
	}
	if check(append(bytes.Clone(b), "more\n"...)) == nil {
		t.Errorf("grown, seal still holds")
	}
	unsealed := bytes.Replace(b, b[sealOffset:sealOffset+sealValueLen], []byte(sealValue(0, 0)), 1)
	if check(unsealed) == nil {
		t.Errorf("seal never written, and it holds")
	}
}

func TestReclaimPool(t *testing.T) {
	q, _ := Open(t.TempDir())
	in := func(name string) string { return filepath.Join(q.Dir, Incoming, name) }
	// A crash undid the rename: the sealed entry is still .pool-.
	undone, _ := sealedEntry(t, q, 1)
	os.Rename(in(undone), in(PoolPrefix+"undone"))
	// The writer stopped in the middle of the message.
	torn, b := sealedEntry(t, q, 2)
	os.Remove(in(torn))
	os.WriteFile(in(PoolPrefix+"torn"), b[:len(b)-7], 0o600)
	// Taken in already, and the rename's undoing came back.
	taken, b := sealedEntry(t, q, 3)
	if _, err := q.Ingest(taken); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(in(PoolPrefix+"taken"), b, 0o600)
	// The same, the name left on the taken-in file itself.
	linked, _ := sealedEntry(t, q, 4)
	if _, err := q.Ingest(linked); err != nil {
		t.Fatal(err)
	}
	os.Link(q.MessagePath(linked), in(PoolPrefix+"linked"))
	// A rename cut in two: both names on the file.
	both, _ := sealedEntry(t, q, 5)
	os.Link(in(both), in(PoolPrefix+"both"))
	// Left empty by a process that is gone; and one a live process holds.
	os.WriteFile(in(PoolPrefix+"orphan"), nil, 0o600)
	live, _ := q.prepare()
	defer live.discard()
	os.Symlink("/etc/passwd", in(PoolPrefix+"link"))

	notes := q.ReclaimPool()
	t.Log(strings.Join(notes, "\n"))
	if len(notes) != 7 {
		t.Errorf("%d notes, want 7", len(notes))
	}
	left := map[string]bool{}
	for _, n := range poolNames(t, q) {
		left[n] = true
	}
	if len(left) != 1 || !left[filepath.Base(live.name)] {
		t.Errorf("prepared entries left: %v; want only the live one", left)
	}
	if ids, _ := q.Incoming(); len(ids) != 2 || strings.Join(ids, " ") != strings.Join(sortedIDs(undone, both), " ") {
		t.Errorf("incoming: %v, want %s back and %s", ids, undone, both)
	}
	for _, id := range []string{undone, both} {
		if e, err := q.Ingest(id); err != nil || e.ID != id {
			t.Errorf("taking in %s: %v", id, err)
		}
	}
	bad, _ := os.ReadDir(filepath.Join(q.Dir, Bad))
	var names []string
	for _, e := range bad {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != ".pool-link.incoming .pool-torn.incoming" {
		t.Errorf("bad/: %v", names)
	}
	// The live entry is still usable by its process.
	if err := syscall.Flock(int(live.f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Errorf("live entry's lock: %v", err)
	}
}

func sortedIDs(ids ...string) []string {
	sort.Strings(ids)
	return ids
}

// FuzzCheckSeal: whatever a local user leaves in incoming/ as a .pool-
// file, checking it ends, and a file it accepts is one whose envelope
// parses.
func FuzzCheckSeal(f *testing.F) {
	q, _ := Open(f.TempDir())
	_, b := sealedEntry(f, q, 1)
	f.Add(b)
	f.Add([]byte(Format + "\nseal 0000000000000000 00000000\n"))
	p := filepath.Join(f.TempDir(), "entry")
	f.Fuzz(func(t *testing.T, b []byte) {
		os.WriteFile(p, b, 0o600)
		fd, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer fd.Close()
		id, err := checkSeal(fd)
		if err == nil && !ValidID(id) {
			t.Fatalf("accepted with id %q", id)
		}
	})
}

// TestPoolConcurrent: many callers on a small pool, so that some messages
// go into entries made ahead and some the usual way while the pool is
// refilled; every message is in incoming/ once, and Close leaves nothing
// else there.
func TestPoolConcurrent(t *testing.T) {
	q, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	q.KeepReady(4)
	const callers, each = 8, 40
	ids := make(chan string, callers*each)
	var wg sync.WaitGroup
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				e, text := newMessage(c*each + i)
				id, err := q.InjectScanned(e, strings.NewReader(text), time.Now())
				if err != nil {
					t.Error(err)
					return
				}
				ids <- id
			}
		}()
	}
	wg.Wait()
	close(ids)
	q.Close()
	seen := map[string]bool{}
	for id := range ids {
		if seen[id] {
			t.Errorf("ID %s given twice", id)
		}
		seen[id] = true
	}
	in, _ := q.Incoming()
	if len(in) != callers*each || len(seen) != callers*each {
		t.Errorf("%d in incoming/, %d IDs, want %d", len(in), len(seen), callers*each)
	}
	ents, _ := os.ReadDir(filepath.Join(q.Dir, Incoming))
	for _, e := range ents {
		if !ValidID(e.Name()) {
			t.Errorf("left in incoming/: %s", e.Name())
		}
	}
	for _, id := range in {
		if _, err := q.Ingest(id); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
}

// TestPoolIncomingMadeAnew: an administrator replaces incoming/ under a
// running tern-smtpd. The entries made in the old one are dropped (a
// message may be refused for now, never lost or put there), and the next
// messages go into the new one.
func TestPoolIncomingMadeAnew(t *testing.T) {
	q, _ := Open(t.TempDir())
	q.KeepReady(4)
	defer q.Close()
	waitPool(t, q, 4)
	in := filepath.Join(q.Dir, Incoming)
	if err := os.Rename(in, in+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(in, 0o700); err != nil {
		t.Fatal(err)
	}
	refused := 0
	var ids []string
	for i := range 10 {
		e, text := newMessage(i)
		id, err := q.InjectScanned(e, strings.NewReader(text), time.Now())
		if err != nil {
			refused++
			continue
		}
		ids = append(ids, id)
	}
	t.Logf("%d of 10 refused", refused)
	if refused > 1 || len(ids) < 9 {
		t.Errorf("%d of 10 refused after incoming/ was made anew", refused)
	}
	for _, id := range ids {
		if _, err := os.Stat(filepath.Join(in, id)); err != nil {
			t.Errorf("%s not in the new incoming/: %v", id, err)
		}
	}
	old, _ := os.ReadDir(in + ".old")
	for _, e := range old {
		if ValidID(e.Name()) {
			t.Errorf("a message went into the old incoming/: %s", e.Name())
		}
	}
}
