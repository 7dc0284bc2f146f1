package maildir

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

func newTestStore(t testing.TB) *Store {
	t.Helper()
	s, err := Create(filepath.Join(t.TempDir(), "Maildir"), 0)
	if err != nil {
		t.Fatal(err)
	}
	s.Hostname = "host.example"
	return s
}

func inbox(t testing.TB, s *Store) *Folder {
	t.Helper()
	f, err := s.Folder("INBOX")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	names, err := readDirNames(dir)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	return names
}

func TestOpenMissing(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(filepath.Join(dir, "nope")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open of a missing root: %v, want ErrNotExist", err)
	}
	os.Mkdir(filepath.Join(dir, "half"), 0o700)
	os.Mkdir(filepath.Join(dir, "half", "cur"), 0o700)
	if _, err := Open(filepath.Join(dir, "half")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open without new/ and tmp/: %v, want ErrNotExist", err)
	}
	s, err := Create(filepath.Join(dir, "half"), 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"cur", "new", "tmp"} {
		st, err := os.Stat(filepath.Join(s.Root, sub))
		if err != nil || st.Mode().Perm() != 0o700 && sub != "cur" {
			t.Errorf("%s: %v %v", sub, st, err)
		}
	}
}

func TestDeliverCRLFAndSizes(t *testing.T) {
	s := newTestStore(t)
	f := inbox(t, s)
	in := "Subject: x\r\n\r\nline one\r\nbare\rcr\nlf only\r\n\r"
	want := "Subject: x\n\nline one\nbare\rcr\nlf only\n\r"
	when := time.Unix(1700000000, 123456000)
	m, err := f.Deliver(strings.NewReader(in), DeliverOptions{Time: when, Host: "a/b:c"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(m.Path)
	if err != nil || string(got) != want {
		t.Fatalf("stored %q, %v; want %q", got, err, want)
	}
	lfs := int64(strings.Count(want, "\n"))
	if m.Size != int64(len(want)) || m.RFC822Size != int64(len(want))+lfs {
		t.Errorf("sizes S=%d W=%d, want %d %d", m.Size, m.RFC822Size, len(want), int64(len(want))+lfs)
	}
	wantName := fmt.Sprintf(`1700000000.M123456P%dQ1.a\057b\072c,S=%d,W=%d`, os.Getpid(), len(want), int64(len(want))+lfs)
	if m.Name != wantName || m.Unique != wantName || m.Dir != "new" {
		t.Errorf("name %q in %s, want %q in new", m.Name, m.Dir, wantName)
	}
	st, _ := os.Stat(m.Path)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode())
	}
	if n := dirNames(t, filepath.Join(s.Root, "tmp")); len(n) != 0 {
		t.Errorf("tmp/ not empty: %v", n)
	}
	// CRLF split across reads.
	m2, err := f.Deliver(io.MultiReader(strings.NewReader("a\r"), strings.NewReader("\nb\r"), strings.NewReader("c\r")), DeliverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(m2.Path); string(got) != "a\nb\rc\r" {
		t.Errorf("split CRLF stored as %q", got)
	}
}

type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestDeliverReaderFailsNothingVisible(t *testing.T) {
	s := newTestStore(t)
	f := inbox(t, s)
	boom := errors.New("connection reset")
	_, err := f.Deliver(&failingReader{data: bytes.Repeat([]byte("half a message\r\n"), 10000), err: boom}, DeliverOptions{})
	if !errors.Is(err, boom) {
		t.Fatalf("Deliver: %v, want the reader's error", err)
	}
	for _, d := range []string{"new", "cur", "tmp"} {
		if n := dirNames(t, filepath.Join(s.Root, d)); len(n) != 0 {
			t.Errorf("%s/ not empty after a failed delivery: %v", d, n)
		}
	}
	_, err = f.Deliver(strings.NewReader(strings.Repeat("x", 100)), DeliverOptions{MaxSize: 50})
	if !errors.Is(err, ErrMessageTooLarge) {
		t.Errorf("oversized: %v", err)
	}
	if n := dirNames(t, filepath.Join(s.Root, "tmp")); len(n) != 0 {
		t.Errorf("tmp/ not empty after a refused delivery: %v", n)
	}
}

func TestDeliverErrnoKept(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory permissions")
	}
	s := newTestStore(t)
	f := inbox(t, s)
	os.Chmod(filepath.Join(s.Root, "tmp"), 0o500)
	defer os.Chmod(filepath.Join(s.Root, "tmp"), 0o700)
	_, err := f.Deliver(strings.NewReader("x\n"), DeliverOptions{})
	if !errors.Is(err, syscall.EACCES) || !strings.Contains(err.Error(), filepath.Join(s.Root, "tmp")) {
		t.Errorf("Deliver into unwritable tmp/: %v, want EACCES naming the path", err)
	}
}

