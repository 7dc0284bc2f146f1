package route

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/tern-mail/tern/internal/resolver"
	"github.com/tern-mail/tern/internal/testdns"
)

// BenchmarkTargets routes a domain with two MX hosts, each with an IPv6
// and an IPv4 address, as tern-queue does for every message: with this
// package over the resolver's cache, without the cache, and the same
// lookups done the obvious way with the standard library (net.Resolver
// dialing the same testdns server: MX, then each host's addresses).
// Five interleaved rounds; medians and ratios go to the log:
//
//	go test -run XXX -bench Targets -benchtime 1x ./mta/route/
func BenchmarkTargets(b *testing.B) {
	srv := testdns.Start(b)
	srv.MX("example.org", 10, "mx1.example.org")
	srv.MX("example.org", 20, "mx2.example.org")
	srv.A("mx1.example.org", "192.0.2.1", "2001:db8::1")
	srv.A("mx2.example.org", "192.0.2.2", "2001:db8::2")
	router := func(cache int) *Router {
		res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr}, Timeout: 2 * time.Second, Attempts: 1, CacheSize: cache})
		if err != nil {
			b.Fatal(err)
		}
		return &Router{Resolver: res, Hostname: "self.example"}
	}
	cached, uncached := router(0), router(-1)
	std := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, srv.Addr)
	}}
	ctx := context.Background()
	impls := []struct {
		name string
		f    func() error
	}{
		{"net.Resolver", func() error {
			mxs, err := std.LookupMX(ctx, "example.org")
			if err != nil {
				return err
			}
			for _, mx := range mxs {
				if _, err := std.LookupIPAddr(ctx, mx.Host); err != nil {
					return err
				}
			}
			return nil
		}},
		{"tern", func() error { _, err := uncached.Targets(ctx, "example.org", nil); return err }},
		{"tern-cached", func() error { _, err := cached.Targets(ctx, "example.org", nil); return err }},
	}
	const rounds, n = 5, 500
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
		b.Logf("%-14s median %8.0f ns/domain  net.Resolver/this %6.2fx", im.name, m, base/m)
		b.ReportMetric(m, fmt.Sprintf("ns/%s", im.name))
	}
}
