package runner

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tern-mail/tern/internal/address"
	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/mta"
	"github.com/tern-mail/tern/mta/queue"
	"github.com/tern-mail/tern/mta/transport"
)

// maxAliasDepth bounds alias expansion; deeper is taken for a loop.
const maxAliasDepth = 20

// group is the recipients of one message that share a hop, handed to its
// transport together, and what the transport answered.
type group struct {
	hop     transport.Hop
	taken   []taken
	rcpts   []transport.Recipient
	results []transport.Result
	// suspended is set when the hop was backed off: the results are
	// deferrals made without a connection, due when the back-off ends.
	suspended time.Time
	booked    bool // the scheduler took the destination's slot for it
}

// taken is a recipient as it was when its delivery began: its results are
// recorded only if it is still so when they come back.
type taken struct {
	idx      int
	addr     string
	attempts int
}

// notice is a success the sender asked to hear of (RFC 3461 NOTIFY=SUCCESS).
type notice struct {
	rc     *queue.Recipient
	action string
}

// attempt tries every due recipient of one entry. The entry's lock is
// held only to read and to write the envelope, never while a transport
// runs (issue #13 §0): lock, load, route, unlock; deliver; lock, load
// again, record, unlock. So --hold and --delete work while a slow
// transaction runs; what finishes after a --delete is not recorded, and a
// recipient that changed meanwhile is not recorded twice. free gives the
// entry's delivery slot back; it is called when the deliveries end, before
// the results are recorded.
func (r *Runner) attempt(ctx context.Context, id string, force bool, booked []string, free func()) {
	e, groups := r.prepare(ctx, id, force)
	for _, g := range groups {
		if i := slices.Index(booked, g.hop.Key); i >= 0 {
			g.booked = true
			booked = slices.Delete(booked, i, i+1)
		}
	}
	for _, k := range booked {
		r.dests.release(k) // a slot the entry did not need after all
	}
	if e == nil || len(groups) == 0 {
		return
	}
	m := r.message(e)
	var wg sync.WaitGroup
	for _, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.deliverGroup(ctx, m, g)
		}()
	}
	wg.Wait()
	free()
	r.record(id, groups)
}

// prepare routes the due recipients of entry id under its lock: aliases
// are expanded, outcomes known without a transport are recorded, and the
// rest are grouped by hop. It returns nil when the entry is gone or held.
// When nothing is left for a transport, the entry is finished here.
func (r *Runner) prepare(ctx context.Context, id string, force bool) (*queue.Envelope, []*group) {
	unlock, err := r.q.Lock(id)
	if err != nil {
		if !os.IsNotExist(err) {
			r.log.Error("lock entry", "qid", id, "err", err)
		}
		return nil, nil
	}
	defer unlock()
	e, err := r.q.Load(id)
	if err != nil {
		r.damaged(id, err)
		return nil, nil
	}
	if e.Hold {
		return nil, nil
	}
	c := r.currentConf()
	now := r.env.Now()
	changed := false
	var groups []*group
	byKey := map[string]*group{}
	// Expansion appends recipients: the loop routes them in the same pass.
	for i := 0; i < len(e.Recipients); i++ {
		rc := e.Recipients[i]
		if rc.State != queue.Queued && rc.State != queue.Deferred {
			continue
		}
		if rc.State == queue.Deferred && !force && rc.Next.After(now) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		rt := routeOf(c, rc.Addr)
		switch {
		case rt.alias != nil:
			rc.Attempts++
			r.expand(c, e, rc, rt.alias)
			changed = true
			continue
		case rt.decided != nil:
			rc.Attempts++
			r.apply(e, rc, *rt.decided, now, time.Time{}, nil)
			changed = true
			continue
		}
		g := byKey[rt.hop.Key]
		if g == nil {
			g = &group{hop: rt.hop}
			byKey[rt.hop.Key] = g
			groups = append(groups, g)
		}
		g.taken = append(g.taken, taken{idx: i, addr: rc.Addr, attempts: rc.Attempts})
		g.rcpts = append(g.rcpts, transport.Recipient{Addr: rc.Addr, Notify: rc.Notify, ORcpt: rc.ORcpt, Parent: rc.Parent})
	}
	if len(groups) == 0 {
		r.finish(c, e, now, nil, changed)
		return nil, nil
	}
	if changed {
		// The expansion must be on disk before the targets are
		// delivered, or a crash would deliver them and forget it.
		if err := r.q.Save(e); err != nil {
			r.log.Error("save envelope", "qid", id, "err", err)
			return nil, nil
		}
	}
	return e, groups
}

