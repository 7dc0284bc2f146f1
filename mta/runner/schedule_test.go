package runner

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tern-mail/tern/mta/queue"
	"github.com/tern-mail/tern/mta/transport"
)

// clock is a fake clock the tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// fakeSMTP is a transport that answers as the test says, counts its calls,
// and records how many deliveries to each destination ran at once.
type fakeSMTP struct {
	answer func(hop transport.Hop, rc transport.Recipient) transport.Result
	// gate, when it has a channel for a domain, holds that domain's
	// deliveries until the channel is closed; entered hears of each one.
	gate    map[string]chan struct{}
	entered chan string

	mu      sync.Mutex
	calls   map[string]int
	running map[string]int
	max     map[string]int
	got     map[string]int // recipients delivered, by domain
}

func newFakeSMTP(answer func(transport.Hop, transport.Recipient) transport.Result) *fakeSMTP {
	return &fakeSMTP{answer: answer, gate: map[string]chan struct{}{}, entered: make(chan string, 1000),
		calls: map[string]int{}, running: map[string]int{}, max: map[string]int{}, got: map[string]int{}}
}

func (f *fakeSMTP) Deliver(ctx context.Context, m *transport.Message, hop transport.Hop, rcpts []transport.Recipient) []transport.Result {
	f.mu.Lock()
	f.calls[hop.Domain]++
	f.running[hop.Key]++
	f.max[hop.Key] = max(f.max[hop.Key], f.running[hop.Key])
	gate := f.gate[hop.Domain]
	f.mu.Unlock()
	f.entered <- hop.Domain
	if gate != nil {
		<-gate
	}
	// The text must be readable without the entry's lock.
	if rc, err := m.Open(); err == nil {
		io.Copy(io.Discard, rc)
		rc.Close()
	}
	out := make([]transport.Result, len(rcpts))
	for i, rc := range rcpts {
		out[i] = f.answer(hop, rc)
	}
	f.mu.Lock()
	f.running[hop.Key]--
	for _, res := range out {
		if res.Delivered() {
			f.got[hop.Domain]++
		}
	}
	f.mu.Unlock()
	return out
}

func (f *fakeSMTP) count(m map[string]int, k string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return m[k]
}

func sent(hop transport.Hop, _ transport.Recipient) transport.Result {
	return transport.Result{Status: "2.0.0", Answer: "250 2.0.0 queued", Reply: 250, RemoteMTA: "mx." + hop.Domain + "[192.0.2.1]:25", DiagType: "smtp"}
}

// syncBuffer is a log that a test reads while the runner writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type runnerSetup struct {
	o     Options
	clock *clock
	tr    transport.Transport
	log   *syncBuffer
}

