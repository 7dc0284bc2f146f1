package testdns

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// dig asks srv with BIND's dig, a client we did not write, and returns
// its output.
func dig(t *testing.T, srv *Server, args ...string) string {
	t.Helper()
	host, port, _ := strings.Cut(srv.Addr, ":")
	out, _ := exec.Command("dig", append([]string{"@" + host, "-p", port, "+time=1", "+tries=1"}, args...)...).CombinedOutput()
	return string(out)
}

func TestWithDig(t *testing.T) {
	if _, err := exec.LookPath("dig"); err != nil {
		t.Skip("dig is not installed (Debian package bind9-dnsutils)")
	}
	srv := Start(t)
	srv.MX("example.org", 10, "mx.example.org")
	srv.A("mx.example.org", "192.0.2.1", "2001:db8::1")
	srv.NullMX("null.example")
	srv.CNAME("www.example.org", "mx.example.org")
	srv.TXT("example.org", `v=spf1 "quoted" -all`)
	srv.ServFail("broken.example.org")
	srv.FailTimes("flaky.example.org", 1)
	srv.A("flaky.example.org", "192.0.2.7")
	srv.Hang("slow.example.org")
	srv.Authentic(true)

	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"example.org", "MX"}, []string{"status: NOERROR", "flags: qr rd ra ad;", "example.org.\t\t300\tIN\tMX\t10 mx.example.org."}},
		{[]string{"null.example", "MX"}, []string{"null.example.\t\t300\tIN\tMX\t0 ."}},
		{[]string{"www.example.org", "AAAA"}, []string{"www.example.org.\t300\tIN\tCNAME\tmx.example.org.", "mx.example.org.\t\t300\tIN\tAAAA\t2001:db8::1"}},
		{[]string{"example.org", "TXT"}, []string{`"v=spf1 \"quoted\" -all"`}},
		{[]string{"nonesuch.example.org", "A"}, []string{"status: NXDOMAIN", "AUTHORITY: 1"}},
		{[]string{"mx.example.org", "MX"}, []string{"status: NOERROR", "ANSWER: 0, AUTHORITY: 1"}},
		{[]string{"org", "A"}, []string{"status: NOERROR", "ANSWER: 0"}},
		{[]string{"broken.example.org", "A"}, []string{"status: SERVFAIL"}},
		{[]string{"flaky.example.org", "A"}, []string{"status: SERVFAIL"}},
		{[]string{"flaky.example.org", "A"}, []string{"status: NOERROR", "192.0.2.7"}},
		{[]string{"+tcp", "example.org", "MX"}, []string{"status: NOERROR", "10 mx.example.org."}},
	} {
		out := dig(t, srv, tc.args...)
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("dig %v: no %q in\n%s", tc.args, w, out)
			}
		}
	}
	start := time.Now()
	if out := dig(t, srv, "slow.example.org", "A"); !strings.Contains(out, "timed out") || strings.Contains(out, "status:") {
		t.Errorf("hang: dig got\n%s", out)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("hang: dig gave up after %v, before its 1s timeout", d)
	}
	srv.TruncateUDP(true)
	if out := dig(t, srv, "+ignore", "example.org", "MX"); !strings.Contains(out, " tc ") && !strings.Contains(out, "flags: qr tc") {
		t.Errorf("truncated: dig got\n%s", out)
	}
	if out := dig(t, srv, "example.org", "MX"); !strings.Contains(out, "Truncated, retrying in TCP mode") || !strings.Contains(out, "10 mx.example.org.") {
		t.Errorf("truncated, then TCP: dig got\n%s", out)
	}
	if n := srv.Count("example.org", 0); n < 5 {
		t.Errorf("Count: %d questions about example.org", n)
	}
}
