package runner

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tern-mail/tern/mta/queue"
)

func TestRetryDelay(t *testing.T) {
	want := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 16 * time.Minute, 32 * time.Minute, time.Hour, time.Hour, time.Hour}
	for i, w := range want {
		if got := retryDelay(i + 1); got != w {
			t.Errorf("retryDelay(%d) = %v, want %v", i+1, got, w)
		}
	}
}

// world is a queue and control directory with users whose "tern-deliver"
// is a shell script: it appends the message to $HOME/got and exits with
// the status in $HOME/status, if any.
type world struct {
	dir, queue, conf, deliver string
}

func newWorld(t testing.TB, users ...string) *world {
	dir := t.TempDir()
	w := &world{dir: dir, queue: filepath.Join(dir, "spool"), conf: filepath.Join(dir, "etc"), deliver: filepath.Join(dir, "deliver")}
	os.MkdirAll(w.queue, 0o755)
	os.MkdirAll(w.conf, 0o755)
	os.WriteFile(filepath.Join(w.conf, "hostname"), []byte("mx.example.org\n"), 0o644)
	os.WriteFile(filepath.Join(w.conf, "domains"), []byte("example.org\n"), 0o644)
	var u strings.Builder
	for _, name := range users {
		home := filepath.Join(dir, "home", name)
		os.MkdirAll(home, 0o755)
		fmt.Fprintf(&u, "%s@example.org:{PLAIN}x:::%s:%s::\n", name, name, home)
	}
	os.WriteFile(filepath.Join(w.conf, "users"), []byte(u.String()), 0o644)
	script := "#!/bin/sh\ncat >> \"$HOME/got\" || exit 75\necho >> \"$HOME/got\"\ntest -f \"$HOME/status\" && exit $(cat \"$HOME/status\")\nexit 0\n"
	os.WriteFile(w.deliver, []byte(script), 0o755)
	return w
}

func (w *world) inject(t testing.TB, sender string, rcpts ...string) string {
	t.Helper()
	q, err := queue.Open(w.queue)
	if err != nil {
		t.Fatal(err)
	}
	e := &queue.Envelope{Sender: sender, UID: -1}
	for _, r := range rcpts {
		e.Recipients = append(e.Recipients, &queue.Recipient{Addr: r, State: queue.Queued})
	}
	id, err := q.Inject(e, strings.NewReader("Subject: x\n\nbody\n"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (w *world) got(user string) int {
	b, _ := os.ReadFile(filepath.Join(w.dir, "home", user, "got"))
	return strings.Count(string(b), "Subject: x\n")
}

func (w *world) runner(t *testing.T, once bool, sigs chan os.Signal) *Runner {
	t.Helper()
	r, err := New(Options{Queue: w.queue, Conf: w.conf, Deliver: w.deliver, Concurrency: 3, MaxAge: time.Hour, WarnAfter: time.Hour,
		ScanInterval: 50 * time.Millisecond, Timeout: 10 * time.Second, Once: once},
		Env{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: time.Now, Signals: sigs, Euid: os.Geteuid()})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRunnerOnce(t *testing.T) {
	w := newWorld(t, "bob", "carol")
	for i := 0; i < 20; i++ {
		w.inject(t, "joe@example.net", "bob@example.org", "carol@example.org")
	}
	if err := w.runner(t, true, nil).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if w.got("bob") != 20 || w.got("carol") != 20 {
		t.Errorf("bob %d, carol %d; want 20 each", w.got("bob"), w.got("carol"))
	}
	q, _ := queue.Open(w.queue)
	if ids, _ := q.IDs(); len(ids) != 0 {
		t.Errorf("left: %v", ids)
	}
}

// TestRunnerDaemon runs the daemon in-process (for the race detector):
// submissions while it runs, a temporary failure, SIGHUP, SIGTERM.
func TestRunnerDaemon(t *testing.T) {
	w := newWorld(t, "bob", "carol")
	os.WriteFile(filepath.Join(w.dir, "home", "carol", "status"), []byte("75\n"), 0o644)
	sigs := make(chan os.Signal, 2)
	r := w.runner(t, false, sigs)
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	for i := 0; i < 30; i++ {
		w.inject(t, "joe@example.net", "bob@example.org", "carol@example.org")
	}
	deadline := time.Now().Add(20 * time.Second)
	for (w.got("bob") < 30 || w.got("carol") < 30) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if w.got("bob") != 30 || w.got("carol") != 30 {
		t.Errorf("bob %d, carol %d tries; want 30 each", w.got("bob"), w.got("carol"))
	}
	sigs <- syscall.SIGHUP
	sigs <- syscall.SIGTERM
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no stop after SIGTERM")
	}
	// carol's are deferred, one try each, due in a minute.
	q, _ := queue.Open(w.queue)
	ids, _ := q.IDs()
	if len(ids) != 30 {
		t.Fatalf("%d entries left, want 30", len(ids))
	}
	e, _ := q.Load(ids[0])
	rc := e.Recipients[1]
	if rc.State != queue.Deferred || rc.Attempts != 1 || time.Until(rc.Next) < 50*time.Second {
		t.Errorf("carol: %+v", rc)
	}
}

// TestFailureLine: the line kept from a delivery program's output is the
// one that says what failed, not the hint after it (issue #19).
func TestFailureLine(t *testing.T) {
	for _, c := range []struct{ out, want string }{
		{"tern-deliver: fatal: unknown flag -x\ntern-deliver: hint: see 'tern-deliver --help'\n", "tern-deliver: fatal: unknown flag -x"},
		{"procmail: error: cannot lock\n", "procmail: error: cannot lock"},
		{"first\nfilter says no\n", "filter says no"},
		{"filter says no\nprog: hint: try again\n\n", "filter says no"},
		{"tern-deliver: fatal: over quota (#4.2.2)\nsome noise after\n", "tern-deliver: fatal: over quota (#4.2.2)"},
		{"", ""},
	} {
		b := &tailBuffer{max: 2048}
		b.Write([]byte(c.out))
		if got := b.failureLine(); got != c.want {
			t.Errorf("failureLine(%q) = %q, want %q", c.out, got, c.want)
		}
	}
}

// FuzzFailureLine: a delivery program's output, whatever it is, gives one
// line of it, without a line end.
func FuzzFailureLine(f *testing.F) {
	f.Add([]byte("tern-deliver: fatal: x\ntern-deliver: hint: y\n"))
	f.Add([]byte("\n\n\n"))
	f.Add([]byte("a: error: \x00\xff\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		b := &tailBuffer{max: 2048}
		b.Write(out)
		got := b.failureLine()
		if strings.ContainsAny(got, "\n") || !strings.Contains(string(b.b), got) {
			t.Errorf("failureLine(%q) = %q", out, got)
		}
	})
}