func (w *world) remoteRunner(t testing.TB, s runnerSetup) *Runner {
	t.Helper()
	o := s.o
	o.Queue, o.Conf, o.Deliver = w.queue, w.conf, w.deliver
	if o.Concurrency == 0 {
		o.Concurrency = 4
	}
	if o.DestinationConcurrency == 0 {
		o.DestinationConcurrency = 20
	}
	if o.MaxAge == 0 {
		o.MaxAge = 5 * 24 * time.Hour
	}
	if o.WarnAfter == 0 {
		o.WarnAfter = 100 * time.Hour
	}
	if o.ScanInterval == 0 {
		o.ScanInterval = time.Hour
	}
	o.Timeout = 10 * time.Second
	var out io.Writer = io.Discard
	if s.log != nil {
		out = s.log
	}
	r, err := New(o, Env{Log: slog.New(slog.NewTextHandler(out, nil)), Now: s.clock.Now, Euid: os.Geteuid(),
		Transports: map[transport.Kind]transport.Transport{transport.SMTP: s.tr}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (w *world) load(t *testing.T, id string) *queue.Envelope {
	t.Helper()
	q, err := queue.Open(w.queue)
	if err != nil {
		t.Fatal(err)
	}
	e, err := q.Load(id)
	if err != nil {
		t.Fatalf("load %s: %v", id, err)
	}
	return e
}

func (w *world) left(t *testing.T) []string {
	t.Helper()
	q, _ := queue.Open(w.queue)
	ids, err := q.IDs()
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func runOnce(t testing.TB, r *Runner) {
	t.Helper()
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestRetrySchedule: a destination that answers 451 is tried at 1, 3, 7,
// 15, 31, 63 minutes and then hourly, on the fake clock, and the message
// goes when it answers 250.
func TestRetrySchedule(t *testing.T) {
	w := newWorld(t, "bob")
	clk := &clock{t: time.Now()}
	ok := false
	var mu sync.Mutex
	tr := newFakeSMTP(func(hop transport.Hop, rc transport.Recipient) transport.Result {
		mu.Lock()
		defer mu.Unlock()
		if ok {
			return sent(hop, rc)
		}
		return transport.Result{Status: "4.2.0", Temporary: true, Reply: 451, Answer: "451 4.2.0 greylisted", RemoteMTA: "mx.remote.example[192.0.2.1]:25", DiagType: "smtp"}
	})
	id := w.inject(t, "bob@example.org", "someone@remote.example")
	setup := runnerSetup{o: Options{Once: true}, clock: clk, tr: tr}
	offsets := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 16 * time.Minute, 32 * time.Minute, time.Hour, time.Hour}
	for i, d := range offsets {
		now := clk.Now()
		runOnce(t, w.remoteRunner(t, setup))
		rc := w.load(t, id).Recipients[0]
		if rc.State != queue.Deferred || rc.Attempts != i+1 || !rc.Next.Equal(now.Add(d).Truncate(time.Second)) || rc.Status != "4.2.0" || rc.Answer != "451 4.2.0 greylisted" {
			t.Fatalf("after try %d: %+v, want next at +%v", i+1, rc, d)
		}
		// Just before it is due, nothing happens.
		clk.Set(rc.Next.Add(-time.Second))
		runOnce(t, w.remoteRunner(t, setup))
		if n := tr.count(tr.calls, "remote.example"); n != i+1 {
			t.Fatalf("%d calls before the try was due, want %d", n, i+1)
		}
		clk.Set(rc.Next)
	}
	mu.Lock()
	ok = true
	mu.Unlock()
	runOnce(t, w.remoteRunner(t, setup))
	if left := w.left(t); len(left) != 0 {
		t.Errorf("left after success: %v", left)
	}
	if w.got("bob") != 0 {
		t.Errorf("the sender got %d reports for a delivered message", w.got("bob"))
	}
}

// TestDestinationConcurrency: one slow destination gets at most
// --destination-concurrency deliveries at once, and mail to another
// destination behind it goes meanwhile.
func TestDestinationConcurrency(t *testing.T) {
	w := newWorld(t, "bob")
	clk := &clock{t: time.Now()}
	tr := newFakeSMTP(sent)
	tr.gate["slow.example"] = make(chan struct{})
	for range 12 {
		w.inject(t, "bob@example.org", "x@slow.example")
	}
	for range 4 {
		w.inject(t, "bob@example.org", "y@fast.example")
	}
	r := w.remoteRunner(t, runnerSetup{o: Options{Once: true, Concurrency: 6, DestinationConcurrency: 2}, clock: clk, tr: tr})
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	deadline := time.After(10 * time.Second)
	for tr.count(tr.got, "fast.example") < 4 {
		select {
		case <-deadline:
			t.Fatalf("fast.example got %d of 4 while slow.example was stuck", tr.count(tr.got, "fast.example"))
		case <-time.After(5 * time.Millisecond):
		}
	}
	if n := tr.count(tr.max, "smtp:slow.example"); n != 2 {
		t.Errorf("slow.example had %d deliveries at once, want 2", n)
	}
	close(tr.gate["slow.example"])
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := tr.count(tr.max, "smtp:slow.example"); n != 2 {
		t.Errorf("slow.example had %d deliveries at once, want 2", n)
	}
	if tr.count(tr.got, "slow.example") != 12 || len(w.left(t)) != 0 {
		t.Errorf("slow.example got %d of 12; left %v", tr.count(tr.got, "slow.example"), w.left(t))
	}
}

// TestDestinationBackoff: a destination none of whose hosts answered is
// backed off as a whole: its other messages are deferred without a
// connection until the back-off ends, and then delivered.
func TestDestinationBackoff(t *testing.T) {
	w := newWorld(t, "bob")
	t0 := time.Now()
	clk := &clock{t: t0}
	var mu sync.Mutex
	up := false
	tr := newFakeSMTP(func(hop transport.Hop, rc transport.Recipient) transport.Result {
		mu.Lock()
		defer mu.Unlock()
		if hop.Domain == "dead.example" && !up {
			return transport.Result{Status: "4.4.1", Temporary: true, Unreachable: true, Answer: "connect to mx.dead.example[192.0.2.9]:25: connection refused", RemoteMTA: "mx.dead.example[192.0.2.9]:25"}
		}
		return sent(hop, rc)
	})
	var ids []string
	for i := range 5 {
		ids = append(ids, w.inject(t, "bob@example.org", "x@dead.example"))
		if i == 2 {
			w.inject(t, "bob@example.org", "y@live.example")
		}
	}
	log := &syncBuffer{}
	setup := runnerSetup{o: Options{Once: true, Concurrency: 1}, clock: clk, tr: tr, log: log}
	runOnce(t, w.remoteRunner(t, setup))
	if n := tr.count(tr.calls, "dead.example"); n != 1 {
		t.Errorf("%d connections to the dead destination, want 1", n)
	}
	if n := tr.count(tr.got, "live.example"); n != 1 {
		t.Errorf("live.example got %d, want 1: a dead destination must not stop the others", n)
	}
	first := w.load(t, ids[0]).Recipients[0]
	if first.State != queue.Deferred || first.Attempts != 1 || !strings.Contains(first.Answer, "connection refused") || !first.Next.Equal(t0.Add(time.Minute).Truncate(time.Second)) {
		t.Errorf("the message that found it dead: %+v", first)
	}
	for _, id := range ids[1:] {
		rc := w.load(t, id).Recipients[0]
		if rc.State != queue.Deferred || rc.Attempts != 0 || !strings.Contains(rc.Answer, "suspended until") || !strings.Contains(rc.Answer, "connection refused") || !rc.Next.Equal(first.Next) || rc.RemoteMTA != "mx.dead.example[192.0.2.9]:25" {
			t.Errorf("a message deferred by the back-off: %+v", rc)
		}
	}
	if !strings.Contains(log.String(), "destination backed off") {
		t.Errorf("the back-off is not logged:\n%s", log.String())
	}
	// The back-off ends; the destination is up again: everything goes, one
	// delivery a message. A new runner forgets back-offs: the entries'
	// own next tries carry it over a restart.
	mu.Lock()
	up = true
	mu.Unlock()
	clk.Set(first.Next)
	runOnce(t, w.remoteRunner(t, setup))
	if n := tr.count(tr.got, "dead.example"); n != 5 {
		t.Errorf("dead.example got %d after its back-off, want 5", n)
	}
	if left := w.left(t); len(left) != 0 {
		t.Errorf("left: %v", left)
	}
}

// TestDestinationBackoffInProcess: within one runner, a later message to a
// backed-off destination is deferred without a connection, and a success
// ends the back-off.
func TestDestinationBackoffInProcess(t *testing.T) {
	w := newWorld(t, "bob")
	clk := &clock{t: time.Now()}
	tr := newFakeSMTP(func(hop transport.Hop, rc transport.Recipient) transport.Result {
		return transport.Result{Status: "4.4.1", Temporary: true, Unreachable: true, Answer: "no route to host"}
	})
	r := w.remoteRunner(t, runnerSetup{o: Options{Once: true, Concurrency: 1}, clock: clk, tr: tr})
	w.inject(t, "bob@example.org", "x@dead.example")
	runOnce(t, r)
	w.inject(t, "bob@example.org", "x@dead.example")
	clk.Set(clk.Now().Add(30 * time.Second))
	runOnce(t, r)
	if n := tr.count(tr.calls, "dead.example"); n != 1 {
		t.Errorf("%d connections while backed off, want 1", n)
	}
	if _, ok := r.dests.suspended("smtp:dead.example", clk.Now()); !ok {
		t.Errorf("not backed off")
	}
	r.dests.reached("smtp:dead.example")
	if _, ok := r.dests.suspended("smtp:dead.example", clk.Now()); ok {
		t.Errorf("still backed off after a host answered")
	}
	// A flush tries dead destinations too.
	w.inject(t, "bob@example.org", "x@dead.example")
	runOnce(t, r)
	if _, ok := r.dests.suspended("smtp:dead.example", clk.Now()); !ok {
		t.Fatalf("not backed off again")
	}
	q, _ := queue.Open(w.queue)
	q.RequestFlush()
	before := tr.count(tr.calls, "dead.example")
	runOnce(t, r)
	if n := tr.count(tr.calls, "dead.example"); n != before+1 {
		t.Errorf("%d connections on a flush while backed off, want 1", n-before)
	}
}

// TestLockNotHeld: --delete and --hold return while a slow transaction
// runs; what finishes after the delete is not recorded, and the held
// entry's result is recorded once and nothing more is tried.
func TestLockNotHeld(t *testing.T) {
	w := newWorld(t, "bob")
	clk := &clock{t: time.Now()}
	tr := newFakeSMTP(func(hop transport.Hop, rc transport.Recipient) transport.Result {
		if strings.HasPrefix(rc.Addr, "held") {
			return transport.Result{Status: "4.2.0", Temporary: true, Reply: 451, Answer: "451 4.2.0 later"}
		}
		return sent(hop, rc)
	})
	tr.gate["slow.example"] = make(chan struct{})
	log := &syncBuffer{}
	r := w.remoteRunner(t, runnerSetup{o: Options{Concurrency: 4}, clock: clk, tr: tr, log: log})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	deleted := w.inject(t, "bob@example.org", "gone@slow.example")
	held := w.inject(t, "bob@example.org", "held@slow.example")
	for range 2 {
		select {
		case <-tr.entered:
		case <-time.After(10 * time.Second):
			t.Fatal("the deliveries did not start")
		}
	}
	q, err := queue.Open(w.queue)
	if err != nil {
		t.Fatal(err)
	}
	adm := make(chan error, 2)
	go func() { adm <- q.Delete(deleted) }()
	go func() { adm <- q.Hold(held) }()
	for range 2 {
		select {
		case err := <-adm:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("--delete or --hold waited for the running delivery: the entry lock is held across it")
		}
	}
	close(tr.gate["slow.example"])
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(log.String(), "deleted during delivery") || w.load(t, held).Recipients[0].Attempts == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("results not handled:\n%s", log.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(w.queue, queue.Env, deleted)); !os.IsNotExist(err) {
		t.Errorf("the deleted entry came back: %v", err)
	}
	e := w.load(t, held)
	rc := e.Recipients[0]
	if !e.Hold || rc.State != queue.Deferred || rc.Attempts != 1 || rc.Answer != "451 4.2.0 later" {
		t.Errorf("held entry: hold %v, %+v", e.Hold, rc)
	}
	if n := tr.count(tr.calls, "slow.example"); n != 2 {
		t.Errorf("%d deliveries, want 2", n)
	}
}

// TestFlushDuringDelivery: an entry whose delivery runs when a flush is
// asked for is tried again as soon as it finishes, not at its next-try
// time.
func TestFlushDuringDelivery(t *testing.T) {
	w := newWorld(t, "bob")
	clk := &clock{t: time.Now()}
	tr := newFakeSMTP(func(transport.Hop, transport.Recipient) transport.Result {
		return transport.Result{Status: "4.2.0", Temporary: true, Reply: 451, Answer: "451 4.2.0 later"}
	})
	tr.gate["slow.example"] = make(chan struct{})
	log := &syncBuffer{}
	r := w.remoteRunner(t, runnerSetup{o: Options{Concurrency: 4}, clock: clk, tr: tr, log: log})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	w.inject(t, "bob@example.org", "x@slow.example")
	select {
	case <-tr.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the delivery did not start")
	}
	q, _ := queue.Open(w.queue)
	if err := q.RequestFlush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(log.String(), "flush requested") {
		if time.Now().After(deadline) {
			t.Fatalf("the flush was not seen:\n%s", log.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The gate stays open from now on: the retry answers at once.
	close(tr.gate["slow.example"])
	select {
	case <-tr.entered:
	case <-time.After(10 * time.Second):
		t.Fatalf("not tried again after the flush:\n%s", log.String())
	}
}

// TestDestinationBacklog: a backlog to one stuck destination longer than
// the scheduler ever looked ahead (512 entries) does not hold up mail to
// another destination queued behind it, neither when the entries are new
// nor when they are retries brought forward by a flush.
func TestDestinationBacklog(t *testing.T) {
	const backlog = 600
	w := newWorld(t, "bob")
	clk := &clock{t: time.Now()}
	var mu sync.Mutex
	deferAll := true
	tr := newFakeSMTP(func(hop transport.Hop, rc transport.Recipient) transport.Result {
		mu.Lock()
		defer mu.Unlock()
		if deferAll {
			return transport.Result{Status: "4.2.0", Temporary: true, Reply: 451, Answer: "451 4.2.0 later", RemoteMTA: "mx." + hop.Domain + "[192.0.2.1]:25", DiagType: "smtp"}
		}
		return sent(hop, rc)
	})
	stop := make(chan struct{})
	defer close(stop)
	go func() { // nobody here waits for a delivery to begin
		for {
			select {
			case <-tr.entered:
			case <-stop:
				return
			}
		}
	}()
	for range backlog {
		w.inject(t, "bob@example.org", "x@slow.example")
	}
	for range 3 {
		w.inject(t, "bob@example.org", "y@fast.example")
	}
	for _, phase := range []struct {
		name  string
		flush bool
	}{{"new", false}, {"flushed retries", true}} {
		tr.mu.Lock()
		tr.gate["slow.example"] = make(chan struct{})
		tr.calls = map[string]int{}
		tr.mu.Unlock()
		r := w.remoteRunner(t, runnerSetup{o: Options{Once: true, Flush: phase.flush, Concurrency: 6, DestinationConcurrency: 2}, clock: clk, tr: tr})
		done := make(chan error, 1)
		go func() { done <- r.Run(context.Background()) }()
		deadline := time.After(20 * time.Second)
		for tr.count(tr.calls, "fast.example") < 3 {
			select {
			case <-deadline:
				n := tr.count(tr.calls, "fast.example")
				close(tr.gate["slow.example"])
				<-done
				t.Fatalf("%s: fast.example was tried %d times of 3 while %d entries for slow.example waited", phase.name, n, backlog)
			case <-time.After(5 * time.Millisecond):
			}
		}
		close(tr.gate["slow.example"])
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if n := tr.count(tr.calls, "slow.example"); n != backlog {
			t.Errorf("%s: slow.example tried %d times, want %d", phase.name, n, backlog)
		}
		mu.Lock()
		deferAll = false
		mu.Unlock()
	}
	if left := w.left(t); len(left) != 0 {
		t.Errorf("%d entries left after the flush", len(left))
	}
}
