package pop3d

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tern-mail/tern/internal/account"
)

// benchMaildir makes a Maildir of n empty messages in cur/ under the names
// tests/bench/pop3 gives them, already seen: the state a warm login finds.
// The files are empty: a login reads names, not files.
func benchMaildir(b *testing.B, n int) string {
	return benchMaildirIn(b, n, "cur", ":2,S")
}

func benchMaildirIn(b *testing.B, n int, sub, info string) string {
	b.Helper()
	dir := filepath.Join(b.TempDir(), "Maildir")
	for _, d := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			b.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(uint64(n), 3))
	for i := range n {
		size := 2000 + rng.IntN(6200)
		sec := 1_780_000_000 + int64(i)*20 - int64(rng.IntN(3))*int64(i%2)
		name := fmt.Sprintf("%d.M%dP%dQ%d.bench.example,S=%d,W=%d", sec, rng.IntN(1e6), 1000+i%30000, i+1, size, size+size/70) + info
		f, err := os.Create(filepath.Join(dir, sub, name))
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	return dir
}

func openBench(b *testing.B, dir string) (*MaildirBox, error) {
	store, err := account.OpenStore(dir)
	if err != nil {
		b.Fatal(err)
	}
	return OpenMaildir(store)
}

// BenchmarkOpenMaildir is a warm POP3 login to 100,000 messages: the lock,
// the listing, and STAT.
func BenchmarkOpenMaildir(b *testing.B) {
	dir := benchMaildir(b, 100000)
	for b.Loop() {
		box, err := openBench(b, dir)
		if err != nil {
			b.Fatal(err)
		}
		if len(box.Messages()) != 100000 {
			b.Fatalf("%d messages", len(box.Messages()))
		}
		box.Close()
	}
}

// BenchmarkColdSession is the first session on 10,000 messages in new/:
// the login, then a QUIT after every message was retrieved.
func BenchmarkColdSession(b *testing.B) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	if s := os.Getenv("TERN_BENCH_MESSAGES"); s != "" {
		fmt.Sscan(s, &n)
	}
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	var login, quit time.Duration
	for b.Loop() {
		b.StopTimer()
		dir := benchMaildirIn(b, n, "new", "")
		b.StartTimer()
		t0 := time.Now()
		box, err := openBench(b, dir)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := box.Commit(nil, all); err != nil {
			b.Fatal(err)
		}
		login += t1.Sub(t0)
		quit += time.Since(t1)
		box.Close()
	}
	b.ReportMetric(float64(login.Milliseconds())/float64(b.N), "login-ms/op")
	b.ReportMetric(float64(quit.Milliseconds())/float64(b.N), "quit-ms/op")
}

// BenchmarkWarmQuit is the QUIT of a session that retrieved every one of
// 100,000 messages it had seen before (a leave-on-server client): nothing
// to rename, nothing to record.
func BenchmarkWarmQuit(b *testing.B) {
	dir := benchMaildir(b, 100000)
	all := make([]int, 100000)
	for i := range all {
		all[i] = i
	}
	for b.Loop() {
		b.StopTimer()
		box, err := openBench(b, dir)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := box.Commit(nil, all); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		box.Close()
		b.StartTimer()
	}
}
