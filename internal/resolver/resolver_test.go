package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tern-mail/tern/internal/testdns"
)

// newClient is a Client of srv with short, test-sized timeouts.
func newClient(t *testing.T, c Config, srv ...*testdns.Server) *Client {
	t.Helper()
	for _, s := range srv {
		c.Servers = append(c.Servers, s.Addr)
	}
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Second
	}
	if c.Attempts == 0 {
		c.Attempts = 2
	}
	cl, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func TestLookups(t *testing.T) {
	srv := testdns.Start(t)
	srv.MX("example.org", 20, "mx2.example.org")
	srv.MX("example.org", 10, "MX1.Example.org")
	srv.A("mx1.example.org", "192.0.2.1", "2001:db8::1")
	srv.A("v4only.example.org", "192.0.2.2")
	srv.A("deep.sub.example.org", "192.0.2.3")
	srv.TXT("example.org", "v=spf1 ", "-all")
	srv.Add("1.2.0.192.in-addr.arpa. 300 IN PTR MX1.example.org.")
	srv.Add("_25._tcp.mx1.example.org. 300 IN TLSA 3 1 1 0123456789abcdef")
	cl := newClient(t, Config{}, srv)
	ctx := context.Background()

	mx, authentic, err := LookupMX(ctx, cl, "Example.ORG.")
	if err != nil || authentic {
		t.Fatalf("MX: %v %v", err, authentic)
	}
	slices.SortFunc(mx, func(a, b MX) int { return int(a.Pref) - int(b.Pref) })
	if want := []MX{{10, "mx1.example.org"}, {20, "mx2.example.org"}}; !slices.Equal(mx, want) {
		t.Errorf("MX %v, want %v", mx, want)
	}
	addrs, _, err := LookupIP(ctx, cl, "mx1.example.org")
	if want := []netip.Addr{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("192.0.2.1")}; err != nil || !slices.Equal(addrs, want) {
		t.Errorf("LookupIP mx1: %v %v, want %v (AAAA first)", addrs, err, want)
	}
	if addrs, _, err := LookupIP(ctx, cl, "v4only.example.org"); err != nil || len(addrs) != 1 || addrs[0].String() != "192.0.2.2" {
		t.Errorf("LookupIP v4only: %v %v", addrs, err)
	}
	if txt, _, err := LookupTXT(ctx, cl, "example.org"); err != nil || !slices.Equal(txt, []string{"v=spf1 -all"}) {
		t.Errorf("TXT %q %v", txt, err)
	}
	if ptr, _, err := LookupPTR(ctx, cl, netip.MustParseAddr("::ffff:192.0.2.1")); err != nil || !slices.Equal(ptr, []string{"mx1.example.org"}) {
		t.Errorf("PTR %q %v", ptr, err)
	}
	if tlsa, _, err := LookupTLSA(ctx, cl, 25, "mx1.example.org"); err != nil || len(tlsa) != 1 || tlsa[0].Usage != 3 || tlsa[0].Certificate != "0123456789abcdef" {
		t.Errorf("TLSA %v %v", tlsa, err)
	}

	for _, tc := range []struct {
		name  string
		qtype uint16
		kind  error
	}{
		{"nonesuch.example.org", dns.TypeMX, ErrNXDomain},
		{"mx1.example.org", dns.TypeMX, ErrNoData},
		{"sub.example.org", dns.TypeA, ErrNoData}, // an empty non-terminal exists (RFC 8020)
		{"v4only.example.org", dns.TypeAAAA, ErrNoData},
		{"bücher.example", dns.TypeMX, ErrBadName},
		{"a..example", dns.TypeMX, ErrBadName},
		{strings.Repeat("a", 64) + ".example", dns.TypeMX, ErrBadName},
		{strings.Repeat("abcdefg.", 32) + "example", dns.TypeMX, ErrBadName},
		{"", dns.TypeMX, ErrBadName},
		{"a b.example", dns.TypeMX, ErrBadName},
	} {
		_, err := cl.Query(ctx, tc.name, tc.qtype)
		var e *Error
		if !errors.Is(err, tc.kind) || !errors.As(err, &e) {
			t.Errorf("%s %s: %v, want %v", tc.name, dns.TypeToString[tc.qtype], err, tc.kind)
			continue
		}
		if e.Temporary() || IsTemporary(err) || (tc.kind != ErrBadName) != IsNotFound(err) {
			t.Errorf("%s: %v: classed temporary=%v notfound=%v", tc.name, err, IsTemporary(err), IsNotFound(err))
		}
	}
	if n := srv.Count("bücher.example", 0) + srv.Count("a..example", 0); n != 0 {
		t.Errorf("bad names reached the server %d times", n)
	}
	if _, _, err := LookupIP(ctx, cl, "nonesuch.example.org"); !errors.Is(err, ErrNXDomain) {
		t.Errorf("LookupIP of no such name: %v", err)
	}
	if _, _, err := LookupIP(ctx, cl, "sub.example.org"); !errors.Is(err, ErrNoData) {
		t.Errorf("LookupIP of a name without addresses: %v", err)
	}
}

