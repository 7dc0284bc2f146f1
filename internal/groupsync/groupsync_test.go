package groupsync

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestGroup: no caller returns before a sync that saw its change has
// finished, syncs never overlap, and concurrent callers share syncs.
func TestGroup(t *testing.T) {
	var (
		g       Group
		changes atomic.Int64 // changes made so far
		synced  atomic.Int64 // changes covered by the last finished sync
		inRun   atomic.Int32
		runs    atomic.Int32
		wg      sync.WaitGroup
	)
	const callers = 64
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := changes.Add(1)
			err := g.Do(func() error {
				if inRun.Add(1) != 1 {
					t.Error("two syncs at once")
				}
				seen := changes.Load()
				time.Sleep(2 * time.Millisecond) // the fsync
				synced.Store(seen)
				runs.Add(1)
				inRun.Add(-1)
				return nil
			})
			if err != nil {
				t.Error(err)
			}
			if s := synced.Load(); s < mine {
				t.Errorf("change %d returned with only %d synced", mine, s)
			}
		}()
	}
	wg.Wait()
	if n := runs.Load(); n >= callers {
		t.Errorf("%d syncs for %d concurrent callers: none shared", n, callers)
	}
	t.Logf("%d syncs for %d callers", runs.Load(), callers)
}

// TestGroupError: a failed sync fails the callers it was to cover, and
// a later caller gets a sync of its own.
func TestGroupError(t *testing.T) {
	var g Group
	boom := errors.New("EIO")
	if err := g.Do(func() error { return boom }); err != boom {
		t.Fatalf("got %v, want %v", err, boom)
	}
	ran := false
	if err := g.Do(func() error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("after a failure: err %v, ran %v", err, ran)
	}
}