func TestDeliverErrnoKeptAsRoot(t *testing.T) {
	// Root ignores permissions, so make tmp/ a file: ENOTDIR must still
	// be findable by the caller, with the path in the message.
	s := newTestStore(t)
	f := inbox(t, s)
	os.Remove(filepath.Join(s.Root, "tmp"))
	os.WriteFile(filepath.Join(s.Root, "tmp"), nil, 0o600)
	_, err := f.Deliver(strings.NewReader("x\n"), DeliverOptions{})
	var errno syscall.Errno
	if !errors.As(err, &errno) || errno != syscall.ENOTDIR || !strings.Contains(err.Error(), s.Root) {
		t.Errorf("Deliver: %v, want ENOTDIR with the path", err)
	}
}

func TestFlagsAndCur(t *testing.T) {
	s := newTestStore(t)
	f := inbox(t, s)
	m, err := f.Deliver(strings.NewReader("hello\n"), DeliverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m2, err := f.MoveToCur(m.Unique)
	if err != nil || m2.Dir != "cur" || m2.Name != m.Unique+":2," || m2.Unique != m.Unique {
		t.Fatalf("MoveToCur: %+v %v", m2, err)
	}
	m3, err := f.SetFlags(m.Unique, []string{`\Deleted`, `\Seen`, "kb", "ka", `\Answered`, `\seen`, `\Flagged`})
	if err != nil || m3.letters != "FRSTab" || !slices.Equal(m3.Flags, []string{`\Flagged`, `\Answered`, `\Seen`, `\Deleted`, "kb", "ka"}) || m3.Name != m.Unique+":2,FRSTab" {
		t.Fatalf("SetFlags: %+v %v", m3, err)
	}
	if _, err := f.SetFlags(m.Unique, []string{`\X`}); err == nil {
		t.Error("SetFlags accepted X")
	}
	// Someone else renames the file: SetFlags finds it by its unique name.
	os.Rename(m3.Path, filepath.Join(s.Root, "cur", m.Unique+":2,S"))
	m4, err := f.SetFlags(m.Unique, []string{`\Draft`})
	if err != nil || m4.letters != "D" {
		t.Fatalf("SetFlags after a foreign rename: %+v %v", m4, err)
	}
	if n := dirNames(t, filepath.Join(s.Root, "cur")); len(n) != 1 || n[0] != m.Unique+":2,D" {
		t.Errorf("cur/ = %v", n)
	}
	m5, err := f.Deliver(strings.NewReader("x\n"), DeliverOptions{Flags: []string{`\Seen`, `\Answered`}})
	if err != nil || m5.Dir != "cur" || m5.letters != "RS" {
		t.Errorf("Deliver with flags: %+v %v", m5, err)
	}
	r, om, err := f.Open(m.Unique)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r)
	r.Close()
	if string(b) != "hello\n" || om.letters != "D" {
		t.Errorf("Open: %q %+v", b, om)
	}
	if err := f.Remove(m.Unique); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.Open(m.Unique); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open after Remove: %v", err)
	}
	if _, err := f.SetFlags(m.Unique, []string{`\Seen`}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("SetFlags after Remove: %v", err)
	}
}

