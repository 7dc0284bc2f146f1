package resolver

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// freePort returns a port that was free for UDP and TCP on 127.0.0.1 a
// moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		pc.Close()
		if err == nil {
			ln.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// The resolver against a DNS server we did not write: dnsmasq, serving
// local records as a site's resolver would.
func TestDnsmasq(t *testing.T) {
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		t.Skip("dnsmasq is not installed (Debian package dnsmasq-base)")
	}
	port := strconv.Itoa(freePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--pid-file=",
		"--port="+port, "--listen-address=127.0.0.1", "--bind-interfaces", "--local=/example.test/",
		"--mx-host=example.test,mx1.example.test,10", "--mx-host=example.test,mx2.example.test,20",
		"--host-record=mx1.example.test,192.0.2.1,2001:db8::1", "--host-record=mx2.example.test,192.0.2.2",
		"--txt-record=example.test,v=spf1 -all", "--cname=www.example.test,mx1.example.test")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	cl, err := New(Config{Servers: []string{"127.0.0.1:" + port}, Timeout: 200 * time.Millisecond, Attempts: 1, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	var mx []MX
	for range 50 {
		if mx, _, err = LookupMX(context.Background(), cl, "example.test"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	slices.SortFunc(mx, func(a, b MX) int { return int(a.Pref) - int(b.Pref) })
	if !slices.Equal(mx, []MX{{10, "mx1.example.test"}, {20, "mx2.example.test"}}) {
		t.Fatalf("MX from dnsmasq: %v %v", mx, err)
	}
	ctx2 := context.Background()
	if a, _, err := LookupIP(ctx2, cl, "mx1.example.test"); err != nil || !slices.Equal(a, []netip.Addr{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("192.0.2.1")}) {
		t.Errorf("addresses: %v %v", a, err)
	}
	if a, err := cl.Query(ctx2, "www.example.test", dns.TypeAAAA); err != nil || a.Name != "mx1.example.test" {
		t.Errorf("through a CNAME: %+v %v", a, err)
	}
	if txt, _, err := LookupTXT(ctx2, cl, "example.test"); err != nil || !slices.Equal(txt, []string{"v=spf1 -all"}) {
		t.Errorf("TXT: %q %v", txt, err)
	}
	if _, err := cl.Query(ctx2, "nonesuch.example.test", dns.TypeMX); !errors.Is(err, ErrNXDomain) {
		t.Errorf("unknown name: %v", err)
	}
	if _, err := cl.Query(ctx2, "mx2.example.test", dns.TypeAAAA); !errors.Is(err, ErrNoData) {
		t.Errorf("no AAAA: %v", err)
	}
}
