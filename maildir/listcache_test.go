package maildir

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// listNames is a listing as "dir/name" strings, for comparing.
func listNames(l []Listed) []string {
	var out []string
	for _, m := range l {
		out = append(out, fmt.Sprintf("%s/%s %d %d", m.Dir(), m.Name, m.Size, m.RFC822Size))
	}
	return out
}

// truth is what the directories hold now, read without the cache.
func truth(t testing.TB, f *Folder) []string {
	t.Helper()
	l, err := f.listDirs()
	if err != nil {
		t.Fatal(err)
	}
	for i := range l {
		if l[i].Size < 0 || l[i].RFC822Size < 0 {
			m, err := f.messageAt(place{name: l[i].Name, cur: !l[i].New}, 0)
			if err != nil {
				t.Fatal(err)
			}
			l[i].Size, l[i].RFC822Size = m.Size, m.RFC822Size
		}
	}
	return listNames(l)
}

func cacheFolder(t testing.TB) (*Store, *Folder) {
	t.Helper()
	s, err := Create(filepath.Join(t.TempDir(), "Maildir"), 0)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := s.Folder("INBOX")
	return s, f
}

// settle waits until a change made now is older than the next cache:
// more than the coarsest kernel timestamp tick.
func settle() { time.Sleep(30 * time.Millisecond) }

func TestListOrderAndEachOnDisk(t *testing.T) {
	_, f := cacheFolder(t)
	base := time.Unix(1700000000, 0)
	for _, d := range []time.Duration{3 * time.Second, time.Second, 2*time.Second + 5*time.Microsecond, 2 * time.Second} {
		if _, err := f.Deliver(strings.NewReader("Subject: x\n\n"+d.String()+"\n"), DeliverOptions{Time: base.Add(d)}); err != nil {
			t.Fatal(err)
		}
	}
	var want []string
	f.EachOnDisk(func(m Message) error {
		want = append(want, fmt.Sprintf("%s/%s %d %d", m.Dir, m.Name, m.Size, m.RFC822Size))
		return nil
	})
	for i := range 3 {
		l, err := f.List(true)
		if err != nil {
			t.Fatal(err)
		}
		if got := listNames(l); !slices.Equal(got, want) {
			t.Errorf("List %d:\n%q\nEachOnDisk:\n%q", i, got, want)
		}
		settle()
	}
	if _, err := os.Stat(filepath.Join(f.path, ListCacheName)); err != nil {
		t.Errorf("no cache written: %v", err)
	}
}

