package conf

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tern-mail/tern/internal/auth"
)

// files are the control directory's files that Load reads.
var files = []string{"hostname", "domains", "users", "aliases", "relay", "routes", "tls.crt", "tls.key"}

// Watcher keeps a control directory loaded for a long-running server (a
// --listen tern-smtpd): Current looks at the files' stamps at most once a
// second and reads the directory again when one changed, so a user added
// with tern-passwd, or an alias, is known within a second without a
// restart. A directory that no longer loads (a half-edited file) leaves
// the previous one in force, and says so in the log once per change.
type Watcher struct {
	Dir    string
	Loader Loader
	Log    *slog.Logger
	Now    func() time.Time

	mu      sync.Mutex
	cur     *Conf
	stamps  []stampOrNone
	checked time.Time
	failed  []stampOrNone // the stamps of the last failed reload, not to log it again
}

type stampOrNone struct {
	stamp  auth.FileStamp
	exists bool
}

// Watch loads dir and returns a Watcher over it; the first load's error is
// the caller's (a server does not start on a bad directory).
func Watch(dir string, l Loader, log *slog.Logger) (*Watcher, error) {
	w := &Watcher{Dir: dir, Loader: l, Log: log, Now: time.Now}
	stamps := w.stat()
	c, err := l.Load(dir)
	if err != nil {
		return nil, err
	}
	w.cur, w.stamps, w.checked = c, stamps, w.Now()
	return w, nil
}

// Current returns the control directory as it is now, give or take a
// second.
func (w *Watcher) Current() *Conf {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.Now()
	if now.Sub(w.checked) < time.Second && !now.Before(w.checked) {
		return w.cur
	}
	w.checked = now
	stamps := w.stat()
	if same(stamps, w.stamps) {
		return w.cur
	}
	// Stamps first, then the contents: a change made while reading is
	// seen at the next look.
	c, err := w.Loader.Load(w.Dir)
	if err != nil {
		if !same(stamps, w.failed) && w.Log != nil {
			w.Log.Error("control directory changed but does not load; the previous one stays in force", "err", err)
		}
		w.failed = stamps
		return w.cur
	}
	if w.Log != nil {
		w.Log.Info("control directory read again", "dir", w.Dir)
	}
	w.cur, w.stamps, w.failed = c, stamps, nil
	return c
}

func (w *Watcher) stat() []stampOrNone {
	out := make([]stampOrNone, len(files))
	for i, f := range files {
		st, err := os.Stat(filepath.Join(w.Dir, f))
		if err == nil {
			out[i] = stampOrNone{auth.StampOf(st), true}
		} else if !errors.Is(err, fs.ErrNotExist) {
			// Unreadable now: a difference from any stamp, so the load
			// is tried and its error reported.
			out[i] = stampOrNone{exists: true}
		}
	}
	return out
}

func same(a, b []stampOrNone) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