// message is what a transport sees of entry e.
func (r *Runner) message(e *queue.Envelope) *transport.Message {
	sender := e.Sender
	if sender == address.NullSender {
		sender = ""
	}
	return &transport.Message{
		ID: e.ID, Sender: sender, Size: e.Size,
		Open:     func() (io.ReadCloser, error) { return r.q.Message(e) },
		SMTPUTF8: e.SMTPUTF8, Body: e.Body, EightBit: e.EightBit,
		EnvID: e.EnvID, Ret: e.Ret, RequireTLS: e.RequireTLS,
	}
}

// deliverGroup hands one group to its transport, within the limits of its
// destination, and fills g.results. A destination backed off as a whole is
// not tried: its recipients are deferred until the back-off ends.
func (r *Runner) deliverGroup(ctx context.Context, m *transport.Message, g *group) {
	key := g.hop.Key
	held := g.booked
	release := func() {
		if held {
			r.dests.release(key)
			held = false
		}
	}
	defer release()
	fill := func(res transport.Result) {
		g.results = make([]transport.Result, len(g.rcpts))
		for i := range g.results {
			g.results[i] = res
		}
	}
	if dd, ok := r.dests.suspended(key, r.env.Now()); ok {
		g.suspended = dd.until
		// The host tried last and its words stay, for --list and the
		// delay warning.
		fill(transport.Result{Status: dd.last.Status, Temporary: true, RemoteMTA: dd.last.RemoteMTA, DiagType: dd.last.DiagType,
			Answer: fmt.Sprintf("delivery to %s suspended until %s: %s", key, dd.until.UTC().Format(time.RFC3339), dd.last.Answer)})
		return
	}
	tr := r.transport(g.hop.Kind)
	if tr == nil {
		fill(transport.Result{Status: "4.3.5", Temporary: true, DiagType: "X-Unix", Answer: fmt.Sprintf("no %s transport in this tern-queue", g.hop.Kind)})
		return
	}
	if !held {
		if err := r.dests.acquire(ctx, key); err != nil {
			fill(transport.Result{Status: "4.3.0", Temporary: true, DiagType: "X-Unix", Answer: "tern-queue stopped before delivery began"})
			return
		}
		held = true
	}
	g.results = tr.Deliver(ctx, m, g.hop, g.rcpts)
	release()
	if len(g.results) != len(g.rcpts) {
		r.log.Error("transport answered for the wrong number of recipients", "qid", m.ID, "transport", string(g.hop.Kind), "results", len(g.results), "recipients", len(g.rcpts))
		fill(transport.Result{Status: "4.3.0", Temporary: true, DiagType: "X-Unix", Answer: "the transport's answer was incomplete"})
		return
	}
	if g.hop.Kind == transport.Local {
		return
	}
	for _, res := range g.results {
		if !res.Unreachable {
			r.dests.reached(key)
			return
		}
	}
	last := g.results[len(g.results)-1]
	until := r.dests.failed(key, r.env.Now(), last)
	r.log.Warn("destination backed off", "dest", key, "until", until.UTC().Format(time.RFC3339), "answer", last.Answer)
}

