package runner

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkRunnerRemote measures the runner's own cost per message: the
// queue's reads, locks, writes and flushes around a transport that
// answers at once, for messages spread over ten destinations. It is the
// ceiling the SMTP transport works under (tests/bench has the
// side-by-side run against Postfix).
func BenchmarkRunnerRemote(b *testing.B) {
	for _, conc := range []int{1, 5, 20, 100} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			w := newWorld(b, "bob")
			tr := newFakeSMTP(sent)
			tr.entered = make(chan string, b.N+1)
			for i := 0; i < b.N; i++ {
				w.inject(b, "bob@example.org", fmt.Sprintf("u%d@d%d.example", i, i%10))
			}
			r := w.remoteRunner(b, runnerSetup{o: Options{Once: true, Concurrency: conc, DestinationConcurrency: 20}, clock: &clock{t: time.Now()}, tr: tr})
			b.ResetTimer()
			start := time.Now()
			runOnce(b, r)
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
			if n := tr.count(tr.got, "d0.example"); n != (b.N+9)/10 {
				b.Fatalf("d0 got %d of %d", n, (b.N+9)/10)
			}
		})
	}
}
