package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/mta"
	"github.com/tern-mail/tern/mta/queue"
)

// maxAliasDepth bounds alias expansion; deeper is taken for a loop.
const maxAliasDepth = 20

// attempt tries every due recipient of one entry, under its lock, and
// saves the outcome; bounces and the delay warning go out from here.
func (r *Runner) attempt(ctx context.Context, id string, force bool) {
	unlock, err := r.q.Lock(id)
	if err != nil {
		if !os.IsNotExist(err) {
			r.log.Error("lock entry", "qid", id, "err", err)
		}
		return
	}
	defer unlock()
	e, err := r.q.Load(id)
	if err != nil {
		r.damaged(id, err)
		return
	}
	if e.Hold {
		return
	}
	c := r.currentConf()
	now := r.env.Now()
	changed := false
	// Expansion appends recipients: the loop picks them up in the same pass.
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
		changed = true
		r.deliver(ctx, c, e, rc)
	}
	// After --max-age a deferred recipient fails (RFC 5321 §4.5.4.1: give
	// up after at least 4-5 days).
	for _, rc := range e.Recipients {
		if rc.State == queue.Deferred && now.Sub(e.Arrived) > r.o.MaxAge {
			rc.State = queue.Failed
			rc.Status = "4.4.7"
			rc.Answer = fmt.Sprintf("gave up after %s in the queue; last answer: %s", r.o.MaxAge, rc.Answer)
			r.log.Info("expired", "qid", id, "to", rc.Addr)
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
	if e.Done() {
		if err := r.q.Remove(id); err != nil {
			r.log.Error("remove finished entry", "qid", id, "err", err)
			return
		}
		r.log.Info("done", "qid", id)
		return
	}
	if changed {
		if err := r.q.Save(e); err != nil {
			r.log.Error("save envelope", "qid", id, "err", err)
		}
	}
}

// waiting reports whether a delay warning is due: a normal message (not a
// bounce, not from the null sender) with a recipient still waiting.
func (r *Runner) waiting(e *queue.Envelope) bool {
	if e.Sender == mta.NullSender || e.Kind != queue.Normal {
		return false
	}
	for _, rc := range e.Recipients {
		if rc.State == queue.Deferred || rc.State == queue.Remote {
			return true
		}
	}
	return false
}

// deliver makes one delivery attempt for one recipient and records its
// outcome in rc.
func (r *Runner) deliver(ctx context.Context, c *conf.Conf, e *queue.Envelope, rc *queue.Recipient) {
	rc.Attempts++
	var res result
	switch {
	case strings.HasPrefix(rc.Addr, "|"), strings.HasPrefix(rc.Addr, "/"):
		res = r.runTarget(ctx, c, e, rc)
	default:
		rcpt, err := c.LookupUser(rc.Addr)
		switch {
		case errors.Is(err, conf.ErrNotLocal):
			rc.State, rc.Status = queue.Remote, "4.3.2"
			rc.Answer = "waiting for remote delivery, which this version of tern-queue does not do yet"
			r.log.Info("deferred", "qid", e.ID, "to", rc.Addr, "status", rc.Status, "answer", rc.Answer)
			return
		case errors.Is(err, conf.ErrNoUser):
			res = result{code: 67, status: "5.1.1", answer: "no such user here"}
		case err != nil:
			res = result{code: 75, status: "4.3.0", answer: err.Error()}
		case rcpt.Alias != nil:
			r.expand(c, e, rc, rcpt)
			return
		default:
			res = r.runDeliver(ctx, c, e, rc, rcpt)
		}
	}
	rc.Status, rc.Answer = res.status, res.answer
	switch {
	case res.code == 0:
		rc.State = queue.Delivered
		r.log.Info("delivered", "qid", e.ID, "to", rc.Addr, "answer", res.answer)
	case res.code == 75:
		rc.State = queue.Deferred
		rc.Next = r.env.Now().Add(retryDelay(rc.Attempts))
		r.log.Info("deferred", "qid", e.ID, "to", rc.Addr, "status", rc.Status, "answer", res.answer, "next", rc.Next.UTC().Format(time.RFC3339))
	default:
		rc.State = queue.Failed
		r.log.Info("failed", "qid", e.ID, "to", rc.Addr, "status", rc.Status, "answer", res.answer)
	}
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
				a, err := mta.CheckAddress(target)
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
		e.Recipients = append(e.Recipients, &queue.Recipient{Addr: l, State: queue.Queued, Parent: origin})
		added++
	}
	rc.State, rc.Status = queue.Expanded, "2.0.0"
	rc.Answer = fmt.Sprintf("alias expanded to %d targets", added)
	r.log.Info("expanded", "qid", e.ID, "to", rc.Addr, "targets", strings.Join(leaves, ","))
}