func TestKeywords(t *testing.T) {
	s := newTestStore(t)
	f := inbox(t, s)
	k, err := f.Keywords()
	if err != nil || len(k.List()) != 0 {
		t.Fatal(k, err)
	}
	if k, err = f.AddKeywords("$Forwarded", "Junk", "$Forwarded"); err != nil {
		t.Fatal(err)
	}
	if l, ok := k.Letter("Junk"); !ok || l != 'b' {
		t.Errorf("Junk -> %c %v", l, ok)
	}
	k2, err := f.Keywords()
	if err != nil {
		t.Fatal(err)
	}
	if kw, ok := k2.Keyword('a'); !ok || kw != "$Forwarded" {
		t.Errorf("a -> %q %v", kw, ok)
	}
	if _, err := f.AddKeywords("bad keyword"); err == nil {
		t.Error("a keyword with a space was accepted")
	}
	var many []string
	for i := range 24 {
		many = append(many, fmt.Sprintf("kw%d", i))
	}
	if _, err := f.AddKeywords(many...); err != nil {
		t.Fatal(err)
	}
	if _, err := f.AddKeywords("one-too-many"); !errors.Is(err, ErrTooManyKeywords) {
		t.Errorf("27th keyword: %v", err)
	}
	k3, _ := f.Keywords()
	if len(k3.List()) != 26 {
		t.Errorf("%d keywords, want 26", len(k3.List()))
	}
	// Flags carrying keyword letters round trip through a file name.
	m, _ := f.Deliver(strings.NewReader("x\n"), DeliverOptions{})
	lj, _ := k3.Letter("Junk")
	lf, _ := k3.Letter("$Forwarded")
	m, err = f.SetFlags(m.Unique, []string{`\Seen`, "Junk", "$Forwarded"})
	_, _ = lj, lf
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(m.Flags, " "); got != `\Seen $Forwarded Junk` || m.letters != "PSb" {
		t.Errorf("letters %q -> flags %q", m.letters, got)
	}
	if _, err := ParseKeywords(strings.NewReader("a x\na y\n")); err == nil {
		t.Error("a letter twice was accepted")
	}
}

