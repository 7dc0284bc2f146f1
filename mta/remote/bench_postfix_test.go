package remote

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/mta/route"
	"github.com/tern-mail/tern/mta/transport"
)

// BenchmarkVsPostfix sends the same 4 KiB message to Postfix's smtp-sink
// with the transport and with Postfix's own SMTP test client,
// smtp-source, the peer: one connection for all messages (reuse), a
// connection a message (no-reuse), and 8 sessions at once. It prints
// tern's rate over smtp-source's for each. Skipped without Debian's
// postfix package.
func BenchmarkVsPostfix(b *testing.B) {
	sink, err := exec.LookPath("smtp-sink")
	if err != nil {
		b.Skip("smtp-sink and smtp-source not installed: the comparison with Postfix needs Debian's postfix package")
	}
	source, err := exec.LookPath("smtp-source")
	if err != nil {
		b.Skip("smtp-source not installed: the comparison with Postfix needs Debian's postfix package")
	}
	l, err := net.Listen("tcp", "127.0.0.8:0")
	if err != nil {
		b.Fatal(err)
	}
	ap := netip.MustParseAddrPort(l.Addr().String())
	l.Close()
	cmd := exec.Command(sink, "-u", "nobody", "-m", "64", ap.String(), "64")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", ap.String())
		if err == nil {
			c.Close()
			break
		}
		if i == 100 {
			b.Fatalf("smtp-sink does not listen on %s", ap)
		}
		time.Sleep(20 * time.Millisecond)
	}
	file := filepath.Join(b.TempDir(), "message")
	if err := os.WriteFile(file, []byte(benchText), 0o644); err != nil {
		b.Fatal(err)
	}

	tg := route.Target{Host: "sink.test", Addrs: []netip.Addr{ap.Addr()}, Port: int(ap.Port())}
	hop := transport.Hop{Kind: transport.SMTP, Key: "smtp:example.org", Domain: "example.org"}
	rs := rcpts("b@example.org")
	// From memory, as smtp-source sends its -F file read once: the
	// clients are compared, not the reading of a queue file.
	msg := &transport.Message{ID: "B", Sender: "a@sender.test", Size: int64(len(benchText)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(benchText)), nil }}
	newTransport := func(perConn int) *Transport {
		return New(Options{
			Targets:            func(context.Context, string, *conf.Route) ([]route.Target, error) { return []route.Target{tg}, nil },
			Hostname:           "tern.test",
			MaxMessagesPerConn: perConn,
			Log:                slog.New(slog.DiscardHandler),
		})
	}
	// By sub-benchmark, every call: the framework calls each with a
	// growing b.N until the run is long enough, then again for each
	// -count.
	// Besides the rate, the CPU time a message costs the client: on a
	// machine shared with other work the rate says as much about the
	// neighbours as about the client, the CPU time much less so.
	type sample struct {
		n         int
		rate, cpu float64
	}
	rates := map[string][]sample{}
	var mu sync.Mutex
	record := func(b *testing.B, name string, cpu time.Duration) {
		r := float64(b.N) / b.Elapsed().Seconds()
		c := float64(cpu.Microseconds()) / float64(b.N)
		b.ReportMetric(r, "msgs/s")
		b.ReportMetric(c, "cpu-µs/msg")
		mu.Lock()
		rates[name] = append(rates[name], sample{b.N, r, c})
		mu.Unlock()
	}
	ternRun := func(sessions, perConn int) func(b *testing.B) {
		return func(b *testing.B) {
			tr := newTransport(perConn)
			defer tr.Close()
			var wg sync.WaitGroup
			next := make(chan struct{})
			b.ResetTimer()
			cpu0 := selfCPU()
			for range sessions {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range next {
						if r := tr.Deliver(context.Background(), msg, hop, rs); !r[0].Delivered() {
							b.Errorf("result %+v", r[0])
						}
					}
				}()
			}
			for range b.N {
				next <- struct{}{}
			}
			close(next)
			wg.Wait()
			b.StopTimer()
			record(b, b.Name(), selfCPU()-cpu0)
		}
	}
	sourceRun := func(sessions int, reuse bool) func(b *testing.B) {
		return func(b *testing.B) {
			args := []string{"-m", strconv.Itoa(b.N), "-s", strconv.Itoa(sessions), "-F", file,
				"-f", "a@sender.test", "-t", "b@example.org", "-M", "tern.test"}
			if reuse {
				args = append(args, "-d")
			}
			args = append(args, ap.String())
			cmd := exec.Command(source, args...)
			b.ResetTimer()
			out, err := cmd.CombinedOutput()
			b.StopTimer()
			if err != nil {
				b.Fatalf("smtp-source: %v: %s", err, out)
			}
			record(b, b.Name(), cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime())
		}
	}
	pairs := []struct {
		name              string
		sessions, perConn int
		reuse             bool
	}{
		{"reuse", 1, 0, true},
		{"no-reuse", 1, 1, false},
		{"8-sessions", 8, 0, true},
	}
	for _, p := range pairs {
		b.Run("tern/"+p.name, ternRun(p.sessions, p.perConn))
		b.Run("smtp-source/"+p.name, sourceRun(p.sessions, p.reuse))
	}
	var out strings.Builder
	for _, p := range pairs {
		tr, sr := rates[b.Name()+"/tern/"+p.name], rates[b.Name()+"/smtp-source/"+p.name]
		if len(tr) == 0 || len(sr) == 0 {
			continue
		}
		// A run's figure is its last call, the one with the largest b.N.
		final := func(ss []sample, cpu bool) []float64 {
			var out []float64
			for i, x := range ss {
				if i == len(ss)-1 || ss[i+1].n <= x.n {
					if cpu {
						out = append(out, x.cpu)
					} else {
						out = append(out, x.rate)
					}
				}
			}
			return out
		}
		tf := final(tr, false)
		t, s := median(tf), median(final(sr, false))
		tc, sc := median(final(tr, true)), median(final(sr, true))
		fmt.Fprintf(&out, "%s: medians of %d runs: tern %.0f msgs/s %.1f cpu-µs/msg, smtp-source %.0f msgs/s %.1f cpu-µs/msg; rate tern/smtp-source %.2fx, CPU a message smtp-source/tern %.2fx\n",
			p.name, len(tf), t, tc, s, sc, t/s, sc/tc)
	}
	fmt.Print(out.String())
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// selfCPU is the user and system time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
