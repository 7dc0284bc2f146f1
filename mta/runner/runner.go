// Package runner is tern-queue: it takes submissions into the queue,
// routes each recipient to a next hop, hands the recipients of a message
// that share a hop to that hop's transport (local: tern-deliver as the
// account; SMTP: the routes file's host or the domain's MX), records one
// result per recipient, retries on a growing schedule, and sends RFC 3464
// bounces, delay warnings and success notices.
//
// Why it is built this way: one process owns the queue (a lock file says
// so), and every change to an entry happens under the entry's lock, with the
// envelope re-read from disk first, so the administrative commands
// (--hold, --delete) can run beside the daemon; the lock is never held
// while a transport runs. New mail is noticed with inotify on incoming/ and
// a periodic scan catches anything missed. The scheduler takes entries in
// arrival order, fresh mail before retries, with a limit per destination
// so one slow or dead domain cannot hold up the rest, and backs off a
// destination none of whose hosts answered as a whole (Postfix's qmgr does
// both). Deliveries are at least once: a crash after a transport succeeded
// but before the envelope was saved delivers that recipient again.
package runner

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/internal/resolver"
	"github.com/tern-mail/tern/internal/sysexit"
	"github.com/tern-mail/tern/mta/queue"
	"github.com/tern-mail/tern/mta/remote"
	"github.com/tern-mail/tern/mta/transport"
)

// Options are tern-queue's command line.
type Options struct {
	Queue       string
	Conf        string
	Deliver     string // tern-deliver's path
	Enqueue     string // tern-enqueue's path, passed on for .forward
	Concurrency int    // entries delivered at once
	// DestinationConcurrency bounds the deliveries to one remote
	// destination (transport.Hop.Key) at once.
	DestinationConcurrency int
	MaxAge                 time.Duration // after this, a deferred recipient bounces
	WarnAfter              time.Duration // after this, one delay warning
	ScanInterval           time.Duration // the fallback scan of the queue
	Timeout                time.Duration // one delivery's limit
	SMTP                   SMTPOptions   // remote delivery
	Once                   bool          // one pass over what is due, then exit
	Flush                  bool          // treat every deferred recipient as due
	LMTP                   bool          // local delivery through a deliverer per uid (Local.LMTP)
}

// Env is what the runner takes from its surroundings.
type Env struct {
	Log     *slog.Logger
	Now     func() time.Time
	Signals <-chan os.Signal // SIGHUP re-reads the control directory; SIGTERM and SIGINT stop
	Euid    int
	// Transports by kind. The local one defaults to running tern-deliver
	// (Local), the SMTP one to mta/remote over the resolver and dialer
	// below.
	Transports map[transport.Kind]transport.Transport
	Resolver   resolver.Resolver // nil: --dns, else /etc/resolv.conf's servers
	Dial       Dial              // nil: net.Dialer
	SelfAddrs  SelfAddrs         // nil: the interfaces' addresses
}

// Retry schedule (tern-queue(8)): the delay after the nth failed attempt
// is 2^(n-1) minutes, at most an hour, so tries come at 1, 3, 7, 15, 31,
// 63 minutes and then hourly until --max-age.
func retryDelay(attempts int) time.Duration {
	if attempts < 1 {
		attempts = 1
	}
	if attempts > 7 {
		return time.Hour
	}
	d := time.Minute << (attempts - 1)
	if d > time.Hour {
		d = time.Hour
	}
	return d
}

// Runner is a running tern-queue.
type Runner struct {
	o   Options
	env Env
	q   *queue.Queue
	log *slog.Logger

	confMu sync.Mutex
	conf   *conf.Conf

	transports map[transport.Kind]transport.Transport
	ownSMTP    *remote.Transport // the SMTP transport this runner made, under confMu
	dests      *destinations

	mu      sync.Mutex
	fresh   []string // new entries, in arrival order: tried first
	retries retryHeap
	known   map[string]bool // in fresh, in retries, parked or running
	// parkedFresh and parkedRetry hold, by destination, the entries
	// dispatch passed over because every destination they wait on was at
	// its limit; a free slot of a destination starts its first parked
	// entry. An entry with several destinations is parked under each;
	// parkedAs is the one record of a parked entry, so a copy reached after
	// the entry started from another list is dropped.
	parkedFresh map[string][]string
	parkedRetry map[string][]string
	parkedAs    map[string]retryItem
	keys        map[string][]string // the destinations an entry waits on, for dispatch
	running     int                 // entries holding a delivery slot (--concurrency)
	retrying    int                 // of running, how many are retries
	// inflight counts entries between their start and the end of their
	// attempt, the recording of results included: an entry gives its
	// delivery slot back when its deliveries end, before its results are
	// written and flushed, so that the flush's wait holds no slot.
	inflight int
	flush    bool
	// flushes counts the flushes done; started holds its value when each
	// running entry started, so that an entry running during a flush is
	// tried again at once when it finishes, not at its next-try time.
	flushes int
	started map[string]int
}

