package maildir

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The stress test runs several OS processes at once on one Maildir, each
// delivering, listing, flagging, moving and expunging, half of them
// pretending to be a second host as over NFS. Each logs what it saw:
//
//	O <validity> <uid> <unique>   a (UID, unique) pair it observed
//	D <unique>                    a delivery of its own, in order
//	X <unique>                    an expunge it did
//
// and the test checks the logs against each other and the final list.

const stressWorkers = 6

func stressDuration(t *testing.T) time.Duration {
	if v := os.Getenv("TERN_STRESS_SECONDS"); v != "" {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("TERN_STRESS_SECONDS=%q: %v", v, err)
		}
		return time.Duration(n * float64(time.Second))
	}
	if testing.Short() {
		return 3 * time.Second
	}
	return 20 * time.Second
}

func TestStress(t *testing.T) {
	if os.Getenv("TERN_STRESS_ROLE") != "" {
		t.Skip("in a worker")
	}
	dur := stressDuration(t)
	dir := t.TempDir()
	s, err := Create(filepath.Join(dir, "Maildir"), 0)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, stressWorkers)
	outs := make([][]byte, stressWorkers)
	for i := range stressWorkers {
		host := "hosta.example"
		if i%2 == 1 {
			host = "hostb.example"
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestStressWorker$", "-test.v")
		cmd.Env = append(os.Environ(),
			"TERN_STRESS_ROLE=worker",
			"TERN_STRESS_DIR="+s.Root,
			"TERN_STRESS_HOST="+host,
			fmt.Sprintf("TERN_STRESS_LOG=%s/log.%d", dir, i),
			fmt.Sprintf("TERN_STRESS_FOR=%d", dur.Milliseconds()))
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = cmd.CombinedOutput()
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("worker %d: %v\n%s", i, err, outs[i])
		}
	}

	f := inbox(t, s)
	final, err := f.Sync()
	if err != nil {
		t.Fatal(err)
	}
	uidOf := map[string]uint32{}
	uniqueOf := map[uint32]string{}
	observations, ops := 0, 0
	observe := func(validity, uid uint32, unique, where string) {
		observations++
		if validity != final.Validity {
			t.Errorf("%s: UIDVALIDITY %d, final %d", where, validity, final.Validity)
		}
		if u, ok := uniqueOf[uid]; ok && u != unique {
			t.Errorf("%s: UID %d given to %s and %s", where, uid, u, unique)
		}
		if id, ok := uidOf[unique]; ok && id != uid {
			t.Errorf("%s: %s has UIDs %d and %d", where, unique, id, uid)
		}
		uniqueOf[uid], uidOf[unique] = unique, uid
	}
	expunged := map[string]bool{}
	delivered := make([][]string, stressWorkers)
	for i := range stressWorkers {
		file, err := os.Open(fmt.Sprintf("%s/log.%d", dir, i))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(file)
		for sc.Scan() {
			fl := strings.Fields(sc.Text())
			switch fl[0] {
			case "O":
				v, _ := strconv.ParseUint(fl[1], 10, 32)
				uid, _ := strconv.ParseUint(fl[2], 10, 32)
				observe(uint32(v), uint32(uid), fl[3], fmt.Sprintf("worker %d", i))
			case "D":
				delivered[i] = append(delivered[i], fl[1])
			case "X":
				expunged[fl[1]] = true
			case "N":
				n, _ := strconv.Atoi(fl[1])
				ops += n
			}
		}
		file.Close()
	}
	for _, e := range final.Entries() {
		observe(final.Validity, e.UID, e.Unique, "final list")
		if expunged[e.Unique] {
			t.Errorf("expunged %s still listed with UID %d", e.Unique, e.UID)
		}
	}
	// Expunged UIDs stay behind Next and are not in the final list.
	for u := range expunged {
		if uid, ok := uidOf[u]; ok {
			if uid >= final.Next {
				t.Errorf("expunged UID %d not below next UID %d", uid, final.Next)
			}
			if fu, ok := final.Unique(uid); ok {
				t.Errorf("expunged UID %d reused for %s", uid, fu)
			}
		}
	}
	// Nothing on disk without a UID.
	names, err := f.scan()
	if err != nil {
		t.Fatal(err)
	}
	for u := range names {
		if _, ok := final.UID(u); !ok {
			t.Errorf("%s is on disk without a UID after the final Sync", u)
		}
	}
	// Each worker's own deliveries got increasing UIDs.
	total := 0
	for i, ds := range delivered {
		total += len(ds)
		var last uint32
		for _, u := range ds {
			uid, ok := uidOf[u]
			if !ok {
				if !expunged[u] {
					t.Errorf("worker %d's %s never got a UID", i, u)
				}
				continue
			}
			if uid <= last {
				t.Errorf("worker %d: %s got UID %d after UID %d", i, u, uid, last)
			}
			last = uid
		}
	}
	t.Logf("%d processes for %v: %d operations, %d deliveries, %d expunges, %d observations of %d UIDs; %d left, next UID %d",
		stressWorkers, dur, ops, total, len(expunged), observations, len(uidOf), final.Len(), final.Next)
	if total == 0 || len(expunged) == 0 {
		t.Error("the workers did nothing")
	}
}

