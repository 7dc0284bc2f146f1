package runner

import (
	"context"
	"sync"
	"time"

	"github.com/tern-mail/tern/mta/transport"
)

// destinations holds what the scheduler knows about each next hop
// (transport.Hop.Key): how many deliveries to it run now, who waits for a
// slot, and whether it is backed off. Postfix's qmgr keeps the same per
// destination: a concurrency window and a "dead" flag that suspends
// delivery to a destination every host of which failed.
type destinations struct {
	limit int // deliveries at once to one destination; all local deliveries are one

	mu      sync.Mutex
	running map[string]int
	waiting map[string][]chan struct{}
	dead    map[string]*deadDestination
}

// deadDestination is a destination backed off as a whole: no host of it
// could be reached. Until its time is up, its messages are deferred
// without a connection.
type deadDestination struct {
	until    time.Time
	failures int              // in a row, for the growing back-off
	last     transport.Result // the failure that backed it off, for the deferrals it causes
}

func newDestinations(limit int) *destinations {
	if limit < 1 {
		limit = 1
	}
	return &destinations{limit: limit, running: map[string]int{}, waiting: map[string][]chan struct{}{}, dead: map[string]*deadDestination{}}
}

// limited reports whether deliveries to key count against the limit.
// Every destination does; the hook is kept so the rule has one place.
func (d *destinations) limited(string) bool { return true }

// full reports whether a delivery to key would have to wait for a slot.
func (d *destinations) full(key string) bool {
	if !d.limited(key) {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.running[key] >= d.limit
}

// book takes a slot of each of keys that has one free, for an entry the
// scheduler is about to start: the slots are counted from now, before its
// attempt routes it, so the next dispatch sees them taken.
func (d *destinations) book(keys []string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var booked []string
	for _, k := range keys {
		if d.limited(k) && d.running[k] < d.limit {
			d.running[k]++
			booked = append(booked, k)
		}
	}
	return booked
}

// acquire waits for a slot to key, or for ctx to end.
func (d *destinations) acquire(ctx context.Context, key string) error {
	if !d.limited(key) {
		return nil
	}
	for {
		d.mu.Lock()
		if d.running[key] < d.limit {
			d.running[key]++
			d.mu.Unlock()
			return nil
		}
		ch := make(chan struct{})
		d.waiting[key] = append(d.waiting[key], ch)
		d.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			d.mu.Lock()
			// Our wake-up, if it came, goes to the next in line.
			select {
			case <-ch:
				d.wakeOne(key)
			default:
				d.removeWaiter(key, ch)
			}
			d.mu.Unlock()
			return ctx.Err()
		}
	}
}

func (d *destinations) release(key string) {
	if !d.limited(key) {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.running[key]--
	if d.running[key] <= 0 {
		delete(d.running, key)
	}
	d.wakeOne(key)
}

func (d *destinations) wakeOne(key string) {
	w := d.waiting[key]
	if len(w) == 0 {
		return
	}
	close(w[0])
	if len(w) == 1 {
		delete(d.waiting, key)
	} else {
		d.waiting[key] = w[1:]
	}
}

func (d *destinations) removeWaiter(key string, ch chan struct{}) {
	w := d.waiting[key]
	for i, c := range w {
		if c == ch {
			d.waiting[key] = append(w[:i:i], w[i+1:]...)
			break
		}
	}
	if len(d.waiting[key]) == 0 {
		delete(d.waiting, key)
	}
}

// suspended returns the back-off of key if it is still running at now.
func (d *destinations) suspended(key string, now time.Time) (deadDestination, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dd := d.dead[key]
	if dd == nil || !now.Before(dd.until) {
		return deadDestination{}, false
	}
	return *dd, true
}

// failed backs key off after a delivery reached none of its hosts: for
// the retry delay of its failures in a row (1, 2, 4 ... 60 minutes), as a
// message's own retries grow.
func (d *destinations) failed(key string, now time.Time, last transport.Result) time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	dd := d.dead[key]
	if dd == nil {
		dd = &deadDestination{}
		d.dead[key] = dd
	}
	if now.Before(dd.until) {
		// Deliveries that were running when it was backed off: the
		// back-off stands as it is.
		return dd.until
	}
	dd.failures++
	dd.until = now.Add(retryDelay(dd.failures))
	dd.last = last
	return dd.until
}

// reached forgets a back-off: a host of key answered.
func (d *destinations) reached(key string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.dead, key)
}

// forgive ends every back-off: an administrator's flush means "try
// everything now", dead destinations included (Postfix's qmgr does the
// same on a flush request).
func (d *destinations) forgive() {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.dead)
}