func TestAuthentic(t *testing.T) {
	srv := testdns.Start(t)
	srv.A("signed.example", "192.0.2.1")
	srv.CNAME("alias.example", "signed.example")
	srv.Authentic(true)
	cl := newClient(t, Config{CacheSize: -1}, srv)
	for _, name := range []string{"signed.example", "alias.example"} {
		a, err := cl.Query(context.Background(), name, dns.TypeA)
		if err != nil || !a.Authentic || a.Name != "signed.example" {
			t.Errorf("%s: %+v %v, want authentic records of signed.example", name, a, err)
		}
	}
	srv.Authentic(false)
	if a, err := cl.Query(context.Background(), "signed.example", dns.TypeA); err != nil || a.Authentic {
		t.Errorf("without AD: %+v %v", a, err)
	}
	// A chain the client follows itself is authentic only if every
	// answer on the way was.
	srv.Chase(false)
	srv.Authentic(true)
	if a, err := cl.Query(context.Background(), "alias.example", dns.TypeA); err != nil || !a.Authentic {
		t.Errorf("followed chain, all AD: %+v %v", a, err)
	}
	q := srv.Queries()
	if last := q[len(q)-1]; last.Name != "signed.example." || last.Type != dns.TypeA {
		t.Errorf("the client did not ask for the CNAME's target: %+v", q)
	}
	for _, x := range q {
		if !x.AD {
			t.Errorf("query %+v without AD: a validating resolver would not say whether it checked (RFC 6840 §5.7)", x)
		}
	}
}