// TestStressWorker is one worker process of TestStress.
func TestStressWorker(t *testing.T) {
	if os.Getenv("TERN_STRESS_ROLE") != "worker" {
		t.Skip("run by TestStress")
	}
	s, err := Open(os.Getenv("TERN_STRESS_DIR"))
	if err != nil {
		t.Fatal(err)
	}
	s.Hostname = os.Getenv("TERN_STRESS_HOST")
	ms, _ := strconv.Atoi(os.Getenv("TERN_STRESS_FOR"))
	logf, err := os.Create(os.Getenv("TERN_STRESS_LOG"))
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(logf)
	defer func() {
		w.Flush()
		logf.Close()
	}()
	f := inbox(t, s)
	seen := map[string]uint32{}
	see := func(validity, uid uint32, unique string) {
		if uid == 0 || seen[unique] == uid {
			return
		}
		seen[unique] = uid
		fmt.Fprintf(w, "O %d %d %s\n", validity, uid, unique)
	}
	var known []string
	pick := func() string {
		if len(known) == 0 {
			return ""
		}
		return known[rand.N(len(known))]
	}
	gone := func(err error) bool { return errors.Is(err, fs.ErrNotExist) }
	deadline := time.Now().Add(time.Duration(ms) * time.Millisecond)
	n := 0
	for ; time.Now().Before(deadline); n++ {
		switch r := rand.N(100); {
		case r < 30:
			m, err := f.Deliver(strings.NewReader(fmt.Sprintf("Subject: %d\r\n\r\n%s\r\n", n, strings.Repeat("x", rand.N(2000)))), DeliverOptions{})
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(w, "D %s\n", m.Unique)
			known = append(known, m.Unique)
		case r < 50:
			msgs, err := f.Messages()
			if err != nil {
				t.Fatal(err)
			}
			l, err := f.UIDList()
			if err != nil {
				t.Fatal(err)
			}
			known = known[:0]
			for _, m := range msgs {
				// The list read after Messages has the same or a
				// newer validity; log what Messages gave with the
				// validity at hand, checked against the final one.
				see(l.Validity, m.UID, m.Unique)
				known = append(known, m.Unique)
			}
		case r < 65:
			u := pick()
			if u == "" {
				continue
			}
			flags := [][]string{{FlagSeen}, {FlagAnswered, FlagSeen}, {FlagFlagged}, nil, {FlagSeen, "Junk"}, {FlagDraft, FlagFlagged, FlagSeen}}[rand.N(6)]
			if _, err := f.SetFlags(u, flags); err != nil && !gone(err) {
				t.Fatal(err)
			}
		case r < 70:
			if u := pick(); u != "" {
				if _, err := f.MoveToCur(u); err != nil && !gone(err) {
					t.Fatal(err)
				}
			}
		case r < 75:
			// Another mail reader (mutt) reads or flags a message:
			// a rename without tern's lock.
			u := pick()
			if u == "" {
				continue
			}
			for _, dir := range []string{"new", "cur"} {
				names, err := readDirNames(filepath.Join(s.Root, dir))
				if err != nil {
					t.Fatal(err)
				}
				for _, n := range names {
					if un, flags := splitName(n); un == u {
						to := u + ":2," + lettersAdd("F")(strings.ReplaceAll(flags, "F", ""))
						if hasLetter(flags, 'F') {
							to = u + ":2," + strings.ReplaceAll(flags, "F", "")
						}
						os.Rename(filepath.Join(s.Root, dir, n), filepath.Join(s.Root, "cur", to))
					}
				}
			}
		case r < 90:
			u := pick()
			if u == "" {
				continue
			}
			err := f.Remove(u)
			if err == nil {
				fmt.Fprintf(w, "X %s\n", u)
			} else if !gone(err) {
				t.Fatal(err)
			}
		case r < 95:
			if u := pick(); u != "" {
				file, m, err := f.Open(u)
				if err == nil {
					io.Copy(io.Discard, file)
					file.Close()
					if l, err := f.UIDList(); err == nil {
						see(l.Validity, m.UID, m.Unique)
					}
				} else if !gone(err) {
					t.Fatal(err)
				}
			}
		default:
			l, err := f.Sync()
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range l.entries {
				see(l.Validity, e.UID, e.Unique)
			}
		}
	}
	fmt.Fprintf(w, "N %d\n", n)
}
