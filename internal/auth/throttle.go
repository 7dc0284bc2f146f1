package auth

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"
)

// Throttle slows failed logins. Every failure waits Base before its answer
// (so a guesser gets one guess a second per connection), and each further
// failure from the same address within Forget doubles the wait, up to Max.
// IPv6 addresses count by their /64, which is what one customer gets.
//
// The state is in the process: a server run with --listen slows an
// address across all its connections; a server run once per connection
// (inetd, tcpserver, systemd Accept=yes) slows within that connection
// only, and the connection limit of the super-server is what holds back a
// guesser that reconnects.
type Throttle struct {
	Base   time.Duration // first failure's wait; 0 means 1 s
	Max    time.Duration // longest wait; 0 means 30 s
	Forget time.Duration // failures older than this are forgotten; 0 means 15 min
	// Now and Sleep stand in for the clock in tests; nil means the real one.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error

	mu   sync.Mutex
	seen map[netip.Prefix]*failures
}

type failures struct {
	n    int
	last time.Time
}

// maxTracked bounds the memory a flood of addresses can take; past it the
// oldest records are dropped, which only makes the throttle forget sooner.
const maxTracked = 65536

// NewThrottle returns a throttle with the default waits.
func NewThrottle() *Throttle { return &Throttle{} }

func (t *Throttle) base() time.Duration   { return orDefault(t.Base, time.Second) }
func (t *Throttle) max() time.Duration    { return orDefault(t.Max, 30*time.Second) }
func (t *Throttle) forget() time.Duration { return orDefault(t.Forget, 15*time.Minute) }

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func (t *Throttle) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

func (t *Throttle) sleep(ctx context.Context, d time.Duration) error {
	if t.Sleep != nil {
		return t.Sleep(ctx, d)
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func key(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p
	}
	p, _ := a.Prefix(a.BitLen())
	return p
}

// Fail records a failed login from addr and returns how long to wait.
func (t *Throttle) Fail(addr netip.Addr) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if t.seen == nil {
		t.seen = map[netip.Prefix]*failures{}
	}
	k := key(addr)
	f := t.seen[k]
	if f == nil || now.Sub(f.last) > t.forget() {
		if len(t.seen) >= maxTracked {
			t.prune(now)
		}
		f = &failures{}
		t.seen[k] = f
	}
	f.n++
	f.last = now
	d := t.base()
	for i := 1; i < f.n && d < t.max(); i++ {
		d *= 2
	}
	return min(d, t.max())
}

func (t *Throttle) prune(now time.Time) {
	var oldest netip.Prefix
	var oldestT time.Time
	for k, f := range t.seen {
		if now.Sub(f.last) > t.forget() {
			delete(t.seen, k)
			continue
		}
		if oldestT.IsZero() || f.last.Before(oldestT) {
			oldest, oldestT = k, f.last
		}
	}
	if len(t.seen) >= maxTracked {
		delete(t.seen, oldest)
	}
}

// Succeed forgets the failures of addr: the right password ends the
// slowing, so a user who mistyped twice is not punished later.
func (t *Throttle) Succeed(addr netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.seen, key(addr))
}

// Failures returns how many recent failures addr has.
func (t *Throttle) Failures(addr netip.Addr) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f := t.seen[key(addr)]; f != nil && t.now().Sub(f.last) <= t.forget() {
		return f.n
	}
	return 0
}

// Throttled wraps an Authenticator so that every failed login waits as
// its Throttle says before the failure is returned.
type Throttled struct {
	Authenticator
	Throttle *Throttle
}

// Authenticate implements Authenticator.
func (t Throttled) Authenticate(ctx context.Context, user, pass string, remote netip.Addr) (*Account, error) {
	acct, err := t.Authenticator.Authenticate(ctx, user, pass, remote)
	if err == nil {
		t.Throttle.Succeed(remote)
		return acct, nil
	}
	if errors.Is(err, ErrAuthFailed) {
		if serr := t.Throttle.sleep(ctx, t.Throttle.Fail(remote)); serr != nil {
			return nil, err
		}
	}
	return nil, err
}