// New opens the queue and the control directory.
func New(o Options, env Env) (*Runner, error) {
	if o.Concurrency < 1 {
		o.Concurrency = 1
	}
	q, err := queue.Open(o.Queue)
	if err != nil {
		return nil, err
	}
	c, err := conf.Load(o.Conf)
	if err != nil {
		return nil, err
	}
	r := &Runner{o: o, env: env, q: q, log: env.Log, conf: c, known: map[string]bool{}, keys: map[string][]string{}, started: map[string]int{}, parkedFresh: map[string][]string{}, parkedRetry: map[string][]string{}, parkedAs: map[string]retryItem{}, flush: o.Flush,
		dests: newDestinations(o.DestinationConcurrency), transports: map[transport.Kind]transport.Transport{}}
	for k, t := range env.Transports {
		r.transports[k] = t
	}
	if r.transports[transport.Local] == nil {
		r.transports[transport.Local] = &Local{Conf: r.currentConf, Program: o.Deliver, Enqueue: o.Enqueue, Queue: q.Dir, ConfDir: o.Conf, Timeout: o.Timeout, Euid: env.Euid, LMTP: o.LMTP}
	}
	if r.transports[transport.SMTP] == nil {
		if r.ownSMTP, err = r.smtpTransport(c); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// entryKeys is the destinations of e's recipients still to be tried.
func (r *Runner) entryKeys(e *queue.Envelope) []string {
	c := r.currentConf()
	var keys []string
	for _, rc := range e.Pending() {
		k := hopKey(c, rc.Addr)
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	return keys
}

func (r *Runner) currentConf() *conf.Conf {
	r.confMu.Lock()
	defer r.confMu.Unlock()
	return r.conf
}

func (r *Runner) reload() {
	c, err := conf.Load(r.o.Conf)
	if err != nil {
		r.log.Error("keeping the old control directory", "err", err)
		return
	}
	r.confMu.Lock()
	old := r.conf
	r.conf = c
	r.confMu.Unlock()
	r.reloadSMTP(old, c)
	r.log.Info("re-read the control directory", "dir", r.o.Conf)
}

// Run takes the runner lock and delivers until ctx ends or a signal stops
// it (or, with Once, until nothing is due).
func (r *Runner) Run(ctx context.Context) error {
	lock, err := r.q.LockRunner(!r.o.Once)
	if err != nil {
		return err
	}
	defer lock.Close()
	defer func() {
		// QUIT the connections kept for reuse.
		if t, ok := r.transport(transport.SMTP).(*remote.Transport); ok && t == r.ownSMTP {
			t.Close()
		}
		if l, ok := r.transport(transport.Local).(*Local); ok {
			l.Close()
		}
	}()
	notes, err := r.q.Recover(r.env.Now())
	if err != nil {
		return err
	}
	for _, n := range notes {
		r.log.Warn("recovery", "did", n)
	}
	var events chan fsnotify.Event
	var watchErrs chan error
	if !r.o.Once {
		// Buffered, so that the events of a burst wait in the channel
		// while a batch is taken in, and the next batch finds them.
		w, err := fsnotify.NewBufferedWatcher(4 * ingestBatch)
		if err != nil {
			return sysexit.Wrap(sysexit.TempFail, fmt.Errorf("watch %s: %w", r.q.Dir, err))
		}
		defer w.Close()
		if err := w.Add(filepath.Join(r.q.Dir, queue.Incoming)); err != nil {
			return sysexit.Wrap(sysexit.TempFail, fmt.Errorf("watch %s: %w", filepath.Join(r.q.Dir, queue.Incoming), err))
		}
		events, watchErrs = w.Events, w.Errors
	}
	done := make(chan attemptDone, r.o.Concurrency)
	freed := make(chan bool, r.o.Concurrency) // a slot given back; true for a retry's
	stopping := false
	// between runs between the batches of a scan: deliveries start while
	// the rest of a large queue is still being read, and the slots of
	// those that end are given back.
	between := func() {
		for {
			select {
			case retry := <-freed:
				r.slotFreed(retry)
			case d := <-done:
				r.finished(d)
			default:
				if !stopping {
					r.dispatch(ctx, freed, done)
				}
				return
			}
		}
	}
	// A flush asked for while no tern-queue ran is done now; scan takes
	// the request.
	r.scan(between)
	scan := time.NewTicker(r.o.ScanInterval)
	defer scan.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if !stopping {
			r.dispatch(ctx, freed, done)
		}
		r.mu.Lock()
		idle := r.inflight == 0
		nextDue, haveDue := r.retries.next()
		noFresh := len(r.fresh) == 0 && len(r.parkedAs) == 0
		r.mu.Unlock()
		if stopping && idle {
			r.log.Info("stopped")
			return nil
		}
		if r.o.Once && idle && noFresh && (!haveDue || nextDue.After(r.env.Now())) {
			// What this run's deliveries injected (forwards, bounces) is
			// part of the run.
			r.scan(between)
			r.mu.Lock()
			// Deliveries the scan started (between its batches) count.
			more := len(r.fresh) > 0 || len(r.parkedAs) > 0 || r.inflight > 0
			r.mu.Unlock()
			if !more {
				return nil
			}
			continue
		}
		wait := time.Hour
		if haveDue {
			wait = nextDue.Sub(r.env.Now())
			if wait < 0 {
				wait = 0
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait + 10*time.Millisecond)
		select {
		case <-ctx.Done():
			stopping = true
		case sig := <-r.env.Signals:
			if sig == syscall.SIGHUP {
				r.reload()
			} else if !stopping {
				r.log.Info("stopping: waiting for running deliveries", "signal", sig.String())
				stopping = true
			}
		case retry := <-freed:
			r.slotFreed(retry)
		case d := <-done:
			r.finished(d)
		case ev := <-events:
			// Submissions that arrived together are taken in together
			// (one flush of each directory): the events already waiting
			// are read too.
			var ids []string
		drain:
			for {
				name := filepath.Base(ev.Name)
				if name == queue.FlushName && ev.Op&(fsnotify.Create|fsnotify.Write) != 0 {
					if r.q.TakeFlush() {
						r.log.Info("flush requested")
						r.flush = true
						r.scan(between)
					}
				} else if queue.ValidID(name) && ev.Op&fsnotify.Create != 0 {
					// Create covers a rename into incoming/ (IN_MOVED_TO); fsnotify's
					// Rename is the name leaving, when tern-queue takes it in.
					ids = append(ids, name)
				}
				if len(ids) >= ingestBatch {
					break
				}
				select {
				case ev = <-events:
				default:
					break drain
				}
			}
			r.ingest(between, ids...)
		case err := <-watchErrs:
			// An overflow loses events: the scan finds what they were about.
			r.log.Warn("watching incoming", "err", err)
			r.scan(between)
		case <-scan.C:
			r.scan(between)
		case <-timer.C:
		}
	}
}

// scan takes in every submission and schedules every entry not already
// known. After a flush request, every entry is due at once and its deferred
// recipients are tried whatever their next-try time.
func (r *Runner) scan(between func()) {
	// Prepared entries of a tern-smtpd that stopped (see queue.KeepReady):
	// a sealed one becomes a submission the loop below takes in.
	for _, n := range r.q.ReclaimPool() {
		r.log.Warn("recovery", "did", n)
	}
	ids, err := r.q.Incoming()
	if err != nil {
		r.log.Error("scan", "err", err)
	}
	r.ingest(between, ids...)
	if r.q.TakeFlush() {
		r.flush = true
	}
	ids, err = r.q.IDs()
	defer func() { r.flush = false }()
	if err != nil {
		r.log.Error("scan", "err", err)
		return
	}
	r.mu.Lock()
	flush := r.flush
	if flush {
		r.flushes++
		r.dests.forgive()
		// Everything deferred is due: rebuild the heap with now.
		for i := range r.retries {
			r.retries[i].due, r.retries[i].force = time.Time{}, true
		}
		heap.Init(&r.retries)
		for id, it := range r.parkedAs {
			it.force = it.force || it.retry
			r.parkedAs[id] = it
		}
	}
	var todo []string
	for _, id := range ids {
		if !r.known[id] {
			todo = append(todo, id)
		}
	}
	r.mu.Unlock()
	// The envelopes are read in batches, by several readers at once and
	// without r.mu, and the deliveries of each batch start before the next
	// is read: tern-queue started on a large queue used to read all of it
	// before its first delivery.
	for len(todo) > 0 {
		batch := todo[:min(len(todo), scanBatch)]
		todo = todo[len(batch):]
		loaded, errs := r.q.LoadAll(batch)
		r.mu.Lock()
		for i, id := range batch {
			e := loaded[i]
			// An entry that ended an attempt meanwhile (between) is known
			// again with its own schedule.
			if errs[i] != nil || r.known[id] || e.Hold {
				continue
			}
			due, ok := e.NextTry()
			if !ok {
				due = time.Time{} // done or failed: finish it
			}
			if flush {
				due = time.Time{}
			}
			r.known[id] = true
			r.keys[id] = r.entryKeys(e)
			heap.Push(&r.retries, retryItem{id: id, due: due, force: flush})
		}
		r.mu.Unlock()
		for i, err := range errs {
			if err != nil {
				r.damaged(batch[i], err)
			}
		}
		between()
	}
}

// scanBatch is how many envelopes scan reads before it lets deliveries
// start: the first batch is enough for every delivery slot.
const scanBatch = 256

func hasFailed(e *queue.Envelope) bool {
	for _, rc := range e.Recipients {
		if rc.State == queue.Failed {
			return true
		}
	}
	return false
}

func (r *Runner) damaged(id string, err error) {
	if os.IsNotExist(err) {
		return
	}
	if _, ok := err.(*queue.DamagedError); ok {
		r.log.Error("damaged entry moved aside", "qid", id, "err", r.q.MoveAside(id, err))
		return
	}
	r.log.Error("read entry", "qid", id, "err", err)
}

// ingest takes submissions in, in batches, and puts each at the end of
// the fresh list.
func (r *Runner) ingest(between func(), ids ...string) {
	r.mu.Lock()
	var todo []string
	seen := map[string]bool{} // inotify may report a name twice
	for _, id := range ids {
		if !r.known[id] && !seen[id] {
			seen[id] = true
			todo = append(todo, id)
		}
	}
	r.mu.Unlock()
	for len(todo) > 0 {
		n := min(len(todo), ingestBatch)
		for _, in := range r.q.IngestAll(todo[:n]) {
			r.took(in)
		}
		todo = todo[n:]
		if len(todo) > 0 {
			between()
		}
	}
}

// ingestBatch bounds how many submissions are taken in at once: enough to
// share the directory flushes, few enough that the first are delivered
// soon during a flood.
const ingestBatch = 128

// took records one submission taken in (or says why not).
func (r *Runner) took(in queue.Ingested) {
	id, e, err := in.ID, in.Envelope, in.Err
	if err != nil {
		if os.IsNotExist(err) || errors.Is(err, queue.ErrBusy) {
			return
		}
		r.log.Error("submission refused", "qid", id, "err", err)
		return
	}
	rcpts := make([]string, len(e.Recipients))
	for i, rc := range e.Recipients {
		rcpts[i] = rc.Addr
	}
	r.log.Info("new", "qid", id, "from", "<"+strings.Trim(e.Sender, "<>")+">", "to", strings.Join(rcpts, ","), "size", e.Size, "uid", e.UID)
	keys := r.entryKeys(e)
	r.mu.Lock()
	if !r.known[id] {
		r.known[id] = true
		r.keys[id] = keys
		r.fresh = append(r.fresh, id)
	}
	r.mu.Unlock()
}

// dispatch starts attempts while there are free slots: fresh entries
// first, in arrival order, and retries only up to all slots but one, so
// that a backlog of retries never keeps new mail waiting. An entry whose
// every destination is at its limit is parked under them and the next one
// is looked at, so a slow destination holds only its own slots however
// long its backlog (Postfix's qmgr keeps a queue per destination for the
// same reason); a parked entry starts when one of its destinations has a
// slot free again.
func (r *Runner) dispatch(ctx context.Context, freed chan<- bool, done chan<- attemptDone) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.env.Now()
	retrySlots := r.o.Concurrency - 1
	if retrySlots < 1 {
		retrySlots = 1
	}
	// Entries recording their results hold an open file and wait for a
	// flush: as many of them as there are slots, at most.
	for r.running < r.o.Concurrency && r.inflight < 2*r.o.Concurrency {
		it, ok := r.readyFresh()
		if !ok {
			if r.retrying >= retrySlots {
				return
			}
			if it, ok = r.readyRetry(now); !ok {
				return
			}
			r.retrying++
		}
		id, force, retry := it.id, it.force, it.retry
		r.running++
		r.inflight++
		r.started[id] = r.flushes
		booked := r.dests.book(r.keys[id])
		go func() {
			var once sync.Once
			free := func() { once.Do(func() { freed <- retry }) }
			r.attempt(ctx, id, force, booked, free)
			free()
			done <- attemptDone{id}
		}()
	}
}

// ready reports whether entry id has a destination with a free slot.
// Under r.mu.
func (r *Runner) ready(id string) bool {
	keys := r.keys[id]
	if len(keys) == 0 {
		return true
	}
	for _, k := range keys {
		if !r.dests.full(k) {
			return true
		}
	}
	return false
}

// park sets an entry aside under each of its destinations, all full.
// Under r.mu.
func (r *Runner) park(it retryItem) {
	lists := r.parkedFresh
	if it.retry {
		lists = r.parkedRetry
	}
	r.parkedAs[it.id] = it
	for _, k := range r.keys[it.id] {
		lists[k] = append(lists[k], it.id)
	}
}

// unpark takes the first parked entry of a destination with a free slot
// from lists. Under r.mu.
func (r *Runner) unpark(lists map[string][]string) (retryItem, bool) {
	for k, ids := range lists {
		if r.dests.full(k) {
			continue
		}
		for len(ids) > 0 {
			id := ids[0]
			ids = ids[1:]
			it, ok := r.parkedAs[id]
			// A copy whose entry started from another list, or, after the
			// entry was parked anew, one under a destination it no longer
			// waits on.
			if !ok || !r.ready(id) {
				continue
			}
			delete(r.parkedAs, id)
			if len(ids) == 0 {
				delete(lists, k)
			} else {
				lists[k] = ids
			}
			return it, true
		}
		delete(lists, k)
	}
	return retryItem{}, false
}

// readyFresh takes the first fresh entry that can start.
func (r *Runner) readyFresh() (retryItem, bool) {
	if it, ok := r.unpark(r.parkedFresh); ok {
		return it, true
	}
	for len(r.fresh) > 0 {
		it := retryItem{id: r.fresh[0]}
		r.fresh = r.fresh[1:]
		if r.ready(it.id) {
			return it, true
		}
		r.park(it)
	}
	return retryItem{}, false
}

// readyRetry takes the first due retry that can start.
func (r *Runner) readyRetry(now time.Time) (retryItem, bool) {
	if it, ok := r.unpark(r.parkedRetry); ok {
		return it, true
	}
	for len(r.retries) > 0 && !r.retries[0].due.After(now) {
		it := heap.Pop(&r.retries).(retryItem)
		it.retry = true
		if r.ready(it.id) {
			return it, true
		}
		r.park(it)
	}
	return retryItem{}, false
}

// slotFreed takes back the delivery slot an entry gave back.
func (r *Runner) slotFreed(retry bool) {
	r.mu.Lock()
	r.running--
	if retry {
		r.retrying--
	}
	r.mu.Unlock()
}

// finished reschedules an entry after an attempt.
func (r *Runner) finished(d attemptDone) {
	id := d.id
	r.mu.Lock()
	r.inflight--
	delete(r.known, id)
	delete(r.keys, id)
	flushed := r.started[id] != r.flushes
	delete(r.started, id)
	r.mu.Unlock()
	e, err := r.q.Load(id)
	if err != nil {
		return // removed, or damaged and moved aside
	}
	if e.Hold {
		return
	}
	due, ok := e.NextTry()
	if !ok {
		return
	}
	if flushed {
		due = time.Time{}
	}
	keys := r.entryKeys(e)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.known[id] = true
	r.keys[id] = keys
	heap.Push(&r.retries, retryItem{id: id, due: due, force: flushed})
}

type attemptDone struct {
	id string
}

type retryItem struct {
	id    string
	due   time.Time
	force bool // flushed: try deferred recipients before their time
	retry bool // from the retries, not the fresh entries
}

type retryHeap []retryItem

func (h retryHeap) Len() int { return len(h) }
func (h retryHeap) Less(i, j int) bool {
	if h[i].due.Equal(h[j].due) {
		return h[i].id < h[j].id
	}
	return h[i].due.Before(h[j].due)
}
func (h retryHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *retryHeap) Push(x any)   { *h = append(*h, x.(retryItem)) }
func (h *retryHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

func (h retryHeap) next() (time.Time, bool) {
	if len(h) == 0 {
		return time.Time{}, false
	}
	return h[0].due, true
}
