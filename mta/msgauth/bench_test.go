package msgauth

import (
	"context"
	"crypto"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/authres"

	"github.com/tern-mail/tern/internal/resolver"
	"github.com/tern-mail/tern/internal/testdns"
)

// BenchmarkDKIMVerify verifies a message signed with ed25519 and
// RSA-2048, the two signatures tern sends, with tern and with dkimpy
// (keys from memory for both, dkimpy's start-up not counted), and
// reports both costs and their ratio.
func BenchmarkDKIMVerify(b *testing.B) {
	ed := newEd25519(b)
	rk := testRSAKey(nil)
	srv := testdns.Start(b)
	records := map[string]string{}
	for sel, k := range map[string]crypto.Signer{"ed": ed, "rsa": rk} {
		rec, err := KeyRecord(k.Public())
		if err != nil {
			b.Fatal(err)
		}
		records[sel+"._domainkey.example.org"] = rec
		srv.TXT(sel+"._domainkey.example.org", splitTXT(rec)...)
	}
	sig, err := Sign(strings.NewReader(plainMsg), []SigningKey{{Domain: "example.org", Selector: "ed", Signer: ed}, {Domain: "example.org", Selector: "rsa", Signer: rk}})
	if err != nil {
		b.Fatal(err)
	}
	msg := sig + plainMsg
	// A warm cache: what a busy MX has for a sender it often sees.
	cl, err := resolver.New(resolver.Config{Servers: []string{srv.Addr}, Timeout: time.Second, Attempts: 1})
	if err != nil {
		b.Fatal(err)
	}
	c := &Checker{Resolver: cl, AuthServID: "mx.tern.test"}
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		vs, err := c.verifyDKIM(ctx, strings.NewReader(msg))
		if err != nil || len(vs) != 2 || vs[0].Result != authres.ResultPass || vs[1].Result != authres.ResultPass {
			b.Fatalf("%+v %v", vs, err)
		}
	}
	ternPerOp := time.Since(start).Seconds() / float64(b.N)
	b.StopTimer()
	b.ReportMetric(ternPerOp*1e6, "tern-µs/msg")
	if err := pythonHas("dkim, nacl"); err != nil {
		b.Logf("dkimpy side skipped: %v (apt-get install python3-dkim python3-nacl)", err)
		return
	}
	js, _ := json.Marshal(records)
	recPath := filepath.Join(b.TempDir(), "records.json")
	if err := os.WriteFile(recPath, js, 0o600); err != nil {
		b.Fatal(err)
	}
	n := max(20, min(b.N, 500))
	out := runPython(b, msg, "dkim-bench", recPath, strconv.Itoa(n))
	theirs, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
	if err != nil {
		b.Fatalf("dkimpy: %q", out)
	}
	b.ReportMetric(theirs*1e6, "dkimpy-µs/msg")
	b.ReportMetric(theirs/ternPerOp, "dkimpy/tern")
}

// BenchmarkSPF checks an SPF record with an include and an mx mechanism,
// without a cache, with tern and with pyspf against the same DNS server.
func BenchmarkSPF(b *testing.B) {
	srv := testdns.Start(b)
	srv.TXT("example.org", "v=spf1 include:_spf.example.org mx -all")
	srv.TXT("_spf.example.org", "v=spf1 ip4:198.51.100.0/24 -all")
	srv.MX("example.org", 10, "mx.example.org")
	srv.A("mx.example.org", "192.0.2.10")
	cl, err := resolver.New(resolver.Config{Servers: []string{srv.Addr}, Timeout: time.Second, Attempts: 1, CacheSize: -1})
	if err != nil {
		b.Fatal(err)
	}
	c := &Checker{Resolver: cl, AuthServID: "mx.tern.test"}
	env := Envelope{RemoteIP: netip.MustParseAddr("192.0.2.10"), Helo: "mx.example.org", MailFrom: "a@example.org"}
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if v := c.checkSPF(ctx, env); v.Result != "pass" {
			b.Fatalf("%+v", v)
		}
	}
	ternPerOp := time.Since(start).Seconds() / float64(b.N)
	b.StopTimer()
	b.ReportMetric(ternPerOp*1e6, "tern-µs/check")
	if err := pythonHas("spf, dns.resolver"); err != nil {
		b.Logf("pyspf side skipped: %v (apt-get install python3-spf)", err)
		return
	}
	_, port, _ := strings.Cut(srv.Addr, ":")
	n := max(20, min(b.N, 500))
	out := runPython(b, "", "spf-bench", port, "192.0.2.10", "a@example.org", "mx.example.org", strconv.Itoa(n))
	theirs, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
	if err != nil {
		b.Fatalf("pyspf: %q", out)
	}
	b.ReportMetric(theirs*1e6, "pyspf-µs/check")
	b.ReportMetric(theirs/ternPerOp, "pyspf/tern")
}
