package tests

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/authres"

	"github.com/tern-mail/tern/internal/resolver"
	"github.com/tern-mail/tern/internal/testdns"
	"github.com/tern-mail/tern/mta/msgauth"
)

// TestDKIMKeygenSigns: the keys tern-dkim keygen writes sign mail that
// verifies against the records it prints, published as printed.
func TestDKIMKeygenSigns(t *testing.T) {
	r := NewRoot(t)
	srv := testdns.Start(t)
	for _, args := range [][]string{
		{"keygen", "example.org", "e2026"},
		{"keygen", "--type", "rsa", "example.org", "r2026"},
	} {
		res := r.Run("", nil, "tern-dkim", args...)
		if res.Code != 0 || !strings.Contains(res.Stderr, "info: wrote key=") {
			t.Fatalf("tern-dkim %v: %v", args, res)
		}
		// The printed line is a zone-file record: publish it as is.
		srv.Add(strings.TrimSpace(res.Stdout))
	}
	for _, sel := range []string{"e2026", "r2026"} {
		st, err := os.Stat(filepath.Join(r.Conf, "dkim", "example.org", sel+".key"))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("key %s: %v, mode %v; want 0600", sel, err, st.Mode().Perm())
		}
	}
	if res := r.Run("", nil, "tern-dkim", "keygen", "example.org", "e2026"); res.Code != 73 || !strings.Contains(res.Stderr, "remove it first") {
		t.Errorf("keygen over an existing key: %v, want exit 73", res)
	}

	keys, err := msgauth.LoadSigningKeys(r.Conf, "example.org")
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys: %v %v", keys, err)
	}
	msg := "From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nhello\r\n"
	sig, err := msgauth.Sign(strings.NewReader(msg), keys)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := resolver.New(resolver.Config{Servers: []string{srv.Addr}, Timeout: time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	c := &msgauth.Checker{Resolver: cl, AuthServID: "mx.example.net"}
	v, err := c.Check(context.Background(), msgauth.Envelope{Helo: "x.example.org", MailFrom: "a@example.org"}, strings.NewReader(sig+msg))
	if err != nil {
		t.Fatal(err)
	}
	if len(v.DKIM) != 2 || v.DKIM[0].Result != authres.ResultPass || v.DKIM[1].Result != authres.ResultPass {
		t.Errorf("signatures by tern-dkim's keys: %+v", v.DKIM)
	}
}

func TestDKIMDNS(t *testing.T) {
	r := NewRoot(t)
	r.WriteFile("etc/tern/hostname", "mx.example.org\n")
	srv := testdns.Start(t)
	dnsEnv := []string{"TERN_DNS=" + srv.Addr}
	res := r.Run("", nil, "tern-dkim", "keygen", "example.org", "e2026")
	if res.Code != 0 {
		t.Fatal(res)
	}
	keyLine := strings.TrimSpace(res.Stdout)

	res = r.Run("", nil, "tern-dkim", "dns", "--offline", "example.org")
	want := keyLine + "\n" +
		`example.org. 3600 IN TXT "v=spf1 a:mx.example.org mx ~all"` + "\n" +
		`_dmarc.example.org. 3600 IN TXT "v=DMARC1; p=quarantine; adkim=r; aspf=r"` + "\n"
	if res.Code != 0 || res.Stdout != want {
		t.Fatalf("dns --offline: %v\nwant stdout %q", res, want)
	}

	res = r.Run("", dnsEnv, "tern-dkim", "dns", "example.org")
	if res.Code != 1 || strings.Count(res.Stdout, ": missing\n") != 3 {
		t.Errorf("dns with nothing published: %v, want exit 1 and three missing", res)
	}

	srv.Add(keyLine)
	srv.TXT("example.org", "v=spf1 -all")
	srv.TXT("_dmarc.example.org", "v=DMARC1; p=quarantine; adkim=r; aspf=r")
	res = r.Run("", dnsEnv, "tern-dkim", "dns", "example.org")
	if res.Code != 1 || !strings.Contains(res.Stdout, "; DKIM: ok\n") || !strings.Contains(res.Stdout, `; SPF: differs: published "v=spf1 -all"`) || !strings.Contains(res.Stdout, "; DMARC: ok\n") {
		t.Errorf("dns with SPF differing: %v", res)
	}

	srv.Remove("example.org")
	srv.TXT("example.org", "v=spf1 a:mx.example.org mx ~all")
	res = r.Run("", []string{"TERN_DNS=" + srv.Addr}, "tern-dkim", "dns", "--dns", srv.Addr, "example.org")
	if res.Code != 0 || strings.Count(res.Stdout, ": ok\n") != 3 {
		t.Errorf("dns with all published: %v", res)
	}

	srv.ServFail("_dmarc.example.org")
	if res := r.Run("", dnsEnv, "tern-dkim", "dns", "example.org"); res.Code != 75 || !strings.Contains(res.Stdout, "; DMARC: lookup failed") {
		t.Errorf("dns with a failing server: %v, want exit 75", res)
	}
}

func TestDKIMUsage(t *testing.T) {
	r := NewRoot(t)
	for _, args := range [][]string{
		{},
		{"keygen", "example.org"},
		{"keygen", "--type", "dsa", "example.org", "s"},
		{"keygen", "example.org", "bad/selector"},
		{"keygen", "not a domain", "s"},
		{"dns"},
		{"nosuch"},
	} {
		if res := r.Run("", nil, "tern-dkim", args...); res.Code != 64 || !strings.Contains(res.Stderr, "tern-dkim: fatal: ") {
			t.Errorf("tern-dkim %v: %v, want exit 64", args, res)
		}
	}
	if res := r.Run("", nil, "tern-dkim", "--help"); res.Code != 0 || !strings.Contains(res.Stdout, "keygen") {
		t.Errorf("--help: %v", res)
	}
	if res := r.Run("", []string{"TERN_CONF=" + r.Path("nosuch")}, "tern-dkim", "dns", "example.org"); res.Code != 78 {
		t.Errorf("dns without a control directory: %v, want exit 78", res)
	}
}