// bounce reports the failed recipients to the sender, and marks them
// reported. Never to the null sender (RFC 5321 §4.5.5): a failed bounce
// goes to postmaster once, and a failed double bounce is dropped and
// logged.
func (r *Runner) bounce(c *conf.Conf, e *queue.Envelope, now time.Time) {
	var failed []*queue.Recipient
	for _, rc := range e.Recipients {
		if rc.State == queue.Failed {
			failed = append(failed, rc)
			rc.State = queue.Bounced
		}
	}
	to, kind := e.Sender, queue.Bounce
	switch {
	case e.Kind == queue.DoubleBounce:
		r.log.Error("double bounce failed: dropped", "qid", e.ID, "to", addrs(failed))
		return
	case e.Sender == mta.NullSender:
		to, kind = "postmaster", queue.DoubleBounce
	}
	rep := r.report(c, e, failed, mta.ActionFailed, now, to)
	id, err := r.send(rep, to, kind, now)
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
// whether it is queued.
func (r *Runner) warn(c *conf.Conf, e *queue.Envelope, now time.Time) bool {
	var waiting []*queue.Recipient
	for _, rc := range e.Recipients {
		if rc.State == queue.Deferred || rc.State == queue.Remote {
			waiting = append(waiting, rc)
		}
	}
	rep := r.report(c, e, waiting, mta.ActionDelayed, now, e.Sender)
	id, err := r.send(rep, e.Sender, queue.Bounce, now)
	if err != nil {
		r.log.Error("queue delay warning", "qid", e.ID, "err", err)
		return false
	}
	r.log.Info("delay warning", "qid", e.ID, "warning", id, "rcpt", e.Sender)
	return true
}

func (r *Runner) report(c *conf.Conf, e *queue.Envelope, rcpts []*queue.Recipient, action string, now time.Time, to string) *mta.Report {
	rep := &mta.Report{ReportingMTA: c.Hostname, QueueID: e.ID, Arrived: e.Arrived, To: to, Date: now}
	if f, err := r.q.Message(e); err == nil {
		rep.Header = mta.ReadHeader(f)
		f.Close()
	}
	for _, rc := range rcpts {
		rr := mta.ReportRecipient{Final: rc.Addr, Original: rc.Parent, Action: action, Status: rc.Status, Diagnostic: rc.Answer, LastAttempt: now}
		if strings.HasPrefix(rc.Addr, "|") || strings.HasPrefix(rc.Addr, "/") {
			// Not an address: report the alias, and say what failed in the
			// diagnostic.
			rr.Final, rr.Original = rc.Parent, ""
			rr.Diagnostic = rc.Addr + ": " + rc.Answer
		}
		if rr.Status == "" {
			rr.Status = "4.0.0"
		}
		if action == mta.ActionDelayed {
			if strings.HasPrefix(rr.Status, "2.") || strings.HasPrefix(rr.Status, "5.") {
				rr.Status = "4.0.0"
			}
			rr.RetryUntil = e.Arrived.Add(r.o.MaxAge)
			if rc.Attempts == 0 {
				rr.LastAttempt = time.Time{}
			}
		}
		rep.Recipients = append(rep.Recipients, rr)
	}
	return rep
}

// send queues a report as a new message from the null sender, through the
// same door as everything else, and takes it in at once.
func (r *Runner) send(rep *mta.Report, to string, kind queue.Kind, now time.Time) (string, error) {
	e := &queue.Envelope{Sender: mta.NullSender, UID: -1, Kind: kind,
		Recipients: []*queue.Recipient{{Addr: to, State: queue.Queued}}}
	e.ID = r.q.NewID(now)
	rep.MessageID = e.ID + "." + string(kind) + "@" + rep.ReportingMTA
	var msg bytes.Buffer
	if _, err := rep.WriteTo(&msg); err != nil {
		return "", err
	}
	id, err := r.q.Inject(e, &msg, now)
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
