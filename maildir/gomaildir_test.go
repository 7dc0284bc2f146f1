package maildir_test

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	gomaildir "github.com/emersion/go-maildir"
	"github.com/emersion/go-maildir/maildirpp"
	"github.com/tern-mail/tern/maildir"
)

// github.com/emersion/go-maildir is the independent reader and writer here:
// what tern writes it must read (every message, folder and flag), and what
// it writes (old-style names without S= and W=, its own keys, CRLF kept as
// given) tern must read.

func readAll(t *testing.T, r io.ReadCloser, err error) string {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func flagString(fl []gomaildir.Flag) string {
	var b strings.Builder
	for _, f := range fl {
		b.WriteRune(rune(f))
	}
	return b.String()
}

func TestGoMaildirReadsTern(t *testing.T) {
	root := filepath.Join(t.TempDir(), "Maildir")
	s, err := maildir.Create(root, 0)
	if err != nil {
		t.Fatal(err)
	}
	in := s.Inbox()
	texts := []string{"Subject: one\r\n\r\nfirst\r\n", "Subject: two\n\nsecond\n", "Subject: three\n\nthird\n"}
	var uniques []string
	for _, text := range texts {
		m, err := in.Deliver(strings.NewReader(text), maildir.DeliverOptions{})
		if err != nil {
			t.Fatal(err)
		}
		uniques = append(uniques, m.Unique)
	}
	v, err := in.View(false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Store([]uint32{2}, maildir.FlagsSet, []string{maildir.FlagSeen, maildir.FlagAnswered, maildir.KeywordForwarded, maildir.FlagFlagged, maildir.FlagDraft, maildir.FlagDeleted}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Store([]uint32{3}, maildir.FlagsAdd, []string{maildir.FlagSeen, "Junk"}); err != nil {
		t.Fatal(err)
	}
	lists, err := s.CreateFolder("Lists.Go")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := lists.Append(strings.NewReader("Subject: go\n\ngophers\n"), []string{maildir.FlagSeen}, time.Time{}, 0); err != nil {
		t.Fatal(err)
	}

	// go-maildir's view of the INBOX: the keys are tern's unique names,
	// the flags the maildir letters, keyword letters as they are.
	msgs, err := gomaildir.Dir(root).Messages()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{uniques[0]: "", uniques[1]: "DFPRST", uniques[2]: "Sa"}
	if len(msgs) != 3 {
		t.Fatalf("go-maildir sees %d messages in cur/, want 3", len(msgs))
	}
	for _, m := range msgs {
		flags, ok := want[m.Key()]
		if !ok {
			t.Errorf("go-maildir sees key %q, not one tern delivered", m.Key())
			continue
		}
		if got := flagString(m.Flags()); got != flags {
			t.Errorf("%s: go-maildir reads flags %q, want %q", m.Key(), got, flags)
		}
		r, err := m.Open()
		body := readAll(t, r, err)
		i := slices.Index(uniques, m.Key())
		if want := strings.ReplaceAll(texts[i], "\r\n", "\n"); body != want {
			t.Errorf("%s: go-maildir reads %q, want %q", m.Key(), body, want)
		}
	}
	// The folder, by go-maildir's Maildir++ name.
	dir, err := maildirpp.Join([]string{"Lists", "Go"})
	if err != nil {
		t.Fatal(err)
	}
	fm, err := gomaildir.Dir(filepath.Join(root, dir)).Messages()
	if err != nil || len(fm) != 1 || flagString(fm[0].Flags()) != "S" {
		t.Fatalf("go-maildir in %s: %v %v", dir, fm, err)
	}
	fr, err := fm[0].Open()
	if body := readAll(t, fr, err); body != "Subject: go\n\ngophers\n" {
		t.Errorf("go-maildir reads %q in the folder", body)
	}

	// go-maildir changes a flag and removes a message: tern's session
	// is told, the UIDs unchanged.
	for _, m := range msgs {
		switch m.Key() {
		case uniques[0]:
			if err := m.SetFlags([]gomaildir.Flag{gomaildir.FlagFlagged}); err != nil {
				t.Fatal(err)
			}
		case uniques[2]:
			if err := m.Remove(); err != nil {
				t.Fatal(err)
			}
		}
	}
	ch, err := v.Poll(true)
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.Expunged) != 1 || ch.Expunged[0].UID != 3 || len(ch.Flagged) != 1 || ch.Flagged[0].UID != 1 || !ch.Flagged[0].HasFlag(maildir.FlagFlagged) {
		t.Errorf("tern's session after go-maildir's changes: %+v", ch)
	}
}

func TestTernReadsGoMaildir(t *testing.T) {
	root := filepath.Join(t.TempDir(), "Maildir")
	d := gomaildir.Dir(root)
	if err := d.Init(); err != nil {
		t.Fatal(err)
	}
	// A message go-maildir puts in cur/ with flags, as an IMAP client
	// built on it would, with CRLF line ends, and one delivered to new/.
	created, w, err := d.Create([]gomaildir.Flag{gomaildir.FlagSeen, gomaildir.FlagReplied})
	if err != nil {
		t.Fatal(err)
	}
	crlf := "Subject: created\r\n\r\nwith CRLF\r\n"
	io.WriteString(w, crlf)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // a later key second or counter
	del, err := gomaildir.NewDelivery(root)
	if err != nil {
		t.Fatal(err)
	}
	lf := "Subject: delivered\n\nwith LF\n"
	io.WriteString(del, lf)
	if err := del.Close(); err != nil {
		t.Fatal(err)
	}
	n, err := gomaildir.Dir(root).UnseenCount()
	ents, _ := os.ReadDir(filepath.Join(root, "new"))
	if err != nil || n != 1 || len(ents) != 1 {
		t.Fatalf("go-maildir's delivery: %d in new/, %v", n, err)
	}
	delKey := ents[0].Name() // Delivery does not tell its key
	// A folder go-maildir made: no maildirfolder marker.
	arch := gomaildir.Dir(filepath.Join(root, ".Archive"))
	if err := arch.Init(); err != nil {
		t.Fatal(err)
	}
	if _, err := created.CopyTo(arch); err != nil {
		t.Fatal(err)
	}

	s, err := maildir.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	folders, err := s.Folders()
	if err != nil || !slices.Equal(folders, []string{"INBOX", "Archive"}) {
		t.Errorf("folders %q %v", folders, err)
	}
	v, err := s.Inbox().View(true)
	if err != nil {
		t.Fatal(err)
	}
	if v.Len() != 2 {
		t.Fatalf("tern sees %d messages, want 2", v.Len())
	}
	bodies := map[string]string{created.Key(): crlf, delKey: lf}
	v.Each(1, v.Len(), func(m maildir.Message) bool {
		body, ok := bodies[m.Unique]
		if !ok {
			t.Errorf("tern sees %q, not a key go-maildir made", m.Unique)
			return true
		}
		// Sizes measured from the file, the name has none; only a bare
		// LF counts twice in the RFC 822 size.
		wantRFC822 := int64(len(strings.ReplaceAll(strings.ReplaceAll(body, "\r\n", "\n"), "\n", "\r\n")))
		if m.Size != int64(len(body)) || m.RFC822Size != wantRFC822 {
			t.Errorf("%s: sizes %d %d, want %d %d", m.Unique, m.Size, m.RFC822Size, len(body), wantRFC822)
		}
		if m.Date.IsZero() || time.Since(m.Date) > time.Hour {
			t.Errorf("%s: internal date %v, want the file's mtime", m.Unique, m.Date)
		}
		f, err := v.Open(m.UID)
		if got := readAll(t, f, err); got != body {
			t.Errorf("%s: tern reads %q, want %q", m.Unique, got, body)
		}
		switch m.Unique {
		case created.Key():
			if !slices.Equal(m.Flags, []string{maildir.FlagAnswered, maildir.FlagSeen}) || m.Dir != "cur" {
				t.Errorf("go-maildir's flagged message: %+v", m)
			}
		case delKey:
			if len(m.Flags) != 0 || m.Dir != "new" {
				t.Errorf("go-maildir's delivery: %+v", m)
			}
		}
		return true
	})
	af, err := s.Folder("Archive")
	if err != nil {
		t.Fatal(err)
	}
	st, err := af.Status()
	if err != nil || st.Messages != 1 || st.Unseen != 0 {
		t.Errorf("Archive: %+v %v", st, err)
	}
	// And a message tern appends to go-maildir's folder, go-maildir reads.
	m, _, err := af.Append(strings.NewReader("Subject: back\n\nagain\n"), []string{maildir.FlagFlagged}, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	gm, err := arch.MessageByKey(m.Unique)
	if err != nil || flagString(gm.Flags()) != "F" {
		t.Fatalf("go-maildir finds tern's append: %v %v", gm, err)
	}
}
