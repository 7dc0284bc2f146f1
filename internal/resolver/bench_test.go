package resolver

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/tern-mail/tern/internal/testdns"
)

// BenchmarkLookupMX asks a testdns server for a domain's MX records with
// this resolver, without and with its cache, and with the standard
// library's (net.Resolver, pure Go, dialing the same server), which is
// what tern would use without its own. Five interleaved rounds; the
// medians and their ratios to the standard library's go to the log:
//
//	go test -run XXX -bench LookupMX -benchtime 1x ./internal/resolver/
func BenchmarkLookupMX(b *testing.B) {
	srv := testdns.Start(b)
	srv.MX("example.org", 10, "mx1.example.org")
	srv.MX("example.org", 20, "mx2.example.org")
	ctx := context.Background()
	client := func(cache int) *Client {
		c, err := New(Config{Servers: []string{srv.Addr}, Timeout: 2 * time.Second, Attempts: 1, CacheSize: cache})
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	uncached, cached := client(-1), client(0)
	std := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, srv.Addr)
	}}
	impls := []struct {
		name string
		f    func() error
	}{
		{"net.Resolver", func() error { _, err := std.LookupMX(ctx, "example.org"); return err }},
		{"tern", func() error { _, _, err := LookupMX(ctx, uncached, "example.org"); return err }},
		{"tern-cached", func() error { _, _, err := LookupMX(ctx, cached, "example.org"); return err }},
	}
	// Interleaved rounds of n lookups each, so that a burst of load on
	// a shared machine hits every resolver alike.
	const rounds, n = 5, 2000
	ns := make([][]float64, len(impls))
	for range rounds {
		for i, im := range impls {
			start := time.Now()
			for range n {
				if err := im.f(); err != nil {
					b.Fatal(err)
				}
			}
			ns[i] = append(ns[i], float64(time.Since(start).Nanoseconds())/n)
		}
	}
	med := func(xs []float64) float64 { s := slices.Clone(xs); slices.Sort(s); return s[len(s)/2] }
	base := med(ns[0])
	for i, im := range impls {
		m := med(ns[i])
		b.Logf("%-14s median %8.0f ns/lookup  net.Resolver/this %6.2fx", im.name, m, base/m)
		b.ReportMetric(m, fmt.Sprintf("ns/%s", im.name))
	}
}