// record writes what the transports answered into entry id, under its
// lock, with the envelope read again: a deleted entry gets nothing, and a
// recipient that is no longer as it was taken (recorded by someone else)
// is left alone.
func (r *Runner) record(id string, groups []*group) {
	unlock, err := r.q.Lock(id)
	if err != nil {
		if os.IsNotExist(err) {
			r.log.Info("deleted during delivery: results not recorded", "qid", id)
		} else {
			r.log.Error("lock entry", "qid", id, "err", err)
		}
		return
	}
	defer unlock()
	e, err := r.q.Load(id)
	if err != nil {
		if os.IsNotExist(err) {
			r.log.Info("deleted during delivery: results not recorded", "qid", id)
			return
		}
		r.damaged(id, err)
		return
	}
	c := r.currentConf()
	now := r.env.Now()
	var notices []notice
	changed := false
	for _, g := range groups {
		for j, tk := range g.taken {
			if tk.idx >= len(e.Recipients) {
				continue
			}
			rc := e.Recipients[tk.idx]
			if rc.Addr != tk.addr || rc.Attempts != tk.attempts || (rc.State != queue.Queued && rc.State != queue.Deferred) {
				r.log.Warn("recipient changed during delivery: result not recorded", "qid", id, "to", rc.Addr, "state", string(rc.State))
				continue
			}
			if g.suspended.IsZero() {
				rc.Attempts++
			}
			notices = r.apply(e, rc, g.results[j], now, g.suspended, notices)
			changed = true
		}
	}
	r.finish(c, e, now, notices, changed)
}

// apply records one result in rc, and returns notices with the success
// notice rc asked for, if any.
func (r *Runner) apply(e *queue.Envelope, rc *queue.Recipient, res transport.Result, now, next time.Time, notices []notice) []notice {
	rc.Status, rc.Answer, rc.RemoteMTA, rc.DiagType = res.Status, res.Answer, res.RemoteMTA, res.DiagType
	args := []any{"qid", e.ID, "to", rc.Addr}
	if res.RemoteMTA != "" {
		args = append(args, "relay", res.RemoteMTA)
	}
	switch {
	case res.Delivered():
		rc.State = queue.Delivered
		r.log.Info("delivered", append(args, "answer", res.Answer)...)
		if wants(rc.Notify, transport.NotifySuccess) {
			// RFC 3461 §4.2: a next hop that took NOTIFY on reports
			// itself; one that did not leaves it to us ("relayed").
			switch {
			case res.RemoteMTA == "":
				notices = append(notices, notice{rc, mta.ActionDelivered})
			case res.Relayed:
				notices = append(notices, notice{rc, mta.ActionRelayed})
			}
		}
	case !res.Temporary && strings.HasPrefix(res.Status, "5"):
		rc.State = queue.Failed
		r.log.Info("failed", append(args, "status", rc.Status, "answer", res.Answer)...)
	default:
		// Temporary, or nobody classified it: try again later.
		if !strings.HasPrefix(rc.Status, "4") {
			rc.Status = "4.0.0"
		}
		rc.State = queue.Deferred
		if next.IsZero() {
			next = now.Add(retryDelay(rc.Attempts))
		}
		rc.Next = next
		r.log.Info("deferred", append(args, "status", rc.Status, "answer", res.Answer, "next", rc.Next.UTC().Format(time.RFC3339))...)
	}
	return notices
}

// wants reports whether a recipient's NOTIFY asks for a notice of kind
// what (RFC 3461 §4.1): without NOTIFY, failures and delays are reported,
// successes are not; NEVER means none.
func wants(n, what transport.Notify) bool {
	if n == 0 {
		return what != transport.NotifySuccess
	}
	return n&transport.NotifyNever == 0 && n&what != 0
}

// finish does what is left once results are in: recipients deferred past
// --max-age fail, failures are bounced, a delay warning goes out when due,
// success notices go out, and the entry is removed when done or saved.
func (r *Runner) finish(c *conf.Conf, e *queue.Envelope, now time.Time, notices []notice, changed bool) {
	// After --max-age a deferred recipient fails (RFC 5321 §4.5.4.1: give
	// up after at least 4-5 days).
	for _, rc := range e.Recipients {
		if rc.State == queue.Deferred && now.Sub(e.Arrived) > r.o.MaxAge {
			rc.State = queue.Failed
			rc.Status = "4.4.7"
			rc.Answer = fmt.Sprintf("gave up after %s in the queue; last answer: %s", r.o.MaxAge, rc.Answer)
			r.log.Info("expired", "qid", e.ID, "to", rc.Addr)
			changed = true
		}
	}
	if hasFailed(e) {
		r.bounce(c, e, now)
		changed = true
	}
	if e.Warned.IsZero() && now.Sub(e.Arrived) > r.o.WarnAfter && r.waiting(e) && r.warn(c, e, now) {
		e.Warned = now
		changed = true
	}
	if len(notices) > 0 {
		r.notifySuccess(c, e, notices, now)
	}
	if e.Done() {
		if err := r.q.Remove(e.ID); err != nil {
			r.log.Error("remove finished entry", "qid", e.ID, "err", err)
			return
		}
		r.log.Info("done", "qid", e.ID)
		return
	}
	if changed {
		if err := r.q.Save(e); err != nil {
			r.log.Error("save envelope", "qid", e.ID, "err", err)
		}
	}
}

