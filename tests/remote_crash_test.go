package tests

import (
	"fmt"
	"io"
	"log"
	"math/rand"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// slowMX is an MX host that takes its time over each transaction, so that
// a SIGKILL of tern-queue lands in the middle of one, and that says how
// many transactions are open at a given moment.
type slowMX struct {
	*mxHost
	delay time.Duration

	mu   sync.Mutex
	open int // transactions between MAIL and the answer to the final dot
}

type slowSession struct {
	*mxSession
	m    *slowMX
	open bool
}

func (s *slowSession) setOpen(on bool) {
	if s.open == on {
		return
	}
	s.open = on
	s.m.mu.Lock()
	if on {
		s.m.open++
	} else {
		s.m.open--
	}
	s.m.mu.Unlock()
}

func (s *slowSession) Mail(from string, o *smtp.MailOptions) error {
	s.setOpen(true)
	return s.mxSession.Mail(from, o)
}

func (s *slowSession) Data(r io.Reader) error {
	defer s.setOpen(false)
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	// The message is here; the answer is late. A client killed now has
	// handed the message over without knowing it: a duplicate to come.
	time.Sleep(s.m.delay)
	s.msg.data = b
	s.h.mu.Lock()
	s.h.msgs = append(s.h.msgs, s.msg)
	s.h.mu.Unlock()
	return nil
}

func (s *slowSession) Reset()        { s.setOpen(false); s.mxSession.Reset() }
func (s *slowSession) Logout() error { s.setOpen(false); return nil }

func (m *slowMX) openNow() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.open
}

// envInt reads a positive integer from the environment, or gives def.
func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// crashSlots is how many transactions tern-queue may have open with the
// MX at once.
const crashSlots = 4

var crashID = regexp.MustCompile(`(?m)^Message-ID: <crash\.(\d+)@example\.org>\r$`)

// TestRemoteCrash SIGKILLs the tern-queue daemon again and again while it
// has transactions open with a slow MX host, restarting it each time; in
// the end every message has arrived at least once. Messages the MX took
// but whose 250 the killed process never read arrive twice: delivery is
// at least once, and the test logs those duplicates. It fails if no kill
// landed in the middle of a transaction.
//
// TERN_CRASH_MESSAGES and TERN_CRASH_KILLS make it longer
// (tests/bench/remote-crash.sh).
func TestRemoteCrash(t *testing.T) {
	nMsgs := envInt(t, "TERN_CRASH_MESSAGES", 40)
	maxKills := envInt(t, "TERN_CRASH_KILLS", 12)
	w := newMXWorld(t)
	m := &slowMX{delay: 120 * time.Millisecond}
	m.mxHost = w.mx("mx.remote.example", func(h *mxHost) {
		h.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
			h.mu.Lock()
			h.conns++
			n := h.conns
			h.mu.Unlock()
			return &slowSession{mxSession: &mxSession{h: h, c: c, conn: n}, m: m}, nil
		}))
		h.srv.Domain = h.name
		h.srv.ErrorLog = log.New(io.Discard, "", 0) // killed clients reset their connections
	})
	w.dns.MX("remote.example", 10, "mx.remote.example")
	for i := range nMsgs {
		msg := fmt.Sprintf("From: bob@example.org\nTo: r%d@remote.example\nSubject: crash %d\nMessage-ID: <crash.%d@example.org>\n\n%s\n", i, i, i, strings.Repeat("body text\n", rand.Intn(200)))
		w.enqueue(msg, "-f", "bob@example.org", "--", fmt.Sprintf("r%d@remote.example", i%7))
	}
	args := append(append([]string{}, w.args...), "--destination-concurrency", strconv.Itoa(crashSlots), "--scan-interval", "200ms")
	kills, landed := 0, 0
	for kills < maxKills && len(w.list()) > 0 {
		p := w.Start(nil, nil, "tern-queue", args...)
		time.Sleep(time.Duration(100+rand.Intn(250)) * time.Millisecond)
		open := m.openNow()
		p.Kill()
		res, ok := p.Wait(10 * time.Second)
		if !ok {
			t.Fatalf("tern-queue outlived SIGKILL")
		}
		if res.Code != 128+int(syscall.SIGKILL) {
			// It ended on its own before the kill: a real failure.
			t.Fatalf("tern-queue ended before the kill: %v", res)
		}
		kills++
		if open > 0 {
			landed++
		}
	}
	// Whatever a kill left behind is delivered by a run left alone.
	for try := 0; try < 5 && len(w.list()) > 0; try++ {
		w.queue(nil, "--flush")
	}
	if l := w.list(); len(l) != 0 {
		t.Fatalf("after %d kills the queue still holds %+v", kills, l)
	}
	if landed == 0 {
		t.Fatalf("none of %d kills landed during a transaction: the MX is too fast for this test", kills)
	}
	seen := map[int]int{}
	for _, msg := range m.received() {
		sm := crashID.FindSubmatch(msg.data)
		if sm == nil {
			t.Fatalf("the MX got a message that is not one of the test's:\n%.300s", msg.data)
		}
		n, _ := strconv.Atoi(string(sm[1]))
		seen[n]++
	}
	var lost, dups []string
	for i := range nMsgs {
		switch {
		case seen[i] == 0:
			lost = append(lost, strconv.Itoa(i))
		case seen[i] > 1:
			dups = append(dups, fmt.Sprintf("crash.%d x%d", i, seen[i]))
		}
	}
	sort.Strings(dups)
	t.Logf("%d messages, %d kills, %d during a transaction, %d connections; duplicates (%d): %s",
		nMsgs, kills, landed, m.connections(), len(dups), strings.Join(dups, ", "))
	if len(lost) > 0 {
		t.Fatalf("lost messages: %s", strings.Join(lost, ", "))
	}
	// A kill orphans at most the transactions it interrupted, one a
	// delivery slot; more duplicates than that are tern sending twice on
	// its own.
	extra := 0
	for _, n := range seen {
		extra += n - 1
	}
	if extra > kills*crashSlots {
		t.Errorf("%d duplicate copies from %d kills of at most %d transactions each", extra, kills, crashSlots)
	}
}
