package maildir

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func mustPoll(t *testing.T, v *View, allowExpunge bool) *Changes {
	t.Helper()
	ch, err := v.Poll(allowExpunge)
	if err != nil {
		t.Fatalf("Poll: %v", err)
	}
	return ch
}

func deliverText(t testing.TB, f *Folder, text string) Message {
	t.Helper()
	m, err := f.Deliver(strings.NewReader(text), DeliverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestIMAPSessionSketch walks through what an IMAP session does, with two
// sessions on one folder, as tern-imapd calls the API.
func TestIMAPSessionSketch(t *testing.T) {
	s := newTestStore(t)
	in := inbox(t, s)
	for i := range 3 {
		deliverText(t, in, fmt.Sprintf("Subject: %d\n\nbody %d\n", i, i))
	}

	// SELECT in session A: three messages, all \Recent to A alone,
	// moved to cur/.
	a, err := in.View(false)
	if err != nil {
		t.Fatal(err)
	}
	if a.Len() != 3 || a.Recent() != 3 || a.UIDNext() != 4 || a.UIDValidity() == 0 || a.FirstUnseen() != 1 {
		t.Fatalf("SELECT: len %d recent %d uidnext %d validity %d unseen %d", a.Len(), a.Recent(), a.UIDNext(), a.UIDValidity(), a.FirstUnseen())
	}
	if n := len(dirNames(t, filepath.Join(in.Path(), "new"))); n != 0 {
		t.Errorf("%d messages left in new/ after SELECT", n)
	}
	// EXAMINE in session B: none recent (A has them), read-only.
	b, err := in.View(true)
	if err != nil {
		t.Fatal(err)
	}
	if b.Len() != 3 || b.Recent() != 0 {
		t.Fatalf("EXAMINE: len %d recent %d", b.Len(), b.Recent())
	}
	if _, err := b.Store([]uint32{1}, FlagsAdd, []string{FlagSeen}); !errors.Is(err, ErrReadOnly) {
		t.Errorf("STORE after EXAMINE: %v, want ErrReadOnly", err)
	}
	if _, err := b.Expunge(nil); !errors.Is(err, ErrReadOnly) {
		t.Errorf("EXPUNGE after EXAMINE: %v, want ErrReadOnly", err)
	}

	// FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE): from the index.
	a.Each(1, a.Len(), func(m Message) bool {
		if m.Seq == 0 || m.UID != m.Seq || len(m.Flags) != 0 || m.RFC822Size <= m.Size || m.Date.IsZero() || !m.Recent {
			t.Errorf("FETCH: %+v", m)
		}
		return true
	})
	// FETCH BODY[]: the file.
	f, err := a.Open(2)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(f)
	f.Close()
	if string(body) != "Subject: 1\n\nbody 1\n" {
		t.Errorf("BODY[] of UID 2: %q", body)
	}

	// STORE 1 +FLAGS (\Seen Junk): A is told by the answer, B by its
	// next poll.
	got, err := a.Store([]uint32{1}, FlagsAdd, []string{`\seen`, "Junk"})
	if err != nil || len(got) != 1 || !slices.Equal(got[0].Flags, []string{FlagSeen, "Junk"}) {
		t.Fatalf("STORE: %+v %v", got, err)
	}
	if ch := mustPoll(t, a, true); !ch.Empty() {
		t.Errorf("A told of its own STORE: %+v", ch)
	}
	ch := mustPoll(t, b, false)
	if len(ch.Flagged) != 1 || ch.Flagged[0].UID != 1 || !ch.Flagged[0].HasFlag(FlagSeen) || ch.MailboxFlags == nil || !slices.Contains(ch.MailboxFlags, "Junk") {
		t.Errorf("B after A's STORE: %+v", ch)
	}

	// STORE 2:3 +FLAGS \Deleted, then EXPUNGE in A; B polls without
	// expunges allowed (a FETCH), then with.
	if _, err := a.Store([]uint32{2, 3}, FlagsAdd, []string{FlagDeleted}); err != nil {
		t.Fatal(err)
	}
	exp, err := a.Expunge([]uint32{3}) // UID EXPUNGE 3
	if err != nil || len(exp) != 1 || exp[0] != (Expunged{Seq: 3, UID: 3}) {
		t.Fatalf("UID EXPUNGE 3: %+v %v", exp, err)
	}
	exp, err = a.Expunge(nil)
	if err != nil || len(exp) != 1 || exp[0] != (Expunged{Seq: 2, UID: 2}) {
		t.Fatalf("EXPUNGE: %+v %v", exp, err)
	}
	ch = mustPoll(t, b, false)
	if len(ch.Expunged) != 0 || b.Len() != 3 || b.UID(3) != 3 {
		t.Errorf("B told of an expunge during FETCH: %+v, len %d", ch, b.Len())
	}
	ch = mustPoll(t, b, true)
	if !slices.Equal(ch.Expunged, []Expunged{{2, 2}, {2, 3}}) || ch.Exists != 1 || b.Len() != 1 {
		t.Errorf("B's expunges: %+v, len %d", ch, b.Len())
	}

	// A delivery while A idles: the watch fires and the poll has it.
	w, err := in.Watch(50 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	m4 := deliverText(t, in, "Subject: 4\n\nfour\n")
	select {
	case <-w.C:
	case <-time.After(5 * time.Second):
		t.Fatal("the watch did not fire for a delivery")
	}
	ch = mustPoll(t, a, true)
	if len(ch.Added) != 1 || ch.Added[0].UID != 4 || ch.Added[0].Unique != m4.Unique || ch.Exists != 2 || ch.Recent != 2 || a.UIDNext() != 5 {
		t.Errorf("A after a delivery: %+v uidnext %d", ch, a.UIDNext())
	}
	ch = mustPoll(t, b, true)
	if len(ch.Added) != 1 || ch.Added[0].Recent || ch.Exists != 2 {
		t.Errorf("B after a delivery: %+v", ch)
	}

	// APPEND to a folder, with flags and a date: APPENDUID.
	sent, err := s.CreateFolder("Sent")
	if err != nil {
		t.Fatal(err)
	}
	date := time.Date(2020, 2, 3, 4, 5, 6, 0, time.UTC)
	am, validity, err := sent.Append(strings.NewReader("Subject: sent\r\n\r\nhi\r\n"), []string{FlagSeen, "$Forwarded"}, date, 0)
	if err != nil || am.UID != 1 || validity == 0 || !am.HasFlag(FlagSeen) || !am.HasFlag(KeywordForwarded) {
		t.Fatalf("APPEND: %+v %d %v", am, validity, err)
	}
	st, err := sent.Status()
	if err != nil || st.Messages != 1 || st.UIDNext != 2 || st.Unseen != 0 || st.UIDValidity != validity || st.Size != am.RFC822Size {
		t.Errorf("STATUS Sent: %+v %v", st, err)
	}
	sv, err := sent.View(false)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := sv.Message(1); !m.Date.Equal(date) || m.Recent {
		t.Errorf("appended message: %+v, want date %v, not recent", m, date)
	}

	// COPY 1:* to Sent: COPYUID with the new UIDs in source order,
	// flags (keywords too) kept.
	res, err := a.Copy([]uint32{4, 1}, sent)
	if err != nil || res.UIDValidity != validity || !slices.Equal(res.SourceUIDs, []uint32{1, 4}) || !slices.Equal(res.DestUIDs, []uint32{2, 3}) {
		t.Fatalf("COPY: %+v %v", res, err)
	}
	ch = mustPoll(t, sv, true)
	if len(ch.Added) != 2 || !slices.Equal(ch.Added[0].Flags, []string{FlagSeen, "Junk"}) {
		t.Errorf("Sent after COPY: %+v", ch)
	}

	// MOVE 4 to a new folder: COPYUID and the EXPUNGE in A.
	arch, err := s.CreateFolder("Archive")
	if err != nil {
		t.Fatal(err)
	}
	res, exp, err = a.Move([]uint32{4}, arch)
	if err != nil || len(res.DestUIDs) != 1 || res.DestUIDs[0] != 1 || !slices.Equal(exp, []Expunged{{2, 4}}) || a.Len() != 1 {
		t.Fatalf("MOVE: %+v %+v %v, len %d", res, exp, err, a.Len())
	}
	ch = mustPoll(t, b, true)
	if !slices.Equal(ch.Expunged, []Expunged{{2, 4}}) {
		t.Errorf("B after A's MOVE: %+v", ch)
	}
	av, err := arch.View(true)
	if err != nil || av.Len() != 1 {
		t.Fatalf("Archive after MOVE: %v", err)
	}

	// A flag change by another program (a rename in cur/) reaches both.
	m1, _ := a.Message(1)
	os.Rename(m1.Path, filepath.Join(in.Path(), "cur", m1.Unique+":2,FS"))
	for _, v := range []*View{a, b} {
		ch = mustPoll(t, v, true)
		if len(ch.Flagged) != 1 || !slices.Equal(ch.Flagged[0].Flags, []string{FlagFlagged, FlagSeen}) {
			t.Errorf("after a foreign flag change: %+v", ch)
		}
	}
	// STORE FLAGS (\Draft) replaces the system flags, keeps nothing else.
	got, err = a.Store([]uint32{1}, FlagsSet, []string{FlagDraft})
	if err != nil || !slices.Equal(got[0].Flags, []string{FlagDraft}) {
		t.Errorf("STORE FLAGS: %+v %v", got, err)
	}
	if _, err := a.Store([]uint32{1}, FlagsAdd, []string{`\Recent`}); err == nil {
		t.Error(`STORE \Recent accepted`)
	}
}

func TestSubscriptions(t *testing.T) {
	s := newTestStore(t)
	for _, n := range []string{"Lists.Go", "inbox", "Sent", "Lists.Go"} {
		if err := s.Subscribe(n); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Subscribe("a..b"); err == nil {
		t.Error("a bad name was subscribed")
	}
	if err := s.Unsubscribe("Sent"); err != nil {
		t.Fatal(err)
	}
	if err := s.Unsubscribe("never"); err != nil {
		t.Fatal(err)
	}
	got, err := s.Subscriptions()
	if err != nil || !slices.Equal(got, []string{"INBOX", "Lists.Go"}) {
		t.Errorf("subscriptions %q %v", got, err)
	}
}

func TestWatchSeesFlagChangeAndStops(t *testing.T) {
	s := newTestStore(t)
	in := inbox(t, s)
	m := deliverText(t, in, "x\n")
	w, err := in.Watch(time.Hour) // inotify alone
	if err != nil {
		t.Fatal(err)
	}
	os.Rename(m.Path, filepath.Join(in.Path(), "cur", m.Unique+":2,S"))
	select {
	case <-w.C:
	case <-time.After(5 * time.Second):
		t.Fatal("no event for a rename into cur/")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w.Close()
}

// TestCopyMoveFollowRenames: COPY and MOVE of messages another program
// renamed (flagged, read) since the session's last poll find them, with
// their flags as they are now, and MOVE records their leaving.
func TestCopyMoveFollowRenames(t *testing.T) {
	s := newTestStore(t)
	in := s.Inbox()
	for i := range 4 {
		deliverText(t, in, fmt.Sprintf("Subject: %d\n\nbody\n", i))
	}
	v, err := in.View(false)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := s.CreateFolder("Archive")
	if err != nil {
		t.Fatal(err)
	}
	// Behind the view's back: 1 and 3 flagged by mutt, 4 removed.
	for _, seq := range []uint32{1, 3} {
		m, _ := v.Message(seq)
		os.Rename(m.Path, filepath.Join(in.Path(), "cur", m.Unique+":2,F"))
	}
	m4, _ := v.Message(4)
	os.Remove(m4.Path)
	res, err := v.Copy([]uint32{1}, dst)
	if err != nil || !slices.Equal(res.DestUIDs, []uint32{1}) {
		t.Fatalf("COPY: %+v %v", res, err)
	}
	res, exp, err := v.Move([]uint32{2, 3, 4}, dst)
	if err != nil || !slices.Equal(res.SourceUIDs, []uint32{2, 3}) || !slices.Equal(res.DestUIDs, []uint32{2, 3}) {
		t.Fatalf("MOVE: %+v %v", res, err)
	}
	if !slices.Equal(exp, []Expunged{{2, 2}, {2, 3}}) {
		t.Errorf("MOVE's expunges: %+v", exp)
	}
	got, err := dst.Messages()
	if err != nil || len(got) != 3 || !got[0].HasFlag(FlagFlagged) || got[1].HasFlag(FlagFlagged) || !got[2].HasFlag(FlagFlagged) {
		t.Errorf("Archive: %+v %v", got, err)
	}
	// The source's index holds what is left: 1, and 4 until a poll
	// finds it gone.
	ch, err := v.Poll(true)
	if err != nil || !slices.Equal(ch.Expunged, []Expunged{{2, 4}}) || v.Len() != 1 {
		t.Errorf("INBOX after: %+v %v, %d left", ch, err, v.Len())
	}
	if left, _ := in.Messages(); len(left) != 1 || left[0].UID != 1 {
		t.Errorf("INBOX's index: %+v", left)
	}
}

// TestWatchByStamps: without inotify (a change on another host over NFS
// reports nothing), the watch still fires within its interval.
func TestWatchByStamps(t *testing.T) {
	s := newTestStore(t)
	in := s.Inbox()
	w, err := in.watch(20*time.Millisecond, false)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	time.Sleep(30 * time.Millisecond)
	deliverText(t, in, "x\n")
	select {
	case <-w.C:
	case <-time.After(5 * time.Second):
		t.Fatal("the stamps did not tell of a delivery")
	}
	select {
	case <-w.C:
		t.Error("the watch fired again with nothing changed")
	case <-time.After(100 * time.Millisecond):
	}
}