func TestTemporaryFailures(t *testing.T) {
	srv := testdns.Start(t)
	srv.MX("flaky.example", 10, "mx.flaky.example")
	srv.MX("broken.example", 10, "mx.broken.example")
	srv.MX("slow.example", 10, "mx.slow.example")
	srv.FailTimes("flaky.example", 1)
	srv.ServFail("broken.example")
	srv.Hang("slow.example")
	ctx := context.Background()

	cl := newClient(t, Config{Attempts: 1}, srv)
	_, err := cl.Query(ctx, "flaky.example", dns.TypeMX)
	var e *Error
	if !errors.Is(err, ErrTemporary) || !errors.As(err, &e) || e.Rcode != dns.RcodeServerFailure || e.Server != srv.Addr || !IsTemporary(err) || IsNotFound(err) {
		t.Fatalf("SERVFAIL: %v", err)
	}
	// Not kept: the next question goes to the server, which answers.
	if mx, _, err := LookupMX(ctx, cl, "flaky.example"); err != nil || len(mx) != 1 {
		t.Errorf("after one SERVFAIL: %v %v", mx, err)
	}
	// Two rounds get past one failure in one question.
	srv.FailTimes("flaky.example", 1)
	cl2 := newClient(t, Config{Attempts: 2, CacheSize: -1}, srv)
	if _, _, err := LookupMX(ctx, cl2, "flaky.example"); err != nil {
		t.Errorf("two attempts, one SERVFAIL: %v", err)
	}
	if _, err := cl2.Query(ctx, "broken.example", dns.TypeMX); !errors.Is(err, ErrTemporary) {
		t.Errorf("always SERVFAIL: %v", err)
	}
	if n := srv.Count("broken.example", dns.TypeMX); n != 2 {
		t.Errorf("always SERVFAIL: asked %d times, want 2 (the attempts)", n)
	}

	// A hanging server: each try ends at Timeout, the whole at Total.
	hung := newClient(t, Config{Timeout: 100 * time.Millisecond, Attempts: 50, Total: 400 * time.Millisecond}, srv)
	start := time.Now()
	_, err = hung.Query(ctx, "slow.example", dns.TypeMX)
	var ne net.Error
	if !errors.Is(err, ErrTemporary) || !(errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)) {
		t.Errorf("hang: %v, want a temporary timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("hang: the lookup took %v, far past its total of 400ms", d)
	}
	if n := srv.Count("slow.example", dns.TypeMX); n < 2 || n > 6 {
		t.Errorf("hang: asked %d times in 400ms at 100ms each", n)
	}

	// The caller's context bounds it too.
	cctx, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
	defer cancel()
	if _, err := newClient(t, Config{Timeout: 10 * time.Second}, srv).Query(cctx, "slow.example", dns.TypeMX); !errors.Is(err, ErrTemporary) {
		t.Errorf("hang under a context deadline: %v", err)
	}
}

func TestNextServer(t *testing.T) {
	bad, good := testdns.Start(t), testdns.Start(t)
	good.A("mx.example", "192.0.2.9")
	bad.A("mx.example", "192.0.2.66")
	bad.ServFail("mx.example")
	cl := newClient(t, Config{Attempts: 1}, bad, good)
	if addrs, _, err := LookupIP(context.Background(), cl, "mx.example"); err != nil || len(addrs) != 1 || addrs[0].String() != "192.0.2.9" {
		t.Errorf("after a SERVFAIL, the next server: %v %v", addrs, err)
	}
	// A server that does not answer at all is passed over too.
	bad.Heal("mx.example")
	bad.Hang("mx2.example")
	good.A("mx2.example", "192.0.2.10")
	cl = newClient(t, Config{Attempts: 1, Timeout: 100 * time.Millisecond}, bad, good)
	if addrs, _, err := LookupIP(context.Background(), cl, "mx2.example"); err != nil || len(addrs) != 1 {
		t.Errorf("after a silent server, the next: %v %v", addrs, err)
	}
}

func TestTCPFallback(t *testing.T) {
	srv := testdns.Start(t)
	srv.MX("example.org", 10, "mx.example.org")
	var many []string
	for i := range 200 {
		many = append(many, fmt.Sprintf("192.0.2.%d", i))
	}
	srv.A("big.example.org", many...) // 200 A records: too big for 1232 bytes
	cl := newClient(t, Config{CacheSize: -1}, srv)
	addrs, _, err := LookupIP(context.Background(), cl, "big.example.org")
	if err != nil || len(addrs) != 200 {
		t.Fatalf("big answer: %d addresses, %v", len(addrs), err)
	}
	if srv.Count("big.example.org", dns.TypeA) != 2 {
		t.Errorf("big answer: asked %v", srv.Queries())
	}
	srv.TruncateUDP(true)
	if mx, _, err := LookupMX(context.Background(), cl, "example.org"); err != nil || len(mx) != 1 {
		t.Errorf("truncated over UDP: %v %v", mx, err)
	}
	var protos []string
	for _, q := range srv.Queries() {
		if q.Name == "example.org." {
			protos = append(protos, q.Proto)
		}
	}
	if !slices.Equal(protos, []string{"udp", "tcp"}) {
		t.Errorf("truncated answer: asked over %v, want udp then tcp", protos)
	}
}

