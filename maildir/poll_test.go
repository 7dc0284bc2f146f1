package maildir

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestViewPollUnderLoad: while others deliver, flag, expunge and rename
// behind the index's back (each with its own Store, as separate processes
// would), a watching session applies what each Poll tells it to its own
// model of the folder. The model must never disagree with the view,
// never be told of a UID twice or of one below what it has, and in the
// end must be the folder.
func TestViewPollUnderLoad(t *testing.T) {
	s := newTestStore(t)
	in := s.Inbox()
	for i := range 20 {
		deliverText(t, in, fmt.Sprintf("Subject: %d\n\nbody\n", i))
	}
	watch, err := in.View(true)
	if err != nil {
		t.Fatal(err)
	}
	type modelMsg struct {
		uid   uint32
		flags string
	}
	var model []modelMsg
	watch.Each(1, watch.Len(), func(m Message) bool {
		model = append(model, modelMsg{m.UID, strings.Join(m.Flags, " ")})
		return true
	})
	expunged := map[uint32]bool{}

	dur := 2 * time.Second
	if testing.Short() {
		dur = 700 * time.Millisecond
	}
	stop := time.Now().Add(dur)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	worker := func(name string, do func(f *Folder, v *View) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			other, err := Open(s.Root)
			if err != nil {
				errs <- err
				return
			}
			other.Hostname = name + ".example"
			f := other.Inbox()
			v, err := f.View(false)
			if err != nil {
				errs <- err
				return
			}
			for time.Now().Before(stop) {
				if _, err := v.Poll(true); err != nil {
					errs <- fmt.Errorf("%s: poll: %w", name, err)
					return
				}
				if err := do(f, v); err != nil {
					errs <- fmt.Errorf("%s: %w", name, err)
					return
				}
			}
		}()
	}
	worker("deliverer", func(f *Folder, v *View) error {
		_, err := f.Deliver(strings.NewReader("Subject: more\n\nbody\n"), DeliverOptions{})
		return err
	})
	worker("flagger", func(f *Folder, v *View) error {
		if v.Len() == 0 {
			return nil
		}
		uid := v.UID(uint32(rand.N(v.Len()) + 1))
		flags := [][]string{{FlagSeen}, {FlagFlagged}, {FlagDeleted}, {"Junk"}}[rand.N(4)]
		_, err := v.Store([]uint32{uid}, FlagOp(rand.N(3)), flags)
		return err
	})
	worker("expunger", func(f *Folder, v *View) error {
		time.Sleep(5 * time.Millisecond)
		_, err := v.Expunge(nil)
		return err
	})
	worker("mutt", func(f *Folder, v *View) error {
		// Renames without the lock, as another mail reader makes them.
		names, err := readDirNames(filepath.Join(f.path, "cur"))
		if err != nil || len(names) == 0 {
			return err
		}
		n := names[rand.N(len(names))]
		u, flags := splitName(n)
		to := u + ":2," + flags + "R"
		if hasLetter(flags, 'R') {
			to = u + ":2," + strings.ReplaceAll(flags, "R", "")
		}
		to = u + ":2," + lettersAdd("")(to[len(u)+3:])
		err = os.Rename(filepath.Join(f.path, "cur", n), filepath.Join(f.path, "cur", to))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		time.Sleep(2 * time.Millisecond)
		return err
	})

	check := func(ch *Changes) {
		t.Helper()
		for _, e := range ch.Expunged {
			if e.Seq < 1 || int(e.Seq) > len(model) || model[e.Seq-1].uid != e.UID {
				t.Fatalf("EXPUNGE %d (UID %d) does not match the session's model", e.Seq, e.UID)
			}
			expunged[e.UID] = true
			model = slices.Delete(model, int(e.Seq-1), int(e.Seq))
		}
		for _, m := range ch.Added {
			if expunged[m.UID] {
				t.Fatalf("UID %d added again after its expunge", m.UID)
			}
			if n := len(model); n > 0 && m.UID <= model[n-1].uid {
				t.Fatalf("UID %d added after UID %d", m.UID, model[n-1].uid)
			}
			if int(m.Seq) != len(model)+1 {
				t.Fatalf("UID %d added as %d, the model has %d", m.UID, m.Seq, len(model))
			}
			model = append(model, modelMsg{m.UID, strings.Join(m.Flags, " ")})
		}
		if ch.Exists != 0 && int(ch.Exists) != len(model) {
			t.Fatalf("EXISTS %d, the model has %d", ch.Exists, len(model))
		}
		for _, m := range ch.Flagged {
			if m.Seq < 1 || int(m.Seq) > len(model) || model[m.Seq-1].uid != m.UID {
				t.Fatalf("FETCH %d (UID %d) does not match the model", m.Seq, m.UID)
			}
			model[m.Seq-1].flags = strings.Join(m.Flags, " ")
		}
		if int(watch.Len()) != len(model) {
			t.Fatalf("the view has %d messages, the model %d", watch.Len(), len(model))
		}
	}
	polls := 0
	for time.Now().Before(stop) {
		ch, err := watch.Poll(rand.N(2) == 0)
		if err != nil {
			t.Fatal(err)
		}
		check(ch)
		polls++
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ch, err := watch.Poll(true)
	if err != nil {
		t.Fatal(err)
	}
	check(ch)
	// In the end the model is the folder, flags and all.
	msgs, err := in.Messages()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != len(model) {
		t.Fatalf("the folder has %d messages, the model %d", len(msgs), len(model))
	}
	for i, m := range msgs {
		if m.UID != model[i].uid || strings.Join(m.Flags, " ") != model[i].flags {
			t.Errorf("message %d: folder UID %d %q, model UID %d %q", i+1, m.UID, m.Flags, model[i].uid, model[i].flags)
		}
	}
	t.Logf("%d polls, %d messages at the end, %d expunged", polls, len(model), len(expunged))
}
