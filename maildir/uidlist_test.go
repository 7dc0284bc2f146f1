package maildir

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func deliverN(t testing.TB, f *Folder, n int, start time.Time) []Message {
	t.Helper()
	var ms []Message
	for i := range n {
		m, err := f.Deliver(strings.NewReader(fmt.Sprintf("Subject: %d\n\nbody\n", i)), DeliverOptions{Time: start.Add(time.Duration(i) * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	return ms
}

func TestSyncArrivalOrderAndNoReuse(t *testing.T) {
	s := newTestStore(t)
	f := inbox(t, s)
	start := time.Unix(1700000000, 0)
	// Delivered out of order in time: UIDs follow the time in the names.
	late := deliverN(t, f, 1, start.Add(time.Hour))[0]
	early := deliverN(t, f, 3, start)
	l, err := f.Sync()
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range early {
		if uid, ok := l.UID(m.Unique); !ok || uid != uint32(i+1) {
			t.Errorf("early[%d] has UID %d %v, want %d", i, uid, ok, i+1)
		}
	}
	if uid, _ := l.UID(late.Unique); uid != 4 || l.Next != 5 {
		t.Errorf("late UID %d next %d", uid, l.Next)
	}
	if u, ok := l.Unique(2); !ok || u != early[1].Unique {
		t.Errorf("Unique(2) = %q %v", u, ok)
	}
	validity := l.Validity
	if err := f.Remove(late.Unique); err != nil {
		t.Fatal(err)
	}
	if _, err := f.SetFlags(early[0].Unique, []string{FlagSeen}); err != nil {
		t.Fatal(err)
	}
	next := deliverN(t, f, 1, start.Add(2*time.Hour))[0]
	msgs, err := f.Messages()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range msgs {
		got = append(got, fmt.Sprintf("%d%s", m.UID, m.letters))
	}
	if strings.Join(got, " ") != "1S 2 3 5" {
		t.Errorf("messages %v, want UIDs 1S 2 3 5 (4 expunged, never reused)", got)
	}
	l, _ = f.UIDList()
	if l.Validity != validity || l.Next != 6 || l.Len() != 4 {
		t.Errorf("list V%d N%d len %d", l.Validity, l.Next, l.Len())
	}
	if uid, _ := l.UID(next.Unique); uid != 5 {
		t.Errorf("new message UID %d", uid)
	}
	// An index lost outright gets a new, larger UIDVALIDITY even within
	// the same second.
	os.Remove(f.indexPath())
	l2, err := f.Sync()
	if err != nil || l2.Validity <= validity || l2.Len() != 4 {
		t.Errorf("rebuilt V%d (was %d) len %d %v", l2.Validity, validity, l2.Len(), err)
	}
	// A damaged index is moved aside and rebuilt with a larger one, seen
	// by a second Folder value (another process) too.
	block := "- 77\n"
	os.WriteFile(f.indexPath(), []byte(fmt.Sprintf("%s V%d N6 G0123456789abcdef\n%s. %d %08x\n", indexMagic, l2.Validity, block, len(block), crc32.Checksum([]byte(block), crcTable()))), 0o600)
	f2 := inbox(t, s)
	l3, err := f2.Sync()
	if err != nil || l3.Validity <= l2.Validity {
		t.Errorf("after damage V%d (was %d) %v", l3.Validity, l2.Validity, err)
	}
	broken, _ := filepath.Glob(f.indexPath() + ".broken.*")
	if len(broken) != 1 {
		t.Errorf("damaged list not kept aside: %v", broken)
	}
}

func TestParseUIDList(t *testing.T) {
	good := "tern-uidlist 1 V17 N9\n1 a\n5 b\n8 c\n"
	l, err := ParseUIDList(strings.NewReader(good))
	if err != nil || l.Validity != 17 || l.Next != 9 || l.Len() != 3 {
		t.Fatal(l, err)
	}
	var b bytes.Buffer
	l.WriteTo(&b)
	if b.String() != good {
		t.Errorf("WriteTo = %q", b.String())
	}
	for _, bad := range []string{
		"",
		"tern-uidlist 1 V17 N9\n1 a",        // cut short
		"tern-uidlist 1 V17 N9\n5 a\n1 b\n", // out of order
		"tern-uidlist 1 V17 N9\n9 a\n",      // not below next
		"tern-uidlist 1 V17 N9\n1 a\n2 a\n", // twice
		"tern-uidlist 1 V0 N9\n",
		"tern-uidlist 1 V17 N0\n",
		"tern-uidlist 1 V17 N09\n",
		"tern-uidlist 2 V17 N9\n",
		"tern-uidlist 1 V17 N9\n0 a\n",
		"tern-uidlist 1 V17 N9\n1 a b\n",
		"tern-uidlist 1 V17 N9\n+1 a\n",
		"tern-uidlist 1 V17 N99999999999\n",
	} {
		if _, err := ParseUIDList(strings.NewReader(bad)); !errors.Is(err, ErrCorruptUIDList) {
			t.Errorf("ParseUIDList(%q) = %v, want ErrCorruptUIDList", bad, err)
		}
	}
}

func FuzzParseUIDList(f *testing.F) {
	f.Add([]byte("tern-uidlist 1 V17 N9\n1 a\n5 b\n8 c\n"))
	f.Add([]byte("tern-uidlist 1 V17 N9\n1 a"))
	f.Add([]byte("tern-uidlist 1 V4294967295 N4294967295\n4294967294 x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ParseUIDList(bytes.NewReader(data))
		if err != nil {
			return
		}
		var last uint32
		seen := map[string]bool{}
		for _, e := range l.entries {
			if e.UID <= last || e.UID >= l.Next || seen[e.Unique] {
				t.Fatalf("accepted a bad list: %+v", l)
			}
			last = e.UID
			seen[e.Unique] = true
		}
		var b bytes.Buffer
		l.WriteTo(&b)
		if !bytes.Equal(b.Bytes(), data) {
			t.Fatalf("round trip %q -> %q", data, b.Bytes())
		}
	})
}

// FuzzIndexGarbage puts bytes in place of a folder's index: Sync must
// either keep an index that parses or rebuild with a new UIDVALIDITY, and
// never give a UID that the index had already passed under the old one.
func FuzzIndexGarbage(f *testing.F) {
	f.Add([]byte("garbage"))
	f.Add([]byte(indexMagic + " V1 N2 G0000000000000000\n"))
	f.Add([]byte(indexMagic + " V4000000000 N3 G0000000000000000\n+ 1 n 1 3 0 x\n. 16 00000000\n"))
	f.Add([]byte(indexMagic + " V5 N3 G0000000000000000\n- 1\n. 4 ee7e6dd5\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newTestStore(t)
		fo := inbox(t, s)
		deliverN(t, fo, 2, time.Unix(1700000000, 0))
		l1, err := fo.Sync()
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(fo.indexPath(), data, 0o600)
		fo2 := inbox(t, s) // a fresh process's view
		l2, err := fo2.Sync()
		if err != nil {
			return
		}
		if l2.Len() != 2 {
			t.Fatalf("index after Sync has %d messages, want 2", l2.Len())
		}
		x := &index{next: 1}
		validity, next, _, hl, herr := parseIndexHeader(data)
		if herr == nil {
			_, herr = x.applyBlocks(data[hl:])
		}
		if herr == nil {
			if l2.Validity != validity || l2.Next < max(next, x.next) {
				t.Fatalf("a good index was replaced: V%d N%d -> %+v", validity, next, l2)
			}
			return
		}
		if l2.Validity == l1.Validity {
			t.Fatalf("rebuilt with the old UIDVALIDITY %d", l1.Validity)
		}
	})
}

// TestIndexFromUIDList: a folder that an older tern kept a tern-uidlist
// for keeps its UIDVALIDITY and UIDs.
func TestIndexFromUIDList(t *testing.T) {
	s := newTestStore(t)
	f := inbox(t, s)
	ms := deliverN(t, f, 3, time.Unix(1700000000, 0))
	list := fmt.Sprintf("tern-uidlist 1 V1234 N40\n7 %s\n9 %s\n", ms[0].Unique, ms[2].Unique)
	if err := os.WriteFile(f.uidListPath(), []byte(list), 0o600); err != nil {
		t.Fatal(err)
	}
	msgs, err := f.Messages()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range msgs {
		got = append(got, fmt.Sprintf("%d:%s", m.UID, m.Unique))
	}
	want := []string{"7:" + ms[0].Unique, "9:" + ms[2].Unique, "40:" + ms[1].Unique}
	if !slices.Equal(got, want) {
		t.Errorf("messages %v, want %v", got, want)
	}
	if l, _ := f.UIDList(); l.Validity != 1234 || l.Next != 41 {
		t.Errorf("V%d N%d, want V1234 N41", l.Validity, l.Next)
	}
}

// TestIndexFromDovecotAndCourier: a folder another IMAP server kept UIDs
// for keeps its UIDVALIDITY, UIDs and keyword letters when tern makes its
// index.
func TestIndexFromDovecotAndCourier(t *testing.T) {
	for _, tc := range []struct {
		file, list string
	}{
		{dovecotUIDList, "3 V1275660208 N25022 G3085f01b7f11094c501100008c4a11c1\n7 :%s\n9 W2048 G0123 :%s\n"},
		{courierUIDList, "1 1275660208 25022\n7 %s\n9 %s:2,S\n"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			s := newTestStore(t)
			f := inbox(t, s)
			ms := deliverN(t, f, 3, time.Unix(1700000000, 0))
			// Dovecot had given the second message the keyword Junk (b).
			os.Rename(ms[1].Path, filepath.Join(s.Root, "cur", ms[1].Unique+":2,Sb"))
			os.WriteFile(filepath.Join(s.Root, dovecotKeywords), []byte("0 $Forwarded\n1 Junk\n"), 0o600)
			list := fmt.Sprintf(tc.list, ms[0].Unique, ms[1].Unique)
			os.WriteFile(filepath.Join(s.Root, tc.file), []byte(list), 0o600)
			msgs, err := f.Messages()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range msgs {
				got = append(got, fmt.Sprintf("%d %v", m.UID, m.Flags))
			}
			want := []string{"7 []", "9 [\\Seen Junk]", "25022 []"}
			if !slices.Equal(got, want) {
				t.Errorf("messages %q, want %q", got, want)
			}
			if l, _ := f.UIDList(); l.Validity != 1275660208 || l.Next != 25023 {
				t.Errorf("V%d N%d, want V1275660208 N25023", l.Validity, l.Next)
			}
		})
	}
	// A list tern cannot read whole is not half trusted.
	for _, bad := range []string{
		"3 V5 N3\n2 :a\n1 :b\n",
		"3 V5 N3\n1 :a\n2 :a\n",
		"3 N3\n1 :a\n",
		"2 V5 N3\n1 :a\n",
		"1 5 3\n1 a b\n4 c\n",
	} {
		if _, err := ParseForeignUIDList(strings.NewReader(bad)); !errors.Is(err, ErrCorruptUIDList) {
			t.Errorf("ParseForeignUIDList(%q): %v, want ErrCorruptUIDList", bad, err)
		}
	}
}

func FuzzParseForeignUIDList(f *testing.F) {
	f.Add([]byte("3 V1275660208 N25022 G3085f01b7f11094c501100008c4a11c1\n7 :a.b,S=1\n9 W2048 :c:2,S\n"))
	f.Add([]byte("1 1275660208 25022\n7 x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ParseForeignUIDList(bytes.NewReader(data))
		if err != nil {
			return
		}
		var last uint32
		for _, e := range l.Entries() {
			if e.UID <= last || e.UID >= l.Next || !validUnique(e.Unique) {
				t.Fatalf("accepted %q: entry %+v", data, e)
			}
			last = e.UID
		}
	})
}
