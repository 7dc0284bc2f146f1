// Package groupsync is the group commit of databases for directory
// flushes: many writers that each need a directory fsync after their own
// change share one. The queue's incoming/ and env/ and the Maildirs that
// tern-lmtpd delivers into use it.
package groupsync

import "sync"

// Group runs a directory fsync for many callers at once: each caller
// needs a sync that started after its own change (a rename into the
// directory), and one sync serves every change made before it started. A
// process queueing for many connections at once (tern-smtpd) then pays
// one directory fsync for a batch of messages instead of one each, while
// no caller returns before its own entry is on disk. This is the group
// commit of databases; a single tern-enqueue pays exactly what it did.
type Group struct {
	mu        sync.Mutex
	cond      *sync.Cond
	running   bool
	started   uint64 // generations of syncs started
	completed uint64 // the newest generation finished
	err       error  // that generation's result
}

// Do returns once a call of run that started after Do was called has
// finished, with its error. Calls of run never overlap.
func (g *Group) Do(run func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cond == nil {
		g.cond = sync.NewCond(&g.mu)
	}
	// A run already going may have started before our change: the one
	// after it is ours.
	want := g.started + 1
	for g.completed < want {
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
		g.started++
		gen := g.started
		g.mu.Unlock()
		err := run()
		g.mu.Lock()
		g.running = false
		g.completed, g.err = gen, err
		g.cond.Broadcast()
	}
	// Any run that started after our change covers it; the newest
	// finished one did.
	return g.err
}
