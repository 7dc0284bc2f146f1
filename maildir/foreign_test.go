package maildir

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// The index behind its back: every way another program changes a Maildir
// (a delivery by another program or host, mutt reading, flagging,
// unflagging and deleting, mbsync renaming a file to carry its own UID),
// right after a session left the index current (in the same clock tick)
// and after a pause. After each, the folder's messages must be what is on
// disk, and a session's view must be told. TestIndexRulesAreNeeded shows
// that an index trusted a little too much fails these checks.

// onDisk reads new/ and cur/ directly: unique name -> "new/<name>" or
// "cur/<name>".
func onDisk(t testing.TB, f *Folder) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, dir := range []string{"new", "cur"} {
		for _, n := range dirNames(t, filepath.Join(f.path, dir)) {
			if u, _ := splitName(n); validUnique(u) {
				out[u] = dir + "/" + n
			}
		}
	}
	return out
}

type foreignChange struct {
	name string
	do   func(t testing.TB, f *Folder)
}

// pickIn returns the first file name in a directory of the folder.
func pickIn(t testing.TB, f *Folder, dir string) string {
	t.Helper()
	names := dirNames(t, filepath.Join(f.path, dir))
	if len(names) == 0 {
		t.Fatalf("nothing in %s/", dir)
	}
	return names[0]
}

func renameIn(t testing.TB, f *Folder, from, to string) {
	t.Helper()
	if err := os.Rename(filepath.Join(f.path, from), filepath.Join(f.path, to)); err != nil {
		t.Fatal(err)
	}
}

var foreignChanges = []foreignChange{
	{"delivery by another program", func(t testing.TB, f *Folder) {
		// The old-style name of qmail or go-maildir: no S= or W=.
		name := fmt.Sprintf("%d.M1P99999Q1.elsewhere", time.Now().Unix())
		tmp := filepath.Join(f.path, "tmp", name)
		if err := os.WriteFile(tmp, []byte("Subject: other\n\nfrom elsewhere\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(f.path, "new", name)); err != nil {
			t.Fatal(err)
		}
	}},
	{"delivery through another host", func(t testing.TB, f *Folder) {
		other, err := Open(f.store.Root)
		if err != nil {
			t.Fatal(err)
		}
		other.Hostname = "hostb.example"
		if _, err := other.Inbox().Deliver(strings.NewReader("Subject: b\n\nvia b\n"), DeliverOptions{}); err != nil {
			t.Fatal(err)
		}
	}},
	{"mutt reads a new message", func(t testing.TB, f *Folder) {
		n := pickIn(t, f, "new")
		renameIn(t, f, "new/"+n, "cur/"+n+":2,S")
	}},
	{"mutt flags a message", func(t testing.TB, f *Folder) {
		n := pickIn(t, f, "cur")
		renameIn(t, f, "cur/"+n, "cur/"+n+"F") // ":2,S" -> ":2,SF" is still one name
	}},
	{"mutt marks a message unread", func(t testing.TB, f *Folder) {
		n := pickIn(t, f, "cur")
		renameIn(t, f, "cur/"+n, "cur/"+strings.TrimSuffix(n, "S"))
	}},
	{"mutt deletes a message", func(t testing.TB, f *Folder) {
		n := pickIn(t, f, "cur")
		if err := os.Remove(filepath.Join(f.path, "cur", n)); err != nil {
			t.Fatal(err)
		}
	}},
	{"mbsync puts its UID in a name", func(t testing.TB, f *Folder) {
		n := pickIn(t, f, "cur")
		u, flags := splitName(n)
		renameIn(t, f, "cur/"+n, "cur/"+u+",U=7:2,"+flags)
	}},
	{"a message moved back to new/", func(t testing.TB, f *Folder) {
		n := pickIn(t, f, "cur")
		u, _ := splitName(n)
		renameIn(t, f, "cur/"+n, "new/"+u)
	}},
}

// behindItsBack runs one change against a folder whose index a session
// just left current, and returns what went wrong.
func behindItsBack(t testing.TB, mutation int, c foreignChange, pause bool) []string {
	t.Helper()
	s := newTestStore(t)
	f := s.Inbox()
	for i := range 5 {
		deliverText(t, f, fmt.Sprintf("Subject: %d\n\nbody\n", i))
	}
	rw, err := f.View(false) // moves all five to cur/
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rw.Store([]uint32{1, 2, 3}, FlagsAdd, []string{FlagSeen}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		deliverText(t, f, fmt.Sprintf("Subject: new %d\n\nbody\n", i))
	}
	// The session that watches: EXAMINE, which moves nothing itself.
	v, err := f.View(true)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Settle(); err != nil {
		t.Fatal(err)
	}
	if pause {
		time.Sleep(20 * time.Millisecond)
	}
	s.mutation = mutation
	c.do(t, f)

	var bad []string
	truth := onDisk(t, f)
	msgs, err := f.Messages()
	if err != nil {
		return []string{err.Error()}
	}
	indexed := map[string]string{}
	for _, m := range msgs {
		indexed[m.Unique] = m.Dir + "/" + m.Name
	}
	for u, p := range truth {
		if indexed[u] != p {
			bad = append(bad, fmt.Sprintf("on disk %s, index says %q", p, indexed[u]))
		}
	}
	for u, p := range indexed {
		if _, ok := truth[u]; !ok {
			bad = append(bad, fmt.Sprintf("index has %s, not on disk", p))
		}
	}
	// The session is told: after its poll, its view is the folder.
	if _, err := v.Poll(true); err != nil {
		return append(bad, err.Error())
	}
	var seen []string
	v.Each(1, v.Len(), func(m Message) bool {
		seen = append(seen, m.Dir+"/"+m.Name)
		return true
	})
	var want []string
	for _, p := range truth {
		want = append(want, p)
	}
	sort.Strings(seen)
	sort.Strings(want)
	if !slices.Equal(seen, want) {
		bad = append(bad, fmt.Sprintf("the session sees %v, the disk holds %v", seen, want))
	}
	return bad
}

func TestIndexBehindItsBack(t *testing.T) {
	for _, c := range foreignChanges {
		for _, pause := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/pause=%v", c.name, pause), func(t *testing.T) {
				for _, b := range behindItsBack(t, mutationNone, c, pause) {
					t.Error(b)
				}
			})
		}
	}
}

// TestIndexRulesAreNeeded breaks the index's rules one at a time and
// requires TestIndexBehindItsBack's checks to notice: a check that an
// index trusted wrongly would pass proves nothing.
func TestIndexRulesAreNeeded(t *testing.T) {
	for _, m := range []struct {
		name     string
		mutation int
	}{
		{"stamps not compared", mutationTrustStale},
		{"names counted, not compared", mutationCountOnly},
	} {
		t.Run(m.name, func(t *testing.T) {
			caught := 0
			for _, c := range foreignChanges {
				if len(behindItsBack(t, m.mutation, c, true)) > 0 {
					caught++
				}
			}
			if caught == 0 {
				t.Errorf("no change behind the index's back was missed with %q: the checks cannot fail", m.name)
			}
			t.Logf("%q caught by %d of %d changes", m.name, caught, len(foreignChanges))
		})
	}
}