// waiting reports whether a delay warning is due: a normal message (not a
// bounce, not from the null sender) with a recipient still waiting.
func (r *Runner) waiting(e *queue.Envelope) bool {
	if e.Sender == address.NullSender || e.Kind != queue.Normal {
		return false
	}
	for _, rc := range e.Recipients {
		if rc.State == queue.Deferred {
			return true
		}
	}
	return false
}

// expand replaces an alias by its targets, followed to the end through
// other aliases (RFC 5321 §3.9.1: the alias is replaced, the sender kept).
// The targets are added to the envelope as new recipients, so each one has
// its own state from now on; a loop fails the alias for good.
func (r *Runner) expand(c *conf.Conf, e *queue.Envelope, rc *queue.Recipient, rcpt *conf.Recipient) {
	var leaves []string
	seen := map[*conf.Alias]bool{}
	var walk func(al *conf.Alias, path []string) error
	walk = func(al *conf.Alias, path []string) error {
		if seen[al] || len(path) > maxAliasDepth {
			return fmt.Errorf("alias loop: %s -> %s", strings.Join(path, " -> "), al.Name)
		}
		seen[al] = true
		defer delete(seen, al)
		path = append(path, al.Name)
		for _, t := range al.Targets {
			switch t.Kind {
			case conf.TargetCommand:
				leaves = append(leaves, "|"+t.Value)
			case conf.TargetMaildir:
				leaves = append(leaves, t.Value)
			default:
				target := t.Value
				if !strings.Contains(target, "@") && rcpt.Domain != "" {
					// A bare name in an alias of a domain means that domain's
					// user first (bob for alice@example.org is
					// bob@example.org), the host's user otherwise.
					if _, err := c.LookupUser(target + "@" + rcpt.Domain); err == nil {
						target += "@" + rcpt.Domain
					}
				}
				sub, err := c.LookupUser(target)
				if err == nil && sub.Alias != nil {
					if err := walk(sub.Alias, path); err != nil {
						return err
					}
					continue
				}
				// An account, a remote address, or an unknown user, which
				// fails on its own try and is named in the bounce.
				a, err := address.Check(target)
				if err != nil {
					return fmt.Errorf("alias %s: target %q: %v", al.Name, t.Value, err)
				}
				leaves = append(leaves, a)
			}
		}
		return nil
	}
	if err := walk(rcpt.Alias, nil); err != nil {
		rc.State, rc.Status, rc.Answer = queue.Failed, "5.4.6", err.Error()
		r.log.Info("failed", "qid", e.ID, "to", rc.Addr, "status", rc.Status, "answer", rc.Answer)
		return
	}
	origin := rc.Addr
	if rc.Parent != "" {
		origin = rc.Parent
	}
	have := map[string]bool{}
	for _, x := range e.Recipients {
		have[strings.ToLower(x.Addr)] = true
	}
	added := 0
	for _, l := range leaves {
		if have[strings.ToLower(l)] || len(e.Recipients) >= queue.MaxRecipients {
			continue
		}
		have[strings.ToLower(l)] = true
		e.Recipients = append(e.Recipients, &queue.Recipient{Addr: l, State: queue.Queued, Parent: origin, Notify: rc.Notify, ORcpt: rc.ORcpt})
		added++
	}
	rc.State, rc.Status = queue.Expanded, "2.0.0"
	rc.Answer = fmt.Sprintf("alias expanded to %d targets", added)
	r.log.Info("expanded", "qid", e.ID, "to", rc.Addr, "targets", strings.Join(leaves, ","))
}

