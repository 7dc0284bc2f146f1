package maildir

import (
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultWatchInterval is how often a Watch looks at the folder's
// directories itself, for the changes inotify does not report: those
// made by another host over NFS or another shared file system.
const DefaultWatchInterval = time.Second

// Watch tells that a folder may have changed: a message delivered,
// renamed (flags) or removed, by this process, another process or, within
// the interval, another host. It is what IDLE waits on (RFC 2177); a
// change is then read with View.Poll.
type Watch struct {
	// C receives a value after a change; changes that come while a value
	// waits unread are folded into it.
	C <-chan struct{}

	c       chan struct{}
	watcher *fsnotify.Watcher
	stop    chan struct{}
	done    sync.WaitGroup
	once    sync.Once
}

// Watch starts watching the folder: inotify on new/, cur/ and the folder's
// directory (where tern-keywords changes) where the system
// offers it, and a look at the directories' stamps every interval (0 for
// DefaultWatchInterval) in any case. Close stops it.
func (f *Folder) Watch(interval time.Duration) (*Watch, error) {
	return f.watch(interval, true)
}

// watch is Watch; without inotify it is what a file system that reports
// nothing (NFS, another host's change) leaves.
func (f *Folder) watch(interval time.Duration, useInotify bool) (*Watch, error) {
	if interval <= 0 {
		interval = DefaultWatchInterval
	}
	c := make(chan struct{}, 1)
	w := &Watch{C: c, c: c, stop: make(chan struct{})}
	// inotify is a help, not a need: without it (no more watches left,
	// a file system that does not report) the stamps still are looked
	// at every interval.
	if useInotify {
		w.startInotify(f)
	}
	w.done.Add(1)
	go w.poll(f, interval)
	return w, nil
}

func (w *Watch) startInotify(f *Folder) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return
	}
	for _, dir := range []string{f.path, filepath.Join(f.path, "new"), filepath.Join(f.path, "cur")} {
		if fw.Add(dir) != nil {
			fw.Close()
			return
		}
	}
	w.watcher = fw
	w.done.Add(1)
	go w.events(f)
}

func (w *Watch) signal() {
	select {
	case w.c <- struct{}{}:
	default:
	}
}

func (w *Watch) events(f *Folder) {
	defer w.done.Done()
	for {
		select {
		case <-w.stop:
			return
		case ev, ok := <-w.watcher.Events:
			if !ok {
				return
			}
			// In the folder's own directory only new keywords matter
			// (a FLAGS response); lock files come and go with every
			// change, and the index changes when a message does, which
			// new/ and cur/ tell.
			if filepath.Dir(ev.Name) == f.path && filepath.Base(ev.Name) != "tern-keywords" {
				continue
			}
			w.signal()
		case _, ok := <-w.watcher.Errors:
			if !ok {
				return
			}
			w.signal() // events may have been lost: look
		}
	}
}

func (w *Watch) poll(f *Folder, interval time.Duration) {
	defer w.done.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	var last [2]dirStamp
	look := func() [2]dirStamp {
		var s [2]dirStamp
		s[0], _ = stampOf(filepath.Join(f.path, "new"))
		s[1], _ = stampOf(filepath.Join(f.path, "cur"))
		return s
	}
	last = look()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			if now := look(); now != last {
				last = now
				w.signal()
			}
		}
	}
}

// Close stops the watch.
func (w *Watch) Close() error {
	var err error
	w.once.Do(func() {
		close(w.stop)
		if w.watcher != nil {
			err = w.watcher.Close()
		}
		w.done.Wait()
	})
	return err
}