func TestCNAME(t *testing.T) {
	srv := testdns.Start(t)
	srv.CNAME("www.example.org", "host.example.org")
	srv.CNAME("host.example.org", "real.example.net")
	srv.A("real.example.net", "192.0.2.5")
	srv.CNAME("dangling.example.org", "gone.example.net")
	srv.CNAME("loop1.example.org", "loop2.example.org")
	srv.CNAME("loop2.example.org", "loop1.example.org")
	srv.CNAME("empty.example.org", "real.example.net")
	ctx := context.Background()
	for _, chase := range []bool{true, false} {
		srv.Chase(chase)
		cl := newClient(t, Config{CacheSize: -1}, srv)
		a, err := cl.Query(ctx, "www.example.org", dns.TypeA)
		if err != nil || a.Name != "real.example.net" || len(a.Records) != 1 {
			t.Errorf("chase=%v: %+v %v", chase, a, err)
		}
		var e *Error
		_, err = cl.Query(ctx, "dangling.example.org", dns.TypeA)
		if !errors.Is(err, ErrNXDomain) || !errors.As(err, &e) || e.Name != "gone.example.net" {
			t.Errorf("chase=%v: dangling CNAME: %v, want NXDOMAIN for the target", chase, err)
		}
		if _, err := cl.Query(ctx, "empty.example.org", dns.TypeMX); !errors.Is(err, ErrNoData) {
			t.Errorf("chase=%v: CNAME to a name without MX: %v", chase, err)
		}
		if _, err := cl.Query(ctx, "loop1.example.org", dns.TypeA); !errors.Is(err, ErrTemporary) {
			t.Errorf("chase=%v: CNAME loop: %v", chase, err)
		}
		// Asking for the CNAME itself gives it.
		if a, err := cl.Query(ctx, "www.example.org", dns.TypeCNAME); err != nil || a.Records[0].(*dns.CNAME).Target != "host.example.org." {
			t.Errorf("chase=%v: CNAME query: %+v %v", chase, a, err)
		}
	}
}