func TestFolders(t *testing.T) {
	s := newTestStore(t)
	for _, n := range []string{"Sent", "Lists", "Lists.Go", "Lists.Go.Announce", "Entwürfe", "Tom & Jerry"} {
		if _, err := s.CreateFolder(n); err != nil {
			t.Fatal(n, err)
		}
	}
	if _, err := s.CreateFolder("Sent"); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second CreateFolder: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.Root, ".Entw&APw-rfe", "maildirfolder")); err != nil {
		t.Errorf("Entwürfe not stored in modified UTF-7 with its marker: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.Root, ".Tom &- Jerry", "cur")); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"", "a/b", "..", "a..b", ".a", "a.", "a\x01b", "a\u0085b", "../x", "\xff"} {
		if _, err := s.CreateFolder(bad); err == nil {
			t.Errorf("CreateFolder(%q) accepted", bad)
		}
	}
	got, err := s.Folders()
	want := []string{"INBOX", "Entwürfe", "Lists", "Lists.Go", "Lists.Go.Announce", "Sent", "Tom & Jerry"}
	if err != nil || strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("Folders = %q, %v; want %q", got, err, want)
	}
	if _, err := s.Folder("inbox"); err != nil {
		t.Error(err)
	}
	if _, err := s.Folder("Nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Folder(Nope): %v", err)
	}
	g, _ := s.Folder("Lists.Go")
	m, err := g.Deliver(strings.NewReader("go\n"), DeliverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RenameFolder("Lists", "Archiv.Listen"); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Folders()
	want = []string{"INBOX", "Archiv.Listen", "Archiv.Listen.Go", "Archiv.Listen.Go.Announce", "Entwürfe", "Sent", "Tom & Jerry"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("after rename: %q, want %q", got, want)
	}
	g2, err := s.Folder("Archiv.Listen.Go")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := g2.Open(m.Unique); err != nil {
		t.Errorf("message did not move with its folder: %v", err)
	}
	if err := s.RenameFolder("Sent", "Entwürfe"); !errors.Is(err, fs.ErrExist) {
		t.Errorf("rename onto an existing folder: %v", err)
	}
	if err := s.RenameFolder("Sent", "Sent.Old"); err == nil {
		t.Error("rename below itself accepted")
	}
	if err := s.RenameFolder("INBOX", "X"); err == nil {
		t.Error("rename of INBOX accepted")
	}
	if err := s.DeleteFolder("Archiv.Listen"); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Folders()
	want = []string{"INBOX", "Archiv.Listen.Go", "Archiv.Listen.Go.Announce", "Entwürfe", "Sent", "Tom & Jerry"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("after delete: %q, want %q", got, want)
	}
	if err := s.DeleteFolder("INBOX"); err == nil {
		t.Error("delete of INBOX accepted")
	}
	if err := s.DeleteFolder("Nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("delete of a missing folder: %v", err)
	}
	for _, n := range dirNames(t, s.Root) {
		if strings.HasPrefix(n, "..") {
			t.Errorf("leftover %s", n)
		}
	}
}

func TestCleanTmp(t *testing.T) {
	s := newTestStore(t)
	s.CreateFolder("Sent")
	now := time.Now()
	old := now.Add(-37 * time.Hour)
	for _, p := range []string{filepath.Join(s.Root, "tmp", "old1"), filepath.Join(s.Root, ".Sent", "tmp", "old2")} {
		os.WriteFile(p, []byte("x"), 0o600)
		os.Chtimes(p, old, old)
	}
	os.WriteFile(filepath.Join(s.Root, "tmp", "young"), []byte("x"), 0o600)
	os.MkdirAll(filepath.Join(s.Root, "..tern-trash.1.2.3", "cur"), 0o700)
	n, err := s.CleanTmp(now)
	if err != nil || n != 3 {
		t.Errorf("CleanTmp removed %d, %v; want 3", n, err)
	}
	if names := dirNames(t, filepath.Join(s.Root, "tmp")); len(names) != 1 || names[0] != "young" {
		t.Errorf("tmp/ = %v", names)
	}
}

func TestNameParsing(t *testing.T) {
	u, fl := splitName("1.M2P3Q4.h,S=10,W=12:2,RS")
	if u != "1.M2P3Q4.h,S=10,W=12" || fl != "RS" {
		t.Error(u, fl)
	}
	if s, w := nameSizes(u); s != 10 || w != 12 {
		t.Error(s, w)
	}
	if s, w := nameSizes("1.2.host"); s != -1 || w != -1 {
		t.Error(s, w)
	}
	a, b := parseArrival("5.M1P9Q9.h"), parseArrival("5.M1P9Q10.h")
	if !a.less(b) || b.less(a) {
		t.Error("Q9 must sort before Q10")
	}
	if !parseArrival("4.M999999P1Q1.h").less(parseArrival("5.M0P1Q1.h")) {
		t.Error("seconds first")
	}
}

func TestSizesFallback(t *testing.T) {
	s := newTestStore(t)
	f := inbox(t, s)
	os.WriteFile(filepath.Join(s.Root, "cur", "1234.5678.old-style:2,S"), []byte("a\nb\nc"), 0o600)
	msgs, err := f.Messages()
	if err != nil || len(msgs) != 1 {
		t.Fatal(msgs, err)
	}
	if m := msgs[0]; m.Size != 5 || m.RFC822Size != 7 || m.letters != "S" || m.UID != 1 {
		t.Errorf("%+v", m)
	}
}