// TestListCacheSeesChanges changes the folder the ways other programs do,
// right after a listing (in the same timestamp tick, where the cache must
// not be fooled) and after a pause (where it is used), and compares every
// listing with the directories.
func TestListCacheSeesChanges(t *testing.T) {
	_, f := cacheFolder(t)
	rng := rand.New(rand.NewPCG(1, 2))
	deliver := func() {
		if _, err := f.Deliver(strings.NewReader("Subject: x\n\nbody\n"), DeliverOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for range 20 {
		deliver()
	}
	pick := func(dir string) string {
		names, _ := readDirNames(filepath.Join(f.path, dir))
		if len(names) == 0 {
			return ""
		}
		slices.Sort(names)
		return names[rng.IntN(len(names))]
	}
	ops := map[string]func(){
		"deliver": deliver,
		"move to cur": func() { // as an IMAP server or mutt does
			if n := pick("new"); n != "" {
				os.Rename(filepath.Join(f.path, "new", n), filepath.Join(f.path, "cur", n+":2,"))
			}
		},
		"flag": func() {
			if n := pick("cur"); n != "" {
				u, _ := splitName(n)
				os.Rename(filepath.Join(f.path, "cur", n), filepath.Join(f.path, "cur", u+":2,FS"))
			}
		},
		"unflag": func() {
			if n := pick("cur"); n != "" {
				u, _ := splitName(n)
				os.Rename(filepath.Join(f.path, "cur", n), filepath.Join(f.path, "cur", u+":2,"))
			}
		},
		"expunge": func() {
			if n := pick("cur"); n != "" {
				os.Remove(filepath.Join(f.path, "cur", n))
			}
		},
		"no sizes in the name": func() { // another MDA's name
			name := fmt.Sprintf("%d.M1P%dQ1.other", time.Now().Unix(), rng.IntN(1e6))
			os.WriteFile(filepath.Join(f.path, "new", name), []byte("a\nb\n"), 0o600)
		},
	}
	var names []string
	for k := range ops {
		names = append(names, k)
	}
	slices.Sort(names)
	for i := range 300 {
		l, err := f.List(true)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := listNames(l), truth(t, f); !slices.Equal(got, want) {
			t.Fatalf("step %d: List\n%q\ndirectories\n%q", i, got, want)
		}
		if i%3 == 0 {
			settle()
		}
		op := names[rng.IntN(len(names))]
		ops[op]()
		if i%5 == 0 {
			settle()
		}
	}
}

// TestListCacheUsed shows the cache is what a listing of an unchanged
// folder comes from, and that deliveries alone keep cur/'s part of it.
func TestListCacheUsed(t *testing.T) {
	_, f := cacheFolder(t)
	for range 5 {
		f.Deliver(strings.NewReader("x\n"), DeliverOptions{})
		f.Deliver(strings.NewReader("y\n"), DeliverOptions{Cur: true})
	}
	settle()
	if _, err := f.List(true); err != nil {
		t.Fatal(err)
	}
	// A message the cache lists in cur/ but the directory does not
	// hold, planted without changing cur/'s times, must then show: it
	// proves the listing came from the cache.
	cachePath := filepath.Join(f.path, ListCacheName)
	data, err := os.ReadFile(cachePath)
	if err != nil {
		t.Fatal(err)
	}
	c := parseListCache(data)
	if c == nil || len(c.list) != 10 {
		t.Fatalf("cache %q", data)
	}
	ghost := Listed{Name: "1.M1P1Q1.ghost,S=2,W=3:2,S", Size: 2, RFC822Size: 3}
	c.list = append([]Listed{ghost}, c.list...)
	tmp, _ := os.Create(cachePath + ".tmp")
	if err := writeListCache(tmp, c); err != nil {
		t.Fatal(err)
	}
	os.Rename(cachePath+".tmp", cachePath)
	l, _ := f.List(true)
	if len(l) != 11 || l[0].Name != ghost.Name {
		t.Fatalf("unchanged folder not listed from the cache: %q", listNames(l))
	}
	// A delivery changes new/ only: cur/ (and the ghost) still come
	// from the cache, new/ from the directory.
	f.Deliver(strings.NewReader("z\n"), DeliverOptions{})
	l, _ = f.List(true)
	if len(l) != 12 || l[0].Name != ghost.Name {
		t.Fatalf("after a delivery: %q", listNames(l))
	}
	// A change to cur/ makes it read again: the ghost is gone.
	f.Deliver(strings.NewReader("w\n"), DeliverOptions{Cur: true})
	l, _ = f.List(true)
	if len(l) != 12 || l[0].Name == ghost.Name {
		t.Fatalf("after a change to cur/: %q", listNames(l))
	}
}

// TestListCacheDistrusted: a cache that is cut short, damaged, too
// large, or made from directories no older than itself, is not used.
func TestListCacheDistrusted(t *testing.T) {
	_, f := cacheFolder(t)
	for range 4 {
		f.Deliver(strings.NewReader("x\n"), DeliverOptions{Cur: true})
	}
	settle()
	want := truth(t, f)
	f.List(true)
	cachePath := filepath.Join(f.path, ListCacheName)
	good, err := os.ReadFile(cachePath)
	c := parseListCache(good)
	if err != nil || c == nil {
		t.Fatalf("cache %q: %v", good, err)
	}
	// A ghost in the cache, not on disk, shows when the cache is used.
	c.list = append([]Listed{{Name: "1.M1P1Q1.ghost,S=2,W=3:2,S", Size: 2, RFC822Size: 3}}, c.list...)
	tmp, _ := os.Create(cachePath + ".tmp")
	if err := writeListCache(tmp, c); err != nil {
		t.Fatal(err)
	}
	good, _ = os.ReadFile(cachePath + ".tmp")
	os.Rename(cachePath+".tmp", cachePath)
	if l, _ := f.List(false); len(l) != len(want)+1 {
		t.Fatalf("the good cache is not used: %q", listNames(l))
	}
	nl := bytes.IndexByte(good, '\n')
	head, body := string(good[:nl]), good[nl+1:]
	fields := strings.Fields(head)
	for name, data := range map[string][]byte{
		"cut short":       good[:len(good)-10],
		"empty":           nil,
		"a byte changed":  bytes.Replace(good, []byte("c "), []byte("n "), 1),
		"a line too many": append(slices.Clone(good), "c 1 1 9.M1P1Q1.x,S=1,W=1:2,\n"...),
		"made too early":  []byte(strings.Replace(head, fields[2], fields[4], 1) + "\n" + string(body)),
		"bad magic":       append([]byte("tern-listcache 2"), good[len(listCacheMagic):]...),
	} {
		if c := parseListCache(data); c != nil {
			t.Errorf("%s: cache trusted", name)
		}
		os.WriteFile(cachePath, data, 0o600)
		l, err := f.List(false)
		if err != nil {
			t.Fatal(err)
		}
		if got := listNames(l); !slices.Equal(got, want) {
			t.Errorf("%s: List\n%q\nwant\n%q", name, got, want)
		}
	}
	// Too large to read: the size alone says so.
	big, _ := os.Create(cachePath)
	big.Truncate(maxListCache + 8192)
	big.Close()
	if c := f.readListCache(); c != nil {
		t.Error("oversized cache read")
	}
	// A cache that cannot be written (read-only Maildir) costs nothing
	// but the reading.
	os.Remove(cachePath)
	if os.Geteuid() != 0 {
		os.Chmod(filepath.Join(f.path, "tmp"), 0o500)
		defer os.Chmod(filepath.Join(f.path, "tmp"), 0o700)
		l, err := f.List(true)
		if err != nil || !slices.Equal(listNames(l), want) {
			t.Errorf("read-only tmp/: %v %q", err, listNames(l))
		}
	}
}

func FuzzParseListCache(f *testing.F) {
	c := &listCache{list: []Listed{{Name: "1.M1P1Q1.h,S=1,W=2:2,S", Size: 1, RFC822Size: 2}, {Name: "2.M1P1Q1.h", New: true, Size: 3, RFC822Size: 4}}}
	c.made.Sec = 100
	dir := f.TempDir()
	tmp, _ := os.Create(filepath.Join(dir, "c"))
	if err := writeListCache(tmp, c); err != nil {
		f.Fatal(err)
	}
	seed, _ := os.ReadFile(filepath.Join(dir, "c"))
	f.Add(seed)
	f.Add([]byte("tern-listcache 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := parseListCache(data)
		if c == nil {
			return
		}
		for _, l := range c.list {
			if strings.ContainsAny(l.Name, "/\n") || l.Size < 0 || l.RFC822Size < 0 || !validUnique(l.Unique()) {
				t.Fatalf("bad entry accepted: %+v", l)
			}
		}
	})
}

// BenchmarkList is a listing of 100,000 messages from the cache and from
// the directories.
func BenchmarkList(b *testing.B) {
	_, f := cacheFolder(b)
	for i := range 100000 {
		name := fmt.Sprintf("%d.M%dP%dQ%d.bench.example,S=3000,W=3050:2,S", 1780000000+i*20, i*7%1000000, 1000+i%30000, i+1)
		os.WriteFile(filepath.Join(f.path, "cur", name), nil, 0o600)
	}
	settle()
	b.Run("cache", func(b *testing.B) {
		for b.Loop() {
			if l, err := f.List(true); err != nil || len(l) != 100000 {
				b.Fatal(err, len(l))
			}
		}
	})
	b.Run("directories", func(b *testing.B) {
		os.Remove(filepath.Join(f.path, ListCacheName))
		for b.Loop() {
			if l, err := f.List(false); err != nil || len(l) != 100000 {
				b.Fatal(err, len(l))
			}
			os.Remove(filepath.Join(f.path, ListCacheName))
		}
	})
}

// TestAddFlagsAndRemoveListed: renames and removals go to the listed
// places, and find a message another program moved meanwhile.
func TestAddFlagsAndRemoveListed(t *testing.T) {
	s, f := cacheFolder(t)
	if err := s.SetQuota(1<<20, 0); err != nil {
		t.Fatal(err)
	}
	var uniques []string
	for i := range 6 {
		m, err := f.Deliver(strings.NewReader(fmt.Sprintf("m%d\n", i)), DeliverOptions{Cur: i >= 3, Quota: true})
		if err != nil {
			t.Fatal(err)
		}
		uniques = append(uniques, m.Unique)
	}
	l, err := f.List(false)
	if err != nil {
		t.Fatal(err)
	}
	// Another program moves message 1 to cur/ and flags message 4.
	os.Rename(filepath.Join(f.path, "new", l[1].Name), filepath.Join(f.path, "cur", uniques[1]+":2,F"))
	os.Rename(filepath.Join(f.path, "cur", l[4].Name), filepath.Join(f.path, "cur", uniques[4]+":2,T"))
	if err := f.AddFlagsListed(l[:5], "S"); err != nil {
		t.Fatal(err)
	}
	if err := f.AddFlagsListed(l[5:], ""); err != nil {
		t.Fatal(err)
	}
	want := []string{":2,S", ":2,FS", ":2,S", ":2,S", ":2,ST", ":2,"}
	for i, u := range uniques {
		if _, err := os.Stat(filepath.Join(f.path, "cur", u+want[i])); err != nil {
			t.Errorf("message %d: %v", i, err)
		}
	}
	if n, _ := readDirNames(filepath.Join(f.path, "new")); len(n) != 0 {
		t.Errorf("new/ still holds %q", n)
	}
	// Removal: message 0 where listed, 1 moved again, 2 already gone.
	l, _ = f.List(false)
	os.Rename(filepath.Join(f.path, "cur", l[1].Name), filepath.Join(f.path, "cur", uniques[1]+":2,"))
	os.Remove(filepath.Join(f.path, "cur", l[2].Name))
	if err := f.RemoveListed(l[:3]); err != nil {
		t.Fatal(err)
	}
	if got := truth(t, f); len(got) != 3 {
		t.Errorf("after removing 3 of 6: %q", got)
	}
	// The quota file counts what was removed.
	q, err := s.Quota()
	if err != nil {
		t.Fatal(err)
	}
	if q.Messages != 4 { // the one another program removed is not counted by us
		t.Errorf("quota counts %d messages, want 4", q.Messages)
	}
}
