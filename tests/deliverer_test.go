package tests

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// delivererRoot is a queue root whose accounts bob and carol have uid
// 65534, so that tern-queue, as root, hands their mail to a deliverer
// (tern-deliver --lmtp) running as them.
func delivererRoot(t *testing.T) (r *Root, bob, carol string) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipLoudly(t, "this test needs root: tern-queue keeps a deliverer per account uid only as root, or for its own uid")
	}
	r = NewRoot(t)
	bob, carol = lmtpAccounts(r)
	return r, bob, carol
}

// findProc returns the pid of a process whose command line is args,
// or 0.
func findProc(args ...string) int {
	want := []byte(strings.Join(args, "\x00") + "\x00")
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && bytes.Equal(b, want) {
			return pid
		}
	}
	return 0
}

// parentNamed walks up from pid to the first process named comm.
func parentNamed(pid int, comm string) int {
	for i := 0; i < 10 && pid > 1; i++ {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0
		}
		s := string(b)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if s[open+1:close] == comm {
			return pid
		}
		f := strings.Fields(s[close+2:])
		pid, _ = strconv.Atoi(f[1])
	}
	return 0
}

// waitFor polls cond every 20 ms for at most limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("after %s: %s", limit, what)
}

// TestDelivererLMTP: with --local-delivery lmtp, tern-queue --once
// delivers to accounts through tern-lmtpd as the account's uid, answers
// per recipient (carol over quota is deferred 4.2.2 while bob gets his
// copy), and with exec the same mail goes through tern-deliver with no
// deliverer started.
func TestDelivererLMTP(t *testing.T) {
	for _, mode := range []string{"lmtp", "exec"} {
		t.Run(mode, func(t *testing.T) {
			r, bob, carol := delivererRoot(t)
			for i := 0; i < 20; i++ {
				r.enqueue(fmt.Sprintf("Subject: lmtp %d\n\nbody %d\n.dot line\n", i, i), "-f", "<>", "--", "bob@example.org")
			}
			r.enqueue("Subject: team\n\nto both\n", "-f", "joe@example.net", "--", "team@example.org")
			q := r.runQueue("--local-delivery", mode)
			if got := len(inbox(t, bob)); got != 21 {
				t.Fatalf("bob has %d messages, want 21\n%s", got, q.Stderr)
			}
			for _, m := range inbox(t, bob) {
				if !strings.HasPrefix(m, "Return-Path: <") || !strings.Contains(m, "Delivered-To: bob@example.org") {
					t.Errorf("delivered without Return-Path and Delivered-To:\n%s", m)
				}
				if strings.Contains(m, "Subject: lmtp") && !strings.Contains(m, "\n.dot line\n") {
					t.Errorf("a dot line did not survive:\n%q", m)
				}
			}
			names := files(t, filepath.Join(bob, "new"))
			var st syscall.Stat_t
			if err := syscall.Stat(filepath.Join(bob, "new", names[0]), &st); err != nil || st.Uid != 65534 {
				t.Errorf("delivered as uid %d (%v), want 65534", st.Uid, err)
			}
			if got := len(inbox(t, carol)); got != 0 {
				t.Errorf("carol, over quota, has %d messages", got)
			}
			l := r.list()
			if len(l) != 1 {
				t.Fatalf("queue left: %+v", l)
			}
			for _, rc := range l[0].Recipients {
				switch {
				case rc.Address == "bob@example.org" && rc.State != "delivered",
					rc.Address == "carol@example.org" && (rc.State != "deferred" || rc.Status != "4.2.2"):
					t.Errorf("%s: %s %q", rc.Address, rc.State, rc.Answer)
				}
			}
			if lmtp := strings.Contains(q.Stderr, "tern-lmtpd:"); lmtp != (mode == "lmtp") {
				t.Errorf("--local-delivery %s: tern-lmtpd ran: %v\n%s", mode, lmtp, q.Stderr)
			}
		})
	}
}