// bounce reports the failed recipients to the sender, and marks them
// reported. Recipients whose NOTIFY does not ask for failures get no
// report (RFC 3461 §4.1). Never to the null sender (RFC 5321 §4.5.5): a
// failed bounce goes to postmaster once, and a failed double bounce is
// dropped and logged.
func (r *Runner) bounce(c *conf.Conf, e *queue.Envelope, now time.Time) {
	var failed, unasked []*queue.Recipient
	for _, rc := range e.Recipients {
		if rc.State != queue.Failed {
			continue
		}
		rc.State = queue.Bounced
		if wants(rc.Notify, transport.NotifyFailure) {
			failed = append(failed, rc)
		} else {
			unasked = append(unasked, rc)
		}
	}
	if len(unasked) > 0 {
		r.log.Info("no bounce: NOTIFY does not ask for one", "qid", e.ID, "to", addrs(unasked))
	}
	if len(failed) == 0 {
		return
	}
	to, kind := e.Sender, queue.Bounce
	switch {
	case e.Kind == queue.DoubleBounce:
		r.log.Error("double bounce failed: dropped", "qid", e.ID, "to", addrs(failed))
		return
	case e.Sender == address.NullSender:
		to, kind = "postmaster", queue.DoubleBounce
	}
	rep := r.report(c, e, failed, nil, mta.ActionFailed, now, to)
	id, err := r.send(e, rep, to, kind, now)
	if err != nil {
		// Leave the recipients failed: the next attempt tries again.
		for _, rc := range failed {
			rc.State = queue.Failed
		}
		r.log.Error("queue bounce", "qid", e.ID, "err", err)
		return
	}
	r.log.Info("bounced", "qid", e.ID, "to", addrs(failed), "bounce", id, "rcpt", to)
}

// warn sends the one delay warning (RFC 3464 Action: delayed) and reports
// whether it is done with: queued, or asked for by no recipient (NOTIFY
// without DELAY, RFC 3461 §4.1).
func (r *Runner) warn(c *conf.Conf, e *queue.Envelope, now time.Time) bool {
	var waiting []*queue.Recipient
	for _, rc := range e.Recipients {
		if rc.State == queue.Deferred && wants(rc.Notify, transport.NotifyDelay) {
			waiting = append(waiting, rc)
		}
	}
	if len(waiting) == 0 {
		return true
	}
	rep := r.report(c, e, waiting, nil, mta.ActionDelayed, now, e.Sender)
	id, err := r.send(e, rep, e.Sender, queue.Bounce, now)
	if err != nil {
		r.log.Error("queue delay warning", "qid", e.ID, "err", err)
		return false
	}
	r.log.Info("delay warning", "qid", e.ID, "warning", id, "rcpt", e.Sender)
	return true
}

// notifySuccess sends the "delivered" and "relayed" notices NOTIFY=SUCCESS
// asked for (RFC 3461 §4.2, RFC 3464 §2.3.3). A lost one is not retried:
// the mail itself went through.
func (r *Runner) notifySuccess(c *conf.Conf, e *queue.Envelope, notices []notice, now time.Time) {
	if e.Sender == address.NullSender || e.Kind != queue.Normal {
		return
	}
	var rcpts []*queue.Recipient
	var actions []string
	for _, n := range notices {
		rcpts = append(rcpts, n.rc)
		actions = append(actions, n.action)
	}
	rep := r.report(c, e, rcpts, actions, "", now, e.Sender)
	id, err := r.send(e, rep, e.Sender, queue.Bounce, now)
	if err != nil {
		r.log.Error("queue success notice", "qid", e.ID, "err", err)
		return
	}
	r.log.Info("success notice", "qid", e.ID, "to", addrs(rcpts), "notice", id, "rcpt", e.Sender)
}