func TestCache(t *testing.T) {
	srv := testdns.Start(t)
	srv.A("mx.example", "192.0.2.1")
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	cl := newClient(t, Config{Now: clock, CacheSize: 2}, srv)
	ctx := context.Background()
	ask := func(name string) error { _, err := cl.Query(ctx, name, dns.TypeA); return err }

	for range 3 {
		if err := ask("MX.example."); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.Count("mx.example", dns.TypeA); n != 1 {
		t.Errorf("asked %d times within the TTL, want 1", n)
	}
	advance(testdns.TTL * time.Second)
	ask("mx.example")
	if n := srv.Count("mx.example", dns.TypeA); n != 2 {
		t.Errorf("asked %d times after the TTL, want 2", n)
	}
	// Negative answers live for the SOA's MINIMUM (60 s in testdns).
	for range 2 {
		if err := ask("none.example"); !errors.Is(err, ErrNXDomain) {
			t.Fatal(err)
		}
	}
	if n := srv.Count("none.example", dns.TypeA); n != 1 {
		t.Errorf("NXDOMAIN asked %d times, want 1", n)
	}
	advance(61 * time.Second)
	ask("none.example")
	if n := srv.Count("none.example", dns.TypeA); n != 2 {
		t.Errorf("NXDOMAIN asked %d times after its TTL, want 2", n)
	}
	// Bounded: two entries at most.
	srv.A("a.example", "192.0.2.2")
	srv.A("b.example", "192.0.2.3")
	ask("a.example")
	ask("b.example")
	if n := cl.cache.len(); n > 2 {
		t.Errorf("cache holds %d entries, bound 2", n)
	}
	// A new record shows once the old answer expires, not before.
	srv.Remove("mx.example")
	srv.A("mx.example", "192.0.2.99")
	off := newClient(t, Config{CacheSize: -1}, srv)
	if a, _, err := LookupIP(ctx, off, "mx.example"); err != nil || a[0].String() != "192.0.2.99" {
		t.Errorf("without a cache: %v %v", a, err)
	}
}

// The same question asked by many at once goes out once.
func TestInflight(t *testing.T) {
	srv := testdns.Start(t)
	srv.MX("busy.example", 10, "mx.busy.example")
	srv.Hang("busy.example")
	cl := newClient(t, Config{Timeout: 400 * time.Millisecond, Attempts: 3, CacheSize: -1}, srv)
	const n = 20
	errs := make(chan error, n)
	for range n {
		go func() {
			mx, _, err := LookupMX(context.Background(), cl, "busy.example")
			if err == nil && len(mx) != 1 {
				err = fmt.Errorf("MX %v", mx)
			}
			errs <- err
		}()
	}
	time.Sleep(100 * time.Millisecond)
	srv.Heal("busy.example") // the first try is lost; the second is answered
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if c := srv.Count("busy.example", dns.TypeMX); c != 2 {
		t.Errorf("%d questions asked %d times, want 2 (one lost, one answered)", n, c)
	}
	// A waiter's own deadline still holds.
	srv.Hang("busy.example")
	go LookupMX(context.Background(), cl, "busy.example")
	time.Sleep(20 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := cl.Query(ctx, "busy.example", dns.TypeMX); !errors.Is(err, ErrTemporary) || time.Since(start) > time.Second {
		t.Errorf("waiter past its deadline: %v after %v", err, time.Since(start))
	}
}

// An empty answer is NODATA only when it says so (RFC 2308 §2.2): a
// referral from a server that does not recurse is a failure.
func TestReferral(t *testing.T) {
	msg := func(ns ...string) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion("example.org.", dns.TypeMX)
		m.Response = true
		for _, s := range ns {
			rr, err := dns.NewRR(s)
			if err != nil {
				t.Fatal(err)
			}
			m.Ns = append(m.Ns, rr)
		}
		return m
	}
	for _, tc := range []struct {
		ns   []string
		kind error
	}{
		{nil, ErrNoData},
		{[]string{"example.org. 60 IN SOA ns.example.org. h.example.org. 1 2 3 4 60"}, ErrNoData},
		{[]string{"org. 172800 IN NS a0.org.afilias-nst.info."}, ErrTemporary},
		{[]string{"example.org. 60 IN NS ns.example.org.", "example.org. 60 IN SOA ns.example.org. h.example.org. 1 2 3 4 60"}, ErrNoData},
	} {
		_, _, err := interpret(msg(tc.ns...), "example.org.", dns.TypeMX, "s").answer()
		if !errors.Is(err, tc.kind) {
			t.Errorf("authority %v: %v, want %v", tc.ns, err, tc.kind)
		}
	}
}

// A stray answer to another question is not taken.
func TestMismatchedAnswer(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Question[0].Name = "other.example."
		rr, _ := dns.NewRR("other.example. 300 IN A 192.0.2.66")
		m.Answer = []dns.RR{rr}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	cl, err := New(Config{Servers: []string{pc.LocalAddr().String()}, Timeout: time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Query(context.Background(), "mx.example", dns.TypeA); !errors.Is(err, ErrTemporary) {
		t.Errorf("answer to another question: %v", err)
	}
}

func TestParseServer(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"127.0.0.1:5353", "127.0.0.1:5353", ""},
		{"192.0.2.1", "192.0.2.1:53", ""},
		{"[::1]:53", "[::1]:53", ""},
		{"::1", "[::1]:53", ""},
		{"[2001:db8::1]", "[2001:db8::1]:53", ""},
		{"ns.example:53", "", "with an IP address"},
		{"127.0.0.1:0", "", "port \"0\""},
		{"127.0.0.1:99999", "", "port \"99999\""},
		{"", "", "with an IP address"},
	} {
		got, err := ParseServer(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %q %v, want error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %q %v, want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestResolvConf(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rc := write("resolv.conf", "search example.org\nnameserver 192.0.2.53\nnameserver 2001:db8::53\noptions timeout:1 attempts:3\n")
	cl, err := New(Config{ResolvConf: rc})
	if err != nil {
		t.Fatal(err)
	}
	if got := cl.Servers(); !slices.Equal(got, []string{"192.0.2.53:53", "[2001:db8::53]:53"}) || cl.timeout != time.Second || cl.attempts != 3 {
		t.Errorf("from resolv.conf: %v timeout %v attempts %d", got, cl.timeout, cl.attempts)
	}
	// --dns wins over resolv.conf's servers but keeps its options.
	if cl, err := New(Config{ResolvConf: rc, Servers: []string{"127.0.0.1:5300"}}); err != nil || !slices.Equal(cl.Servers(), []string{"127.0.0.1:5300"}) || cl.attempts != 3 {
		t.Errorf("--dns: %v %v", cl, err)
	}
	if _, err := New(Config{ResolvConf: write("empty", "# nothing\n")}); err == nil || !strings.Contains(err.Error(), "--dns") {
		t.Errorf("no nameserver: %v", err)
	}
	if _, err := New(Config{ResolvConf: filepath.Join(dir, "missing")}); err == nil || !strings.Contains(err.Error(), "--dns") {
		t.Errorf("no resolv.conf: %v", err)
	}
	if cl, err := New(Config{ResolvConf: filepath.Join(dir, "missing"), Servers: []string{"127.0.0.1:53"}}); err != nil || cl.timeout != 5*time.Second || cl.attempts != 2 {
		t.Errorf("--dns without resolv.conf: %v", err)
	}
	if _, err := New(Config{Servers: []string{"ns.example"}}); err == nil {
		t.Error("a server named by host name was taken")
	}
}

// FuzzInterpret feeds arbitrary DNS responses to the code that reads
// them: it must not panic, and what it makes of one must be consistent.
func FuzzInterpret(f *testing.F) {
	seed := func(rrs ...string) {
		m := new(dns.Msg)
		m.SetQuestion("example.org.", dns.TypeMX)
		m.Response = true
		for _, s := range rrs {
			rr, err := dns.NewRR(s)
			if err != nil {
				f.Fatal(err)
			}
			m.Answer = append(m.Answer, rr)
		}
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed("example.org. 60 IN MX 10 mx.example.org.")
	seed("example.org. 60 IN CNAME a.example.net.", "a.example.net. 60 IN MX 0 .")
	seed("example.org. 60 IN CNAME example.org.")
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(dns.Msg)
		if err := m.Unpack(b); err != nil || len(m.Question) != 1 {
			return
		}
		q := m.Question[0]
		name, err := checkName(q.Name, q.Qtype)
		if err != nil {
			return
		}
		e := interpret(m, name, q.Qtype, "server")
		a, next, err := e.answer()
		switch {
		case err != nil:
			if a != nil || next != nil {
				t.Fatal("error with an answer")
			}
			if !errors.Is(err, ErrNXDomain) && !errors.Is(err, ErrNoData) && !errors.Is(err, ErrTemporary) {
				t.Fatalf("unclassified %v", err)
			}
		case next != nil:
			if a != nil || next.hops == 0 || next.hops > maxCNAMEs {
				t.Fatalf("pending %+v with answer %v", next, a)
			}
		default:
			if len(a.Records) == 0 {
				t.Fatal("an answer without records")
			}
			for _, rr := range a.Records {
				if rr.Header().Rrtype != q.Qtype {
					t.Fatalf("record of type %d for a question of type %d", rr.Header().Rrtype, q.Qtype)
				}
			}
		}
	})
}
