package route

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/internal/resolver"
	"github.com/tern-mail/tern/internal/testdns"
)

// selfAddr is the address this host has in the tests.
const selfAddr = "192.0.2.100"

func newRouter(t *testing.T, srv *testdns.Server) *Router {
	t.Helper()
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr}, Timeout: 300 * time.Millisecond, Attempts: 1, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	return &Router{
		Resolver: res,
		Hostname: "mail.self.example",
		SelfAddrs: func() ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr(selfAddr), netip.MustParseAddr("2001:db8::100")}, nil
		},
		Port: 2525,
	}
}

// show writes targets as "host:port=addr,addr" separated by blanks, and
// a failure as "status temporary? message".
func show(ts []Target, err error) string {
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			return fmt.Sprintf("unclassified error %T %v", err, err)
		}
		kind := "permanent"
		if e.Temporary {
			kind = "temporary"
		}
		return e.Status + " " + kind + " " + e.Msg
	}
	var out []string
	for _, t := range ts {
		var as []string
		for _, a := range t.Addrs {
			as = append(as, a.String())
		}
		s := fmt.Sprintf("%s:%d=%s", t.Host, t.Port, strings.Join(as, ","))
		if t.Err != nil {
			s += "!"
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

func TestTargets(t *testing.T) {
	srv := testdns.Start(t)
	// Preference order.
	srv.MX("order.example", 30, "c.order.example")
	srv.MX("order.example", 10, "a.order.example")
	srv.MX("order.example", 20, "b.order.example")
	srv.A("a.order.example", "192.0.2.1")
	srv.A("b.order.example", "192.0.2.2")
	srv.A("c.order.example", "192.0.2.3")
	// Implicit MX: no MX, an address.
	srv.A("implicit.example", "192.0.2.4", "2001:db8::4")
	srv.TXT("noaddr.example", "exists, but no MX and no address")
	// Null MX, alone and among others.
	srv.NullMX("null.example")
	srv.MX("halfnull.example", 0, ".")
	srv.MX("halfnull.example", 10, "a.order.example")
	// Lame MX hosts.
	srv.MX("lame.example", 10, "gone.lame.example")
	srv.MX("lame.example", 20, "a.order.example")
	srv.MX("alllame.example", 10, "gone.lame.example")
	srv.MX("alllame.example", 20, "noaddr.example")
	srv.MX("tempmx.example", 10, "broken.tempmx.example")
	srv.MX("tempmx.example", 20, "a.order.example")
	srv.A("broken.tempmx.example", "192.0.2.66")
	srv.ServFail("broken.tempmx.example")
	srv.MX("alltemp.example", 10, "broken.tempmx.example")
	// DNS failures on the domain itself.
	srv.MX("servfail.example", 10, "a.order.example")
	srv.ServFail("servfail.example")
	srv.MX("hang.example", 10, "a.order.example")
	srv.Hang("hang.example")
	// Loops.
	srv.A("me.self.example", selfAddr)
	srv.A("mail.self.example", "192.0.2.200") // our name, another address (NAT)
	srv.MX("byaddr.example", 10, "me.self.example")
	srv.MX("byname.example", 10, "mail.self.example")
	srv.MX("backup.example", 10, "a.order.example")
	srv.MX("backup.example", 20, "b.order.example")
	srv.MX("backup.example", 20, "me.self.example")
	srv.MX("backup.example", 30, "c.order.example")
	srv.MX("tie.example", 10, "a.order.example")
	srv.MX("tie.example", 10, "me.self.example")
	srv.MX("worst.example", 10, "a.order.example")
	srv.MX("worst.example", 50, "mail.self.example")
	srv.A("implicitself.example", "2001:db8::100")
	srv.MX("zero.example", 10, "zero.host.example")
	srv.A("zero.host.example", "0.0.0.0")
	// IPv6, and addresses shared by two hosts.
	srv.MX("v6.example", 10, "dual.v6.example")
	srv.MX("v6.example", 20, "loop6.v6.example")
	srv.MX("v6.example", 30, "same.v6.example")
	srv.A("dual.v6.example", "192.0.2.10", "192.0.2.11", "2001:db8::10", "2001:db8::11", "2001:db8::12")
	srv.A("loop6.v6.example", "::1")
	srv.A("same.v6.example", "192.0.2.10", "2001:db8::10")
	srv.MX("only6.example", 10, "mx.only6.example")
	srv.A("mx.only6.example", "::1")
	// IDN.
	srv.MX("xn--bcher-kva.example", 10, "xn--mx-bcher-mlb.example")
	srv.A("xn--mx-bcher-mlb.example", "192.0.2.20")
	// A host listed twice.
	srv.MX("dup.example", 30, "a.order.example")
	srv.MX("dup.example", 20, "b.order.example")
	srv.MX("dup.example", 10, "a.order.example")
	// A route host: has an MX, which must not be used.
	srv.A("relay.example", "192.0.2.30")
	srv.MX("relay.example", 10, "c.order.example")

	r := newRouter(t, srv)
	lit := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	for _, tc := range []struct {
		name   string
		domain string
		route  *conf.Route
		want   string
	}{
		{"preference order", "order.example", nil, "a.order.example:2525=192.0.2.1 b.order.example:2525=192.0.2.2 c.order.example:2525=192.0.2.3"},
		{"a host listed twice", "dup.example", nil, "a.order.example:2525=192.0.2.1 b.order.example:2525=192.0.2.2"},
		{"case and final dot", "ORDER.Example.", nil, "a.order.example:2525=192.0.2.1 b.order.example:2525=192.0.2.2 c.order.example:2525=192.0.2.3"},
		{"implicit MX", "implicit.example", nil, "implicit.example:2525=2001:db8::4,192.0.2.4"},
		{"no MX, no address", "noaddr.example", nil, "5.4.4 permanent noaddr.example has no MX record and no address: no host to send to"},
		{"null MX", "null.example", nil, "5.1.10 permanent null.example accepts no mail: it publishes a null MX (RFC 7505)"},
		{"null MX among others", "halfnull.example", nil, "a.order.example:2525=192.0.2.1"},
		{"NXDOMAIN", "nonesuch.example", nil, "5.1.2 permanent domain nonesuch.example does not exist (NXDOMAIN)"},
		{"bad domain", "a..example", nil, "5.1.2 permanent bad destination domain \"a..example\": empty label or one longer than 63 bytes"},
		{"lame MX skipped", "lame.example", nil, "a.order.example:2525=192.0.2.1"},
		{"every MX lame", "alllame.example", nil, "4.4.4 temporary no MX host of alllame.example has an address"},
		{"MX lookup failing", "tempmx.example", nil, "broken.tempmx.example:2525=! a.order.example:2525=192.0.2.1"},
		{"loop by address", "byaddr.example", nil, "5.4.6 permanent mail for byaddr.example loops back to myself: me.self.example is this host"},
		{"loop by name", "byname.example", nil, "5.4.6 permanent mail for byname.example loops back to myself: mail.self.example is this host"},
		{"backup MX relays to the better", "backup.example", nil, "a.order.example:2525=192.0.2.1"},
		{"equal to the best", "tie.example", nil, "5.4.6 permanent mail for tie.example loops back to myself: me.self.example is this host"},
		{"we are the worst", "worst.example", nil, "a.order.example:2525=192.0.2.1"},
		{"implicit MX is us", "implicitself.example", nil, "5.4.6 permanent mail for implicitself.example loops back to myself: implicitself.example is this host"},
		{"MX at 0.0.0.0", "zero.example", nil, "5.4.6 permanent mail for zero.example loops back to myself: zero.host.example is this host"},
		{"IPv6 first, alternating; shared addresses once", "v6.example", nil, "dual.v6.example:2525=2001:db8::10,192.0.2.10,2001:db8::11,192.0.2.11,2001:db8::12 loop6.v6.example:2525=::1"},
		{"MX on ::1", "only6.example", nil, "mx.only6.example:2525=::1"},
		{"IDN in Unicode", "Bücher.example", nil, "xn--mx-bcher-mlb.example:2525=192.0.2.20"},
		{"IDN in A-labels", "XN--BCHER-KVA.example", nil, "xn--mx-bcher-mlb.example:2525=192.0.2.20"},
		{"bad IDN", "a\u200db.example", nil, "5.1.2 permanent"},
		{"address literal", "[192.0.2.40]", nil, ":2525=192.0.2.40"},
		{"IPv6 literal", "[IPv6:2001:DB8::41]", nil, ":2525=2001:db8::41"},
		{"literal of ours", "[192.0.2.100]", nil, "5.4.6 permanent mail for [192.0.2.100] loops back to myself: the address is this host"},
		{"bad literal", "[2001:db8::1]", nil, "5.1.2 permanent bad destination address literal"},
		{"route host: addresses only", "order.example", &conf.Route{Host: "relay.example"}, "relay.example:2525=192.0.2.30"},
		{"route port", "order.example", &conf.Route{Host: "relay.example", Port: 587}, "relay.example:587=192.0.2.30"},
		{"route literal", "nonesuch.example", &conf.Route{Addr: lit("2001:db8::25"), Port: 25}, ":25=2001:db8::25"},
		{"route host missing", "order.example", &conf.Route{Host: "gone.lame.example", Line: 3}, "4.4.4 temporary route host gone.lame.example for order.example has no address"},
		{"route host failing", "order.example", &conf.Route{Host: "broken.tempmx.example"}, "4.4.3 temporary DNS failure, will try again"},
		{"route to us", "order.example", &conf.Route{Host: "me.self.example"}, "5.4.6 permanent mail for order.example loops back to myself"},
		{"route to our name", "order.example", &conf.Route{Host: "mail.self.example", Port: 2525}, "5.4.6 permanent"},
		{"route to a filter here", "order.example", &conf.Route{Addr: lit(selfAddr), Port: 10025}, ":10025=" + selfAddr},
	} {
		got := show(r.Targets(context.Background(), tc.domain, tc.route))
		if !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: %s\n  got  %s\n  want %s", tc.name, tc.domain, got, tc.want)
		}
	}
	// A route never asks for MX records, and a literal asks nothing.
	if n := srv.Count("relay.example", dns.TypeMX); n != 0 {
		t.Errorf("route host: asked for its MX %d times", n)
	}
	if n := srv.Count("nonesuch.example", 0); n != 1 {
		t.Errorf("nonesuch.example asked %d times; once is the NXDOMAIN case, the literal route must not ask", n)
	}
	if n := srv.Count("a..example", 0); n != 0 {
		t.Error("a bad domain reached the DNS")
	}
	if n := srv.Count("xn--bcher-kva.example", dns.TypeMX); n != 2 {
		t.Errorf("IDN: asked for the A-label's MX %d times, want 2", n)
	}
}

func TestTemporaryDNS(t *testing.T) {
	srv := testdns.Start(t)
	srv.MX("flaky.example", 10, "mx.flaky.example")
	srv.A("mx.flaky.example", "192.0.2.1")
	srv.FailTimes("flaky.example", 1)
	srv.MX("alltemp.example", 10, "broken.example")
	srv.MX("alltemp.example", 20, "broken2.example")
	srv.A("broken.example", "192.0.2.66")
	srv.ServFail("broken.example")
	srv.Hang("broken2.example")
	srv.MX("slow.example", 10, "mx.flaky.example")
	srv.Hang("slow.example")
	r := newRouter(t, srv)
	ctx := context.Background()

	if got := show(r.Targets(ctx, "flaky.example", nil)); !strings.HasPrefix(got, "4.4.3 temporary DNS failure, will try again: DNS lookup of flaky.example MX: temporary DNS failure (SERVFAIL") {
		t.Errorf("SERVFAIL: %s", got)
	}
	if got := show(r.Targets(ctx, "flaky.example", nil)); got != "mx.flaky.example:2525=192.0.2.1" {
		t.Errorf("after the SERVFAIL: %s", got)
	}
	if got := show(r.Targets(ctx, "alltemp.example", nil)); !strings.HasPrefix(got, "4.4.3 temporary no MX host of alltemp.example could be looked up") {
		t.Errorf("every MX host failing: %s", got)
	}
	start := time.Now()
	got := show(r.Targets(ctx, "slow.example", nil))
	if !strings.HasPrefix(got, "4.4.3 temporary DNS failure") {
		t.Errorf("hang: %s", got)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("hang took %v with a 300ms timeout", d)
	}
	// The caller's deadline bounds it as well.
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if got := show(r.Targets(cctx, "slow.example", nil)); !strings.HasPrefix(got, "4.4.3 temporary") {
		t.Errorf("hang past the caller's deadline: %s", got)
	}
}

// Equal preferences come in random order (RFC 5321 §5.1), better ones
// always first.
func TestShuffle(t *testing.T) {
	srv := testdns.Start(t)
	for _, h := range []string{"a", "b", "c"} {
		srv.MX("spread.example", 10, h+".spread.example")
		srv.A(h+".spread.example", "192.0.2."+map[string]string{"a": "1", "b": "2", "c": "3"}[h])
	}
	srv.MX("spread.example", 5, "first.spread.example")
	srv.A("first.spread.example", "192.0.2.5")
	srv.MX("spread.example", 20, "last.spread.example")
	srv.A("last.spread.example", "192.0.2.9")
	r := newRouter(t, srv)
	seen := map[string]int{}
	const runs = 300
	for range runs {
		ts, err := r.Targets(context.Background(), "spread.example", nil)
		if err != nil || len(ts) != 5 || ts[0].Host != "first.spread.example" || ts[4].Host != "last.spread.example" {
			t.Fatalf("%s", show(ts, err))
		}
		seen[ts[1].Host[:1]+ts[2].Host[:1]+ts[3].Host[:1]]++
	}
	// Each of the 6 orders is expected 50 times; missing one by chance
	// has a probability near 1e-23.
	for _, p := range []string{"abc", "acb", "bac", "bca", "cab", "cba"} {
		if seen[p] == 0 {
			t.Errorf("order %s never came in %d runs: %v", p, runs, seen)
		}
	}
}

// Our own entry tied with the best is a loop whichever comes first.
func TestLoopTie(t *testing.T) {
	srv := testdns.Start(t)
	srv.MX("tie.example", 10, "a.tie.example")
	srv.MX("tie.example", 10, "me.tie.example")
	srv.MX("tie.example", 20, "b.tie.example")
	srv.A("a.tie.example", "192.0.2.1")
	srv.A("b.tie.example", "192.0.2.2")
	srv.A("me.tie.example", selfAddr)
	r := newRouter(t, srv)
	for _, reverse := range []bool{false, true} {
		r.Shuffle = func(n int, swap func(i, j int)) {
			if reverse {
				for i := 0; i < n/2; i++ {
					swap(i, n-1-i)
				}
			}
		}
		got := show(r.Targets(context.Background(), "tie.example", nil))
		if !strings.HasPrefix(got, "5.4.6 permanent mail for tie.example loops back to myself: me.tie.example") {
			t.Errorf("reverse=%v: %s", reverse, got)
		}
	}
}

func TestMaxMX(t *testing.T) {
	srv := testdns.Start(t)
	for i := range MaxMX + 10 {
		h := fmt.Sprintf("mx%02d.many.example", i)
		srv.MX("many.example", i, h)
		srv.A(h, fmt.Sprintf("192.0.2.%d", i+1))
	}
	r := newRouter(t, srv)
	ts, err := r.Targets(context.Background(), "many.example", nil)
	if err != nil || len(ts) != MaxMX || ts[0].Host != "mx00.many.example" || ts[MaxMX-1].Host != fmt.Sprintf("mx%02d.many.example", MaxMX-1) {
		t.Errorf("%d MX records: %s", MaxMX+10, show(ts, err))
	}
	if n := srv.Count(fmt.Sprintf("mx%02d.many.example", MaxMX), 0); n != 0 {
		t.Errorf("an MX host past the first %d was looked up", MaxMX)
	}
}

// A host with hundreds of addresses keeps MaxAddrs, both families.
func TestMaxAddrs(t *testing.T) {
	srv := testdns.Start(t)
	srv.MX("crowd.example", 10, "mx.crowd.example")
	srv.MX("crowd.example", 20, "mx2.crowd.example")
	var want []string
	for i := range 300 {
		srv.A("mx.crowd.example", fmt.Sprintf("10.0.%d.%d", i/256, i%256), fmt.Sprintf("2001:db8:1::%x", i))
		srv.A("mx2.crowd.example", fmt.Sprintf("10.0.%d.%d", i/256, i%256))
		if len(want) < MaxAddrs {
			want = append(want, netip.MustParseAddr(fmt.Sprintf("2001:db8:1::%x", i)).String(), fmt.Sprintf("10.0.%d.%d", i/256, i%256))
		}
	}
	r := newRouter(t, srv)
	ts, err := r.Targets(context.Background(), "crowd.example", nil)
	if got := show(ts, err); !strings.HasPrefix(got, "mx.crowd.example:2525="+strings.Join(want, ",")+" mx2.crowd.example:2525=10.0.0.8,") {
		t.Errorf("got %s", got)
	}
	if len(ts) != 2 || len(ts[1].Addrs) != MaxAddrs {
		t.Errorf("second host: %s", show(ts, err))
	}
}

func TestSelfAddrsFailing(t *testing.T) {
	srv := testdns.Start(t)
	srv.MX("x.example", 10, "mx.x.example")
	srv.A("mx.x.example", "192.0.2.1")
	r := newRouter(t, srv)
	r.SelfAddrs = func() ([]netip.Addr, error) { return nil, errors.New("netlink: no") }
	if got := show(r.Targets(context.Background(), "x.example", nil)); !strings.HasPrefix(got, "4.4.3 temporary netlink: no") {
		t.Errorf("own addresses unknown: %s", got)
	}
}

func TestInterfaceAddrs(t *testing.T) {
	as, err := InterfaceAddrs()
	if err != nil {
		t.Skipf("no interface list here: %v", err)
	}
	every := InterfaceAddrsEvery(time.Hour)
	first, err := every()
	if err != nil || !slices.Equal(first, as) {
		t.Errorf("InterfaceAddrsEvery: %v %v, want %v", first, err, as)
	}
	first[0] = netip.MustParseAddr("192.0.2.99") // a caller's change stays its own
	if again, _ := every(); !slices.Equal(again, as) {
		t.Errorf("InterfaceAddrsEvery the second time: %v, want %v", again, as)
	}
	for _, a := range as {
		if a.IsLoopback() {
			return
		}
	}
	t.Errorf("the loopback address is not among this host's addresses %v", as)
}

func FuzzLookupName(f *testing.F) {
	for _, s := range []string{"example.org", "Bücher.example.", "xn--bcher-kva.example", "a..b", "_dmarc.example.org", "[192.0.2.1]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := LookupName(s)
		if err != nil {
			return
		}
		if d != strings.ToLower(d) || strings.HasSuffix(d, ".") || len(d) > 253 {
			t.Errorf("%q -> %q", s, d)
		}
		for i := 0; i < len(d); i++ {
			if d[i] <= ' ' || d[i] >= 0x7f {
				t.Errorf("%q -> %q: not printable ASCII", s, d)
			}
		}
	})
}
