package maildir

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// TestIndexTornTail cuts the index at every byte, as a crash in the middle
// of an append leaves it: a reader gets the state after the last whole
// block, never an error and never a block in part; the next writer cuts
// the torn end off and goes on under the same UIDVALIDITY, every message
// of that state keeping its UID. (A real crash can only tear blocks after
// the last fdatasync, which every block that gives UIDs is followed by;
// cutting anywhere is harder than that.)
func TestIndexTornTail(t *testing.T) {
	s := newTestStore(t)
	f := s.Inbox()
	ms := deliverN(t, f, 3, time.Unix(1700000000, 0))
	type state struct {
		size    int64
		entries []indexEntry
	}
	var states []state
	mark := func() {
		t.Helper()
		x, err := f.readIndex()
		if err != nil {
			t.Fatal(err)
		}
		states = append(states, state{x.size, slices.Clone(x.entries)})
	}
	if _, err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	mark()
	if _, err := f.SetFlags(ms[0].Unique, []string{FlagSeen}); err != nil {
		t.Fatal(err)
	}
	mark()
	if err := f.Remove(ms[1].Unique); err != nil {
		t.Fatal(err)
	}
	mark()
	deliverN(t, f, 2, time.Unix(1700000100, 0))
	if _, err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	mark()
	data, err := os.ReadFile(f.indexPath())
	if err != nil {
		t.Fatal(err)
	}
	validity := f.idx.validity
	_, _, _, hl, _ := parseIndexHeader(data)
	for cut := hl; cut <= len(data); cut++ {
		if err := os.WriteFile(f.indexPath(), data[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		g := s.Inbox() // a process that never read it whole
		x, err := g.readIndex()
		if err != nil {
			t.Fatalf("cut at %d of %d: %v", cut, len(data), err)
		}
		var want []indexEntry
		for _, st := range states {
			if st.size <= int64(cut) {
				want = st.entries
			}
		}
		if len(x.entries) != len(want) {
			t.Fatalf("cut at %d: %d messages, want %d", cut, len(x.entries), len(want))
		}
		for i := range want {
			if x.entries[i].uid != want[i].uid || x.entries[i].name != want[i].name {
				t.Fatalf("cut at %d: message %d is %+v, want %+v", cut, i, x.entries[i], want[i])
			}
		}
		l, err := g.Sync()
		if err != nil || l.Validity != validity || l.Len() != 4 || l.Next < x.next {
			t.Fatalf("cut at %d: Sync gave %+v %v, want V%d with 4 messages, next from %d", cut, l, err, validity, x.next)
		}
		for _, e := range want {
			if uid, ok := l.UID(e.unique()); ok && uid != e.uid {
				t.Fatalf("cut at %d: %s had UID %d, now %d", cut, e.unique(), e.uid, uid)
			}
		}
	}
}

// TestIndexSurvivesKill kills processes in the middle of their work on a
// folder, again and again: the index they leave is never damaged (the
// UIDVALIDITY stays), and a message keeps its UID and no UID is given to
// two messages, across every kill.
func TestIndexSurvivesKill(t *testing.T) {
	if os.Getenv("TERN_STRESS_ROLE") != "" {
		t.Skip("in a worker")
	}
	s := newTestStore(t)
	f := s.Inbox()
	deliverN(t, f, 20, time.Unix(1700000000, 0))
	first, err := f.Sync()
	if err != nil {
		t.Fatal(err)
	}
	uidOf := map[string]uint32{}
	uniqueOf := map[uint32]string{}
	rounds := 12
	if testing.Short() {
		rounds = 5
	}
	kills := 0
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "-test.run=^TestStressWorker$")
		cmd.Env = append(os.Environ(),
			"TERN_STRESS_ROLE=worker",
			"TERN_STRESS_DIR="+s.Root,
			"TERN_STRESS_HOST="+s.Hostname, // so that its dead pid frees its lock
			fmt.Sprintf("TERN_STRESS_LOG=%s/log.%d", t.TempDir(), round),
			"TERN_STRESS_FOR=5000")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(100+rand.N(300)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled() {
			kills++
		}
		g := s.Inbox() // a fresh process's view
		if _, err := g.readIndex(); err != nil {
			t.Fatalf("round %d: the index a killed process left: %v", round, err)
		}
		l, err := g.Sync()
		if err != nil {
			t.Fatalf("round %d: Sync: %v", round, err)
		}
		if l.Validity != first.Validity {
			t.Fatalf("round %d: UIDVALIDITY %d, was %d: the index was rebuilt", round, l.Validity, first.Validity)
		}
		for _, e := range l.Entries() {
			if uid, ok := uidOf[e.Unique]; ok && uid != e.UID {
				t.Fatalf("round %d: %s had UID %d, now %d", round, e.Unique, uid, e.UID)
			}
			if u, ok := uniqueOf[e.UID]; ok && u != e.Unique {
				t.Fatalf("round %d: UID %d was %s, now %s", round, e.UID, u, e.Unique)
			}
			uidOf[e.Unique], uniqueOf[e.UID] = e.UID, e.Unique
		}
		// Nothing on disk is left without a UID once the survivor syncs.
		names, err := g.scan()
		if err != nil {
			t.Fatal(err)
		}
		for u := range names {
			if _, ok := l.UID(u); !ok {
				t.Errorf("round %d: %s on disk without a UID", round, u)
			}
		}
	}
	if kills == 0 {
		t.Fatal("no worker was killed in the middle of its work: the test proved nothing")
	}
	t.Logf("%d of %d workers killed at work; %d UIDs seen", kills, rounds, len(uniqueOf))
}

// TestSumDirMatchesNames: the sum taken from getdents(2)'s records is the
// sum of the names readdir gives, hidden files and names the index does
// not take left out of both, in directories large enough to need many
// reads.
func TestSumDirMatchesNames(t *testing.T) {
	dir := t.TempDir()
	for i := range 3000 {
		name := fmt.Sprintf("%d.M%dP%dQ%d.host.example,S=%d,W=%d:2,%s", 1700000000+i, i, i%7, i, i, i+3, []string{"", "S", "FS", "a"}[i%4])
		os.WriteFile(filepath.Join(dir, name), nil, 0o600)
	}
	for _, odd := range []string{".hidden", "has space", "x"} {
		os.WriteFile(filepath.Join(dir, odd), nil, 0o600)
	}
	got, err := sumDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	names, err := readDirNames(dir)
	if err != nil {
		t.Fatal(err)
	}
	var want dirSum
	for _, n := range names {
		if u, _ := splitName(n); validUnique(u) {
			want.add(n)
		}
	}
	if got != want || got.n != 3001 {
		t.Errorf("sumDir %+v, the names sum to %+v (want 3001 names)", got, want)
	}
}