// report builds the RFC 3464 report about rcpts: with one action for all,
// or actions[i] for rcpts[i].
func (r *Runner) report(c *conf.Conf, e *queue.Envelope, rcpts []*queue.Recipient, actions []string, action string, now time.Time, to string) *mta.Report {
	rep := &mta.Report{ReportingMTA: c.Hostname, QueueID: e.ID, EnvID: e.EnvID, Arrived: e.Arrived, To: to, Date: now}
	for i, rc := range rcpts {
		act := action
		if actions != nil {
			act = actions[i]
		}
		rr := mta.ReportRecipient{Final: rc.Addr, Original: rc.Parent, Action: act, Status: rc.Status, Diagnostic: rc.Answer, DiagType: rc.DiagType, LastAttempt: now}
		if typ, addr, ok := strings.Cut(rc.ORcpt, ";"); ok {
			// RFC 3464 §2.3.1: the ORCPT the sender gave, as given.
			rr.Original, rr.OriginalType = addr, strings.ToLower(typ)
		}
		if rc.RemoteMTA != "" {
			rr.RemoteMTA = remoteHost(rc.RemoteMTA)
		}
		if strings.HasPrefix(rc.Addr, "|") || strings.HasPrefix(rc.Addr, "/") {
			// Not an address: report the alias, and say what failed in the
			// diagnostic.
			rr.Final = rc.Parent
			if rc.ORcpt == "" {
				rr.Original = ""
			}
			rr.Diagnostic = rc.Addr + ": " + rc.Answer
		}
		if rr.Status == "" {
			rr.Status = "4.0.0"
		}
		switch act {
		case mta.ActionDelayed:
			if strings.HasPrefix(rr.Status, "2.") || strings.HasPrefix(rr.Status, "5.") {
				rr.Status = "4.0.0"
			}
			rr.RetryUntil = e.Arrived.Add(r.o.MaxAge)
			if rc.Attempts == 0 {
				rr.LastAttempt = time.Time{}
			}
		case mta.ActionDelivered, mta.ActionRelayed:
			rr.Status = "2.0.0"
		}
		rep.Recipients = append(rep.Recipients, rr)
	}
	// RFC 3461 §4.3: RET=FULL returns the whole message, in a report of a
	// failure only; otherwise, and by default, the header alone (as
	// Postfix's and Sendmail's headers-only reports do: a bounce need not
	// carry a large message back).
	if f, err := r.q.Message(e); err == nil {
		if e.Ret == "FULL" && action == mta.ActionFailed {
			rep.Message = f
		} else {
			rep.Header = mta.ReadHeader(f)
			f.Close()
		}
	}
	return rep
}

// remoteHost is the host name of a RemoteMTA "host[addr]:port", or the
// address literal when there is no name, for RFC 3464 §2.3.5's
// Remote-MTA: dns; host.
func remoteHost(s string) string {
	if i := strings.IndexByte(s, '['); i > 0 {
		return s[:i]
	} else if i == 0 {
		if j := strings.IndexByte(s, ']'); j > 0 {
			return s[:j+1]
		}
	}
	return s
}

// send queues a report as a new message from the null sender, through the
// same door as everything else, and takes it in at once. The report is
// streamed into the queue: a RET=FULL report carries a message of any size
// without holding it in memory.
func (r *Runner) send(orig *queue.Envelope, rep *mta.Report, to string, kind queue.Kind, now time.Time) (string, error) {
	e := &queue.Envelope{Sender: address.NullSender, UID: -1, Kind: kind,
		Recipients: []*queue.Recipient{{Addr: to, State: queue.Queued}}}
	e.ID = r.q.NewID(now)
	if rep.Message != nil {
		e.EightBit = orig.EightBit
		if c, ok := rep.Message.(io.Closer); ok {
			defer c.Close()
		}
	}
	rep.MessageID = e.ID + "." + string(kind) + "@" + rep.ReportingMTA
	pr, pw := io.Pipe()
	go func() {
		_, err := rep.WriteTo(pw)
		pw.CloseWithError(err)
	}()
	id, err := r.q.Inject(e, pr, now)
	pr.CloseWithError(io.ErrClosedPipe) // lets WriteTo end if Inject stopped early
	if err != nil {
		return "", err
	}
	if _, err := r.q.Ingest(id); err != nil {
		return id, nil // the scan takes it in
	}
	r.mu.Lock()
	if !r.known[id] {
		r.known[id] = true
		r.fresh = append(r.fresh, id)
	}
	r.mu.Unlock()
	return id, nil
}

func addrs(rs []*queue.Recipient) string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Addr)
	}
	return strings.Join(out, ",")
}
