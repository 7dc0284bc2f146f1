package remote

import (
	"crypto/x509"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/internal/testcert"
	"github.com/tern-mail/tern/mta/route"
	"github.com/tern-mail/tern/mta/transport"
)

// postfixMX starts a private Postfix as the receiving MX on a loopback
// port, with STARTTLS on a certificate for mx.test; every message it
// takes is put on hold, so it stays in its queue to be read back with
// postcat. It returns the target, a function reading a queued message,
// and a pool that trusts the instance's certificate.
func postfixMX(t *testing.T) (route.Target, func(id string) string, *x509.CertPool) {
	t.Helper()
	for _, p := range []string{"postfix", "postcat"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s not installed: the test with Postfix as the MX needs Debian's postfix package", p)
		}
	}
	if os.Getuid() != 0 {
		t.Skip("a private Postfix instance needs root")
	}
	if _, err := user.Lookup("postfix"); err != nil {
		t.Skip("no postfix user: the test with Postfix as the MX needs Debian's postfix package")
	}
	work, err := os.MkdirTemp("", "tern-postfix-mx-")
	if err != nil {
		t.Fatal(err)
	}
	pf := filepath.Join(work, "pf")
	etc, spool, data := filepath.Join(pf, "etc"), filepath.Join(pf, "spool"), filepath.Join(pf, "data")
	for _, d := range []string{etc, spool, data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Postfix's own processes run as postfix: they must reach the work
	// directory and own data_directory.
	if err := os.Chmod(work, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chown", "postfix", data).CombinedOutput(); err != nil {
		t.Fatalf("chown postfix: %v: %s", err, out)
	}
	testcert.Write(t, etc, 7)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(l.Addr().String())
	l.Close()
	mainCf := strings.Join([]string{
		"compatibility_level = 3.6",
		"queue_directory = " + spool,
		"data_directory = " + data,
		"myhostname = mx.test",
		"mydestination = example.org",
		"local_recipient_maps =",
		"inet_interfaces = 127.0.0.1",
		"inet_protocols = ipv4",
		"mynetworks = 127.0.0.0/8",
		"smtpd_client_restrictions = check_client_access static:HOLD",
		"smtpd_tls_security_level = may",
		"smtpd_tls_cert_file = " + filepath.Join(etc, "tls.crt"),
		"smtpd_tls_key_file = " + filepath.Join(etc, "tls.key"),
		"smtpd_tls_received_header = yes",
		"maillog_file = " + filepath.Join(pf, "maillog"),
		"maillog_file_prefixes = " + pf,
		"",
	}, "\n")
	masterCf := ap.String() + ` inet n - n - 16 smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
local     unix - n n - - local
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
tlsmgr    unix - - n 1000? 1 tlsmgr
`
	if err := os.WriteFile(filepath.Join(etc, "main.cf"), []byte(mainCf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "master.cf"), []byte(masterCf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("postfix", "-c", etc, "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(pf, "maillog"))
		t.Fatalf("postfix start: %v: %s\nmaillog:\n%s", err, out, log)
	}
	t.Cleanup(func() {
		exec.Command("postfix", "-c", etc, "stop").Run()
		// The master leaves a moment after "postfix stop".
		for range 100 {
			if exec.Command("postfix", "-c", etc, "status").Run() != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		os.RemoveAll(work)
	})
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", ap.String())
		if err == nil {
			c.Close()
			break
		}
		if i == 200 {
			log, _ := os.ReadFile(filepath.Join(pf, "maillog"))
			t.Fatalf("Postfix does not listen on %s; maillog:\n%s", ap, log)
		}
		time.Sleep(25 * time.Millisecond)
	}
	read := func(id string) string {
		out, err := exec.Command("postcat", "-c", etc, "-bh", "-q", id).Output()
		if err != nil {
			t.Fatalf("postcat %s: %v", id, err)
		}
		return string(out)
	}
	pemBytes, err := os.ReadFile(filepath.Join(etc, "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatal("no certificate in tls.crt")
	}
	return route.Target{Host: "mx.test", Addrs: []netip.Addr{ap.Addr()}, Port: int(ap.Port())}, read, pool
}

// queuedAs is the queue ID in Postfix's "250 2.0.0 Ok: queued as ID".
func queuedAs(t *testing.T, answer string) string {
	t.Helper()
	i := strings.LastIndex(answer, "queued as ")
	if i < 0 {
		t.Fatalf("answer %q names no queue ID", answer)
	}
	return strings.TrimSpace(answer[i+len("queued as "):])
}

// pfHead has what Postfix would otherwise add for a client in
// mynetworks, so that the text comes back as it went.
const pfHead = "From: s@sender.test\nDate: Sun, 6 Dec 2026 12:00:00 +0000\nMessage-ID: <1@sender.test>\n"

// A private Postfix as the MX: STARTTLS taken (OpenSSL on the other
// side), the certificate verified when the route asks, DSN and 8BITMIME
// used, and the text queued byte for byte behind Postfix's Received.
func TestDeliverToPostfixMX(t *testing.T) {
	tg, read, pfPool := postfixMX(t)
	_, pool := testTLS(t) // a pool that does not trust Postfix's certificate
	for _, tt := range []struct {
		name string
		rt   *conf.Route
		ca   bool
		body string
	}{
		{"opportunistic", nil, false, pfHead + "Subject: one\n\n.a dot line\nlast\n"},
		{"verify", &conf.Route{Host: "mx.test", TLS: conf.TLSVerify}, true, pfHead + "Subject: two\n\nplain\n"},
		{"8-bit", nil, false, pfHead + "Subject: three\n\nCaf\xc3\xa9\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, []route.Target{tg}, func(o *Options) {
				o.RootCAs = pool
				if tt.ca {
					o.RootCAs = pfPool
				}
			})
			rs := []transport.Recipient{{Addr: "a@example.org", Notify: transport.NotifyFailure}, {Addr: "b@example.org"}}
			res := h.deliver(message("PF", "s@sender.test", tt.body), transport.Hop{Route: tt.rt, Key: "mx.test"}, rs)
			for _, r := range res {
				if !r.Delivered() || r.Relayed || !strings.HasPrefix(r.TLS, "TLSv1.") || !strings.Contains(r.Answer, "queued as") {
					t.Fatalf("result %+v: want delivered over TLS, not relayed (Postfix offers DSN)", r)
				}
			}
			got := read(queuedAs(t, res[0].Answer))
			// Postfix's Received field first, then our text as sent.
			head, rest, _ := strings.Cut(got, "\n")
			for strings.HasPrefix(rest, "\t") {
				var l string
				l, rest, _ = strings.Cut(rest, "\n")
				head += "\n" + l
			}
			if !strings.HasPrefix(head, "Received: from tern.test ") || !strings.Contains(head, "with ESMTPS") {
				t.Errorf("Postfix's Received field %q: want our EHLO name and ESMTPS", head)
			}
			if !strings.HasPrefix(rest, tt.body) || strings.TrimRight(rest[len(tt.body):], "\n") != "" {
				t.Errorf("queued text %q, want %q", rest, tt.body)
			}
		})
	}
	// tls=verify with a certificate nobody vouches for: deferred.
	h := newHarness(t, []route.Target{tg}, func(o *Options) { o.RootCAs = pool })
	res := h.deliver(message("PF", "s@sender.test", pfHead+"\nx\n"), transport.Hop{Route: &conf.Route{Host: "mx.test", TLS: conf.TLSVerify}, Key: "mx.test"}, rcpts("a@example.org"))
	if !res[0].Temporary || res[0].Status != "4.7.5" || !strings.Contains(res[0].Answer, "certificate") {
		t.Errorf("verify against an untrusted certificate: %+v", res[0])
	}
}