// TestConcurrentFolder shares one Folder between goroutines (one IMAP
// process, several sessions); run with -race.
func TestConcurrentFolder(t *testing.T) {
	s := newTestStore(t)
	f := inbox(t, s)
	var done = make(chan error)
	for g := range 4 {
		go func() {
			var err error
			for i := 0; i < 30 && err == nil; i++ {
				var m Message
				if m, err = f.Deliver(strings.NewReader("x\n"), DeliverOptions{}); err != nil {
					break
				}
				if _, err = f.Messages(); err != nil {
					break
				}
				if _, err = f.SetFlags(m.Unique, []string{FlagSeen}); err != nil {
					break
				}
				if g%2 == 0 && i%3 == 0 {
					err = f.Remove(m.Unique)
				}
			}
			done <- err
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	l, err := f.Sync()
	if err != nil || l.Len() != 4*30-2*10 || l.Next != 4*30+1 {
		t.Errorf("%d messages, next %d, %v", l.Len(), l.Next, err)
	}
}

func TestRenameAll(t *testing.T) {
	s := newTestStore(t)
	f := inbox(t, s)
	var us []string
	for i := range 5 {
		m, err := f.Deliver(strings.NewReader(fmt.Sprintf("message %d\n", i)), DeliverOptions{})
		if err != nil {
			t.Fatal(err)
		}
		us = append(us, m.Unique)
	}
	if _, err := f.Messages(); err != nil {
		t.Fatal(err)
	}
	// Behind the folder's back: one message removed, one renamed with a
	// flag, so the names it last read are wrong for both.
	os.Remove(filepath.Join(s.Root, "new", us[1]))
	os.Rename(filepath.Join(s.Root, "new", us[2]), filepath.Join(s.Root, "cur", us[2]+":2,F"))
	stale := make([]known, len(us))
	for i, u := range us {
		stale[i] = known{name: u, new: true}
	}
	if _, err := f.renameKnown(stale, func(old string) string { return old }); err != nil {
		t.Fatalf("renameKnown: %v", err)
	}
	want := []string{us[0] + ":2,", us[2] + ":2,F", us[3] + ":2,", us[4] + ":2,"}
	sort.Strings(want)
	if got := dirNames(t, filepath.Join(s.Root, "cur")); !slices.Equal(got, want) {
		t.Errorf("cur/ after moving all = %v, want %v", got, want)
	}
	if got := dirNames(t, filepath.Join(s.Root, "new")); len(got) != 0 {
		t.Errorf("new/ after moving all = %v", got)
	}
	// Seen added to the flags on disk now, the removed one skipped.
	os.Rename(filepath.Join(s.Root, "cur", us[3]+":2,"), filepath.Join(s.Root, "cur", us[3]+":2,R"))
	out, err := f.renameKnown(stale, lettersAdd("S"))
	if err != nil {
		t.Fatalf("adding S: %v", err)
	}
	if out[1].name != "" || out[3].name != us[3]+":2,RS" {
		t.Errorf("renameKnown told %+v", out)
	}
	want = []string{us[0] + ":2,S", us[2] + ":2,FS", us[3] + ":2,RS", us[4] + ":2,S"}
	sort.Strings(want)
	if got := dirNames(t, filepath.Join(s.Root, "cur")); !slices.Equal(got, want) {
		t.Errorf("cur/ after adding S = %v, want %v", got, want)
	}
	// The index followed every rename: no directory need be read again.
	msgs, err := f.Messages()
	if err != nil || len(msgs) != 4 {
		t.Fatalf("Messages: %d %v", len(msgs), err)
	}
	for _, m := range msgs {
		if !m.HasFlag(FlagSeen) || m.Dir != "cur" {
			t.Errorf("index after renames: %+v", m)
		}
	}
}
