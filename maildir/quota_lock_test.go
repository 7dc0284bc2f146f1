package maildir

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseMaildirsize(t *testing.T) {
	q, damaged, err := ParseMaildirsize(strings.NewReader("1000S,10C\n300 3\n-100 -1\n  50   1 \n"))
	if err != nil || damaged || q != (Quota{1000, 10, 250, 3}) {
		t.Errorf("%+v %v %v", q, damaged, err)
	}
	if q.QuotaLine() != "1000S,10C" {
		t.Error(q.QuotaLine())
	}
	if q, _, err := ParseMaildirsize(strings.NewReader("5000S\n")); err != nil || q.MaxBytes != 5000 || q.MaxMessages != 0 {
		t.Errorf("%+v %v", q, err)
	}
	if _, damaged, _ := ParseMaildirsize(strings.NewReader("1S\n12 1\n34")); !damaged {
		t.Error("a cut line is not damage")
	}
	for _, bad := range []string{"", "10X\n", "-5S\n", "S\n", "abcS\n"} {
		if _, _, err := ParseMaildirsize(strings.NewReader(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseMaildirsize(f *testing.F) {
	f.Add("1000S,10C\n300 3\n-100 -1\n")
	f.Add("5000S\n")
	f.Add("\n1 1\n")
	f.Fuzz(func(t *testing.T, s string) {
		q, damaged, err := ParseMaildirsize(strings.NewReader(s))
		if err != nil || damaged {
			return
		}
		line := q.QuotaLine() + "\n" + fmt.Sprintf("%d %d\n", q.Bytes, q.Messages)
		q2, damaged2, err := ParseMaildirsize(strings.NewReader(line))
		if err != nil || damaged2 || q2 != q {
			t.Fatalf("%q -> %+v -> %q -> %+v %v", s, q, line, q2, err)
		}
	})
}

func TestQuota(t *testing.T) {
	s := newTestStore(t)
	f := inbox(t, s)
	if _, err := s.Quota(); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Quota without maildirsize: %v", err)
	}
	deliverN(t, f, 2, time.Unix(1700000000, 0)) // 2 messages of 17 bytes
	if err := s.SetQuota(100, 4); err != nil {
		t.Fatal(err)
	}
	q, err := s.Quota()
	if err != nil || q != (Quota{100, 4, 34, 2}) {
		t.Fatalf("%+v %v", q, err)
	}
	body := strings.Repeat("x", 39) + "\n" // 40 bytes
	m, err := f.Deliver(strings.NewReader(body), DeliverOptions{Quota: true})
	if err != nil {
		t.Fatal(err)
	}
	if q, _ := s.Quota(); q.Bytes != 74 || q.Messages != 3 {
		t.Errorf("after delivery: %+v", q)
	}
	if _, err := f.Deliver(strings.NewReader(body), DeliverOptions{Quota: true}); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("over quota: %v", err)
	}
	if n := len(dirNames(t, filepath.Join(s.Root, "new"))) + len(dirNames(t, filepath.Join(s.Root, "tmp"))); n != 3 {
		t.Errorf("refused delivery left files: %d", n)
	}
	if err := f.Remove(m.Unique); err != nil {
		t.Fatal(err)
	}
	if q, _ := s.Quota(); q.Bytes != 34 || q.Messages != 2 {
		t.Errorf("after remove: %+v", q)
	}
	// Someone removes a message behind our back; the sums say "over", the
	// file is old, so it is recalculated and the delivery fits.
	os.WriteFile(s.maildirsizePath(), []byte("100S,4C\n34 2\n50 1\n"), 0o600)
	old := time.Now().Add(-time.Hour)
	os.Chtimes(s.maildirsizePath(), old, old)
	if _, err := f.Deliver(strings.NewReader(body), DeliverOptions{Quota: true}); err != nil {
		t.Errorf("delivery after a stale maildirsize: %v", err)
	}
	if q, _ := s.Quota(); q.Bytes != 74 || q.Messages != 3 {
		t.Errorf("after recalculation: %+v", q)
	}
	// A file over 5120 bytes is recalculated on the next check.
	big := "100S,4C\n" + strings.Repeat("1 0\n", 2000)
	os.WriteFile(s.maildirsizePath(), []byte(big), 0o600)
	if _, err := f.Deliver(strings.NewReader("y\n"), DeliverOptions{Quota: true}); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(s.maildirsizePath()); st.Size() > 100 {
		t.Errorf("maildirsize not recalculated: %d bytes", st.Size())
	}
	if err := s.SetQuota(0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Deliver(strings.NewReader(body), DeliverOptions{Quota: true}); err != nil {
		t.Errorf("without quota: %v", err)
	}
}

func TestLockTimeout(t *testing.T) {
	s := newTestStore(t)
	f := inbox(t, s)
	lk, err := f.lock()
	if err != nil {
		t.Fatal(err)
	}
	s.LockTimeout = 200 * time.Millisecond
	start := time.Now()
	_, err = f.Sync()
	if !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("Sync under a held lock: %v", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 2*time.Second {
		t.Errorf("waited %v", d)
	}
	lk.unlock()
	if _, err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	ents, _ := filepath.Glob(filepath.Join(s.Root, "tern-uidlist.lock*"))
	if len(ents) != 0 {
		t.Errorf("lock files left: %v", ents)
	}
}

func TestStaleLockDeadPid(t *testing.T) {
	s := newTestStore(t)
	f := inbox(t, s)
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skip(err)
	}
	dead := cmd.Process.Pid
	lockPath := filepath.Join(s.Root, "tern-uidlist.lock")
	os.WriteFile(lockPath, []byte(fmt.Sprintf("%d %s %d\n", dead, s.Hostname, time.Now().Unix())), 0o600)
	s.LockTimeout = 2 * time.Second
	if _, err := f.Sync(); err != nil {
		t.Fatalf("a dead pid's lock was not broken: %v", err)
	}
	// The same pid on another host is not ours to judge: only age breaks it.
	os.WriteFile(lockPath, []byte(fmt.Sprintf("%d other.host %d\n", dead, time.Now().Unix())), 0o600)
	s.LockTimeout = 300 * time.Millisecond
	if _, err := f.Sync(); !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("another host's fresh lock was broken: %v", err)
	}
	old := time.Now().Add(-31 * time.Second)
	os.Chtimes(lockPath, old, old)
	if _, err := f.Sync(); err != nil {
		t.Fatalf("an old lock was not broken: %v", err)
	}
	if _, err := os.Stat(lockPath); !os.IsNotExist(err) {
		t.Errorf("lock left behind: %v", err)
	}
}

func TestLockRefresh(t *testing.T) {
	s := newTestStore(t)
	f := inbox(t, s)
	s.StaleLockAge = time.Second
	lk, err := f.lock()
	if err != nil {
		t.Fatal(err)
	}
	defer lk.unlock()
	old := time.Now().Add(-10 * time.Second)
	os.Chtimes(lk.path, old, old)
	lk.touch()
	s.LockTimeout = 300 * time.Millisecond
	if _, err := f.Sync(); !errors.Is(err, ErrLockTimeout) {
		t.Errorf("a refreshed lock was broken: %v", err)
	}
}