// TestDelivererKilled: a deliverer SIGKILLed in the middle of a message
// (its ~/.forward command still running) loses nothing: the recipient is
// deferred, and tried again with a new deliverer the message arrives.
func TestDelivererKilled(t *testing.T) {
	r, bob, _ := delivererRoot(t)
	home := filepath.Dir(bob)
	fwd := filepath.Join(home, ".forward")
	// The first delivery hangs in its command; the next one finds the
	// marker and goes on to the Maildir.
	os.WriteFile(fwd, []byte("|test -f $HOME/hung && exit 0; touch $HOME/hung; exec sleep 671\n\\bob@example.org\n"), 0o644)
	os.Chown(fwd, 65534, 65534)
	daemon := r.Start(nil, nil, "tern-queue", "--scan-interval", "100ms")
	r.enqueue("Subject: killed\n\nbody\n", "-f", "joe@example.net", "--", "bob@example.org")
	var sleep int
	waitFor(t, 10*time.Second, "the .forward command did not start", func() bool { sleep = findProc("sleep", "671"); return sleep != 0 })
	defer syscall.Kill(sleep, syscall.SIGKILL)
	lmtpd := parentNamed(sleep, "tern-lmtpd")
	if lmtpd == 0 {
		t.Fatalf("no tern-lmtpd above the .forward command %d", sleep)
	}
	if err := syscall.Kill(lmtpd, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the recipient was not deferred", func() bool {
		l := r.list()
		return len(l) == 1 && l[0].Recipients[0].State == "deferred"
	})
	if l := r.list(); l[0].Recipients[0].Status != "4.3.0" {
		t.Errorf("deferred with %s %q, want 4.3.0", l[0].Recipients[0].Status, l[0].Recipients[0].Answer)
	}
	if res := r.Run("", nil, "tern-queue", "--flush"); res.Code != 0 {
		t.Fatalf("tern-queue --flush: %v", res)
	}
	waitFor(t, 10*time.Second, "the message did not arrive after the retry", func() bool { return len(inbox(t, bob)) == 1 })
	waitFor(t, 5*time.Second, "the entry stayed in the queue", func() bool { return len(r.list()) == 0 })
	daemon.Cmd.Process.Signal(syscall.SIGTERM)
}

// TestDelivererHung: a deliverer that does not answer within --timeout is
// killed with what it started, its recipient deferred 4.4.7, and the other
// messages of the same uid are delivered meanwhile; the next run
// delivers the hung one through a new deliverer.
func TestDelivererHung(t *testing.T) {
	r, bob, carol := delivererRoot(t)
	os.Remove(filepath.Join(carol, "maildirsize"))
	fwd := filepath.Join(filepath.Dir(bob), ".forward")
	os.WriteFile(fwd, []byte("|exec sleep 673\n"), 0o644)
	os.Chown(fwd, 65534, 65534)
	r.enqueue("Subject: hangs\n\nbody\n", "-f", "joe@example.net", "--", "bob@example.org")
	for i := 0; i < 5; i++ {
		r.enqueue(fmt.Sprintf("Subject: carol %d\n\nbody\n", i), "-f", "joe@example.net", "--", "carol@example.org")
	}
	start := time.Now()
	q := r.runQueue("--timeout", "2s")
	took := time.Since(start)
	if got := len(inbox(t, carol)); got != 5 {
		t.Errorf("carol has %d messages, want 5\n%s", got, q.Stderr)
	}
	l := r.list()
	if len(l) != 1 || l[0].Recipients[0].State != "deferred" || l[0].Recipients[0].Status != "4.4.7" {
		t.Fatalf("the hung recipient: %+v\n%s", l, q.Stderr)
	}
	if took > time.Minute {
		t.Errorf("tern-queue --once took %s with --timeout 2s", took)
	}
	// SIGKILL is sent before tern-queue exits; the command dies when it
	// is next scheduled.
	for end := time.Now().Add(5 * time.Second); findProc("sleep", "673") != 0 && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
	}
	if pid := findProc("sleep", "673"); pid != 0 {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Errorf("the hung deliverer's command (pid %d) outlived it", pid)
	}
	os.Remove(fwd)
	r.runQueue("--flush")
	if got := len(inbox(t, bob)); got != 1 {
		t.Errorf("bob has %d messages after the retry, want 1", got)
	}
}
