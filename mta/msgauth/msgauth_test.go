package msgauth

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-msgauth/dmarc"

	"github.com/tern-mail/tern/internal/resolver"
	"github.com/tern-mail/tern/internal/testdns"
)

// newChecker returns a Checker asking srv, with a cache that never
// outlives the test.
func newChecker(t *testing.T, srv *testdns.Server) *Checker {
	t.Helper()
	cl, err := resolver.New(resolver.Config{Servers: []string{srv.Addr}, Timeout: time.Second, Attempts: 1, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	return &Checker{Resolver: cl, AuthServID: "mx.tern.test", Timeout: 5 * time.Second}
}

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

// testRSAKey is made once: a 2048-bit key takes a noticeable while.
func testRSAKey(testing.TB) *rsa.PrivateKey {
	rsaOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		rsaKey = k
	})
	return rsaKey
}

func newEd25519(t testing.TB) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// publish puts the key record of k at SELECTOR._domainkey.DOMAIN.
func publish(t *testing.T, srv *testdns.Server, domain, selector string, k crypto.Signer) {
	t.Helper()
	rec, err := KeyRecord(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	srv.TXT(selector+"._domainkey."+domain, splitTXT(rec)...)
}

// splitTXT cuts a record into the 255-byte strings one TXT holds.
func splitTXT(s string) []string {
	var out []string
	for len(s) > 255 {
		out = append(out, s[:255])
		s = s[255:]
	}
	return append(out, s)
}

const plainMsg = "From: Alice <alice@example.org>\r\n" +
	"To: bob@tern.test\r\n" +
	"Subject: lunch\r\n" +
	"Date: Sun, 06 Dec 2026 12:00:00 +0000\r\n" +
	"Message-ID: <1@example.org>\r\n" +
	"\r\n" +
	"Noon at the usual place?\r\n"

func signed(t *testing.T, msg string, keys ...SigningKey) string {
	t.Helper()
	sig, err := Sign(strings.NewReader(msg), keys)
	if err != nil {
		t.Fatal(err)
	}
	return sig + msg
}

func check(t *testing.T, c *Checker, env Envelope, msg string) *Verdict {
	t.Helper()
	v, err := c.Check(context.Background(), env, strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

var client = netip.MustParseAddr("192.0.2.10")

func TestSPF(t *testing.T) {
	srv := testdns.Start(t)
	srv.TXT("pass.test", "v=spf1 ip4:192.0.2.0/24 -all")
	srv.TXT("fail.test", "v=spf1 ip4:198.51.100.1 -all")
	srv.TXT("soft.test", "v=spf1 ~all")
	srv.TXT("neutral.test", "v=spf1 ?all")
	srv.A("none.test", "192.0.2.10") // exists, publishes no SPF
	srv.TXT("perm.test", "v=spf1 ip4:192.0.2.300 -all")
	srv.TXT("two.test", "v=spf1 -all")
	srv.TXT("two.test", "v=spf1 +all")
	srv.TXT("temp.test", "v=spf1 -all")
	srv.ServFail("temp.test")
	srv.TXT("mx.test", "v=spf1 mx -all")
	srv.MX("mx.test", 10, "in.mx.test")
	srv.A("in.mx.test", "192.0.2.10")
	srv.TXT("inc.test", "v=spf1 include:pass.test -all")
	srv.TXT("deadinc.test", "v=spf1 include:gone.test -all")
	// Eleven includes: over RFC 7208 §4.6.4's ten lookups.
	for i := range 11 {
		srv.TXT("l"+string(rune('a'+i))+".loop.test", "v=spf1 include:l"+string(rune('a'+i+1))+".loop.test -all")
	}
	srv.TXT("ll.loop.test", "v=spf1 +all")
	srv.TXT("helo.pass.test", "v=spf1 a -all")
	srv.A("helo.pass.test", "192.0.2.10")
	c := newChecker(t, srv)

	for _, tc := range []struct {
		from, helo string
		ip         string
		want       spf.Result
		identity   string
	}{
		{"a@pass.test", "x.test", "192.0.2.10", spf.Pass, "mailfrom"},
		{"a@pass.test", "x.test", "203.0.113.1", spf.Fail, "mailfrom"},
		{"a@fail.test", "x.test", "192.0.2.10", spf.Fail, "mailfrom"},
		{"a@soft.test", "x.test", "192.0.2.10", spf.SoftFail, "mailfrom"},
		{"a@neutral.test", "x.test", "192.0.2.10", spf.Neutral, "mailfrom"},
		{"a@none.test", "x.test", "192.0.2.10", spf.None, "mailfrom"},
		{"a@nosuch.test", "x.test", "192.0.2.10", spf.None, "mailfrom"},
		{"a@perm.test", "x.test", "192.0.2.10", spf.PermError, "mailfrom"},
		{"a@two.test", "x.test", "192.0.2.10", spf.PermError, "mailfrom"},
		{"a@temp.test", "x.test", "192.0.2.10", spf.TempError, "mailfrom"},
		{"a@mx.test", "x.test", "192.0.2.10", spf.Pass, "mailfrom"},
		{"a@mx.test", "x.test", "192.0.2.11", spf.Fail, "mailfrom"},
		{"a@inc.test", "x.test", "192.0.2.10", spf.Pass, "mailfrom"},
		{"a@deadinc.test", "x.test", "192.0.2.10", spf.PermError, "mailfrom"},
		{"a@la.loop.test", "x.test", "192.0.2.10", spf.PermError, "mailfrom"},
		{"", "helo.pass.test", "192.0.2.10", spf.Pass, "helo"},
		{"", "helo.pass.test", "192.0.2.99", spf.Fail, "helo"},
		{"a@PASS.test", "x.test", "::ffff:192.0.2.10", spf.Pass, "mailfrom"},
	} {
		v := c.checkSPF(context.Background(), Envelope{RemoteIP: netip.MustParseAddr(tc.ip), Helo: tc.helo, MailFrom: tc.from})
		if v.Result != tc.want || v.Identity != tc.identity {
			t.Errorf("SPF for <%s> helo %s from %s = %s (%s, %s), want %s (%s)", tc.from, tc.helo, tc.ip, v.Result, v.Identity, v.Reason, tc.want, tc.identity)
		}
	}
}

// TestSPFBounded: a name that never answers costs one timeout, and gives
// temperror, not a hang.
func TestSPFBounded(t *testing.T) {
	srv := testdns.Start(t)
	srv.Hang("slow.test")
	c := newChecker(t, srv)
	c.Timeout = 300 * time.Millisecond
	start := time.Now()
	v := check(t, c, Envelope{RemoteIP: client, Helo: "x.test", MailFrom: "a@slow.test"}, plainMsg)
	if v.SPF.Result != spf.TempError {
		t.Errorf("SPF with a silent DNS = %s, want temperror", v.SPF.Result)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("check took %v with a 300ms bound", d)
	}
}

func TestDKIM(t *testing.T) {
	srv := testdns.Start(t)
	ed, other := newEd25519(t), newEd25519(t)
	rk := testRSAKey(t)
	publish(t, srv, "example.org", "ed", ed)
	publish(t, srv, "example.org", "rsa", rk)
	publish(t, srv, "example.org", "wrong", other)
	srv.TXT("temp._domainkey.example.org", "v=DKIM1; p=")
	srv.ServFail("temp._domainkey.example.org")
	edKey := SigningKey{Domain: "example.org", Selector: "ed", Signer: ed}
	rsaKey := SigningKey{Domain: "example.org", Selector: "rsa", Signer: rk}
	c := newChecker(t, srv)
	env := Envelope{RemoteIP: client, Helo: "x.test", MailFrom: "alice@example.org"}

	both := signed(t, plainMsg, edKey, rsaKey)
	wrongKey := signed(t, plainMsg, SigningKey{Domain: "example.org", Selector: "wrong", Signer: ed})
	for _, tc := range []struct {
		name string
		msg  string
		want []authres.ResultValue
	}{
		{"ed25519 and RSA", both, []authres.ResultValue{"pass", "pass"}},
		{"LF line ends", strings.ReplaceAll(both, "\r\n", "\n"), []authres.ResultValue{"pass", "pass"}},
		{"body changed", strings.Replace(both, "Noon", "Midnight", 1), []authres.ResultValue{"fail", "fail"}},
		{"header changed", strings.Replace(both, "Subject: lunch", "Subject: dinner", 1), []authres.ResultValue{"fail", "fail"}},
		{"oversigned header added", strings.Replace(both, "\r\nFrom: Alice", "\r\nSubject: pay now\r\nFrom: Alice", 1), []authres.ResultValue{"fail", "fail"}},
		{"relaxed survives refolding", strings.Replace(both, "Subject: lunch", "Subject:   lunch  ", 1), []authres.ResultValue{"pass", "pass"}},
		{"wrong key", wrongKey, []authres.ResultValue{"fail"}},
		{"no key published", signed(t, plainMsg, SigningKey{Domain: "example.org", Selector: "gone", Signer: ed}), []authres.ResultValue{"permerror"}},
		{"key lookup fails", signed(t, plainMsg, SigningKey{Domain: "example.org", Selector: "temp", Signer: ed}), []authres.ResultValue{"temperror"}},
		{"unsigned", plainMsg, nil},
	} {
		v := check(t, c, env, tc.msg)
		var got []authres.ResultValue
		for _, d := range v.DKIM {
			got = append(got, d.Result)
			if d.Domain != "example.org" {
				t.Errorf("%s: d= %q", tc.name, d.Domain)
			}
		}
		if strings.Join(vals(got), ",") != strings.Join(vals(tc.want), ",") {
			t.Errorf("%s: DKIM %v (%+v), want %v", tc.name, got, v.DKIM, tc.want)
		}
	}
}

func vals(v []authres.ResultValue) []string {
	s := make([]string, len(v))
	for i := range v {
		s[i] = string(v[i])
	}
	return s
}

// TestDKIMExpired: x= in the past by our clock fails, whether or not the
// library's clock agrees.
func TestDKIMExpired(t *testing.T) {
	srv := testdns.Start(t)
	ed := newEd25519(t)
	publish(t, srv, "example.org", "ed", ed)
	c := newChecker(t, srv)
	env := Envelope{RemoteIP: client, Helo: "x.test", MailFrom: "alice@example.org"}
	sign := func(exp time.Time) string {
		var b strings.Builder
		err := dkim.Sign(&b, strings.NewReader(plainMsg), &dkim.SignOptions{Domain: "example.org", Selector: "ed", Signer: ed, Expiration: exp})
		if err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	inHour := sign(time.Now().Add(time.Hour))
	if v := check(t, c, env, inHour); v.DKIM[0].Result != authres.ResultPass {
		t.Fatalf("unexpired: %+v", v.DKIM)
	}
	c.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if v := check(t, c, env, inHour); v.DKIM[0].Result != authres.ResultFail || v.DKIM[0].Reason != "signature expired" {
		t.Errorf("expired by our clock: %+v", v.DKIM)
	}
	c.Now = nil
	if v := check(t, c, env, sign(time.Now().Add(-time.Second))); v.DKIM[0].Result != authres.ResultFail || v.DKIM[0].Reason != "signature expired" {
		t.Errorf("expired: %+v", v.DKIM)
	}
}

// TestDKIMBounded: only MaxSignatures signatures cost a lookup.
func TestDKIMBounded(t *testing.T) {
	srv := testdns.Start(t)
	ed := newEd25519(t)
	publish(t, srv, "example.org", "ed", ed)
	msg := plainMsg
	for range 8 {
		msg = signed(t, msg, SigningKey{Domain: "example.org", Selector: "ed", Signer: ed})
	}
	c := newChecker(t, srv)
	c.MaxSignatures = 3
	v := check(t, c, Envelope{RemoteIP: client, Helo: "x.test", MailFrom: "a@example.org"}, msg)
	if len(v.DKIM) != 3 {
		t.Errorf("%d signatures verified, want 3", len(v.DKIM))
	}
}

func TestDMARC(t *testing.T) {
	srv := testdns.Start(t)
	ed := newEd25519(t)
	srv.TXT("example.org", "v=spf1 ip4:192.0.2.0/24 -all")
	srv.TXT("mail.example.org", "v=spf1 ip4:192.0.2.0/24 -all")
	srv.TXT("other.test", "v=spf1 ip4:192.0.2.0/24 -all")
	publish(t, srv, "example.org", "ed", ed)
	publish(t, srv, "mail.example.org", "ed", ed)
	publish(t, srv, "other.test", "ed", ed)
	srv.TXT("_dmarc.example.org", "v=DMARC1; p=reject; sp=quarantine")
	srv.TXT("_dmarc.strict.test", "v=DMARC1; p=reject; aspf=s; adkim=s")
	srv.TXT("strict.test", "v=spf1 ip4:192.0.2.0/24 -all")
	srv.TXT("mail.strict.test", "v=spf1 ip4:192.0.2.0/24 -all")
	publish(t, srv, "mail.strict.test", "ed", ed)
	srv.TXT("_dmarc.none.test", "v=DMARC1; p=none")
	srv.TXT("_dmarc.q.test", "v=DMARC1; p=quarantine")
	srv.TXT("_dmarc.half.test", "v=DMARC1; p=reject; pct=50")
	srv.TXT("_dmarc.halfq.test", "v=DMARC1; p=quarantine; pct=50")
	srv.TXT("_dmarc.temp.test", "v=DMARC1; p=reject")
	srv.ServFail("_dmarc.temp.test")
	srv.TXT("_dmarc.bad.test", "v=DMARC1; p=bogus")
	srv.TXT("_dmarc.two.test", "v=DMARC1; p=reject")
	srv.TXT("_dmarc.two.test", "v=DMARC1; p=none")
	srv.TXT("_dmarc.nop.test", "v=spf1 -all")
	srv.TXT("_dmarc.spftemp.test", "v=DMARC1; p=reject")
	srv.TXT("spftemp.test", "v=spf1 -all")
	srv.ServFail("spftemp.test")
	srv.TXT("_dmarc.dkimtemp.test", "v=DMARC1; p=reject")
	srv.TXT("ed._domainkey.dkimtemp.test", "v=DKIM1; p=")
	srv.ServFail("ed._domainkey.dkimtemp.test")
	c := newChecker(t, srv)

	msgFrom := func(from string) string {
		return strings.Replace(plainMsg, "alice@example.org", from, 1)
	}
	signedBy := func(from, d string) string {
		return signed(t, msgFrom(from), SigningKey{Domain: d, Selector: "ed", Signer: ed})
	}
	good, bad := client, netip.MustParseAddr("203.0.113.5")
	for _, tc := range []struct {
		name     string
		ip       netip.Addr
		mailFrom string
		msg      string
		sample   int
		want     authres.ResultValue
		policy   dmarc.Policy
	}{
		{"pass by SPF alone", good, "b@example.org", msgFrom("a@example.org"), 0, "pass", "none"},
		{"pass by relaxed SPF", good, "b@mail.example.org", msgFrom("a@example.org"), 0, "pass", "none"},
		{"pass by DKIM alone", bad, "b@example.org", signedBy("a@example.org", "example.org"), 0, "pass", "none"},
		{"pass by relaxed DKIM", bad, "b@other.test", signedBy("a@example.org", "mail.example.org"), 0, "pass", "none"},
		{"unaligned SPF and DKIM", good, "b@other.test", signedBy("a@example.org", "other.test"), 0, "fail", "reject"},
		{"strict SPF unaligned", good, "b@mail.strict.test", msgFrom("a@strict.test"), 0, "fail", "reject"},
		{"strict DKIM unaligned", bad, "b@strict.test", signedBy("a@strict.test", "mail.strict.test"), 0, "fail", "reject"},
		{"strict SPF aligned", good, "b@strict.test", msgFrom("a@strict.test"), 0, "pass", "none"},
		{"p=none", bad, "b@none.test", msgFrom("a@none.test"), 0, "fail", "none"},
		{"p=quarantine", bad, "b@q.test", msgFrom("a@q.test"), 0, "fail", "quarantine"},
		{"p=reject", bad, "b@example.org", msgFrom("a@example.org"), 0, "fail", "reject"},
		{"subdomain policy", bad, "b@x.test", msgFrom("a@sub.example.org"), 0, "fail", "quarantine"},
		{"pct sampled in", bad, "b@x.test", msgFrom("a@half.test"), 49, "fail", "reject"},
		{"pct sampled out", bad, "b@x.test", msgFrom("a@half.test"), 50, "fail", "quarantine"},
		{"pct quarantine sampled out", bad, "b@x.test", msgFrom("a@halfq.test"), 99, "fail", "none"},
		{"no record", good, "b@x.test", msgFrom("a@nodmarc.test"), 0, "none", "none"},
		{"not a DMARC record", good, "b@x.test", msgFrom("a@nop.test"), 0, "none", "none"},
		{"two records", good, "b@x.test", msgFrom("a@two.test"), 0, "none", "none"},
		{"lookup fails", bad, "b@x.test", msgFrom("a@temp.test"), 0, "temperror", "none"},
		{"aligned SPF temperror", bad, "b@spftemp.test", msgFrom("a@spftemp.test"), 0, "temperror", "none"},
		{"aligned DKIM temperror", bad, "b@x.test", signedBy("a@dkimtemp.test", "dkimtemp.test"), 0, "temperror", "none"},
		{"unaligned DKIM temperror", bad, "b@x.test", signedBy("a@example.org", "dkimtemp.test"), 0, "fail", "reject"},
		{"bad record", bad, "b@x.test", msgFrom("a@bad.test"), 0, "permerror", "none"},
		{"no From", good, "b@x.test", strings.Replace(plainMsg, "From: Alice <alice@example.org>\r\n", "", 1), 0, "permerror", "none"},
		{"two From", good, "b@x.test", "From: a@example.org\r\n" + plainMsg, 0, "permerror", "none"},
		{"authors of two domains", good, "b@x.test", msgFrom("a@example.org>, <c@other.test"), 0, "permerror", "none"},
	} {
		c.Sample = func() int { return tc.sample }
		v := check(t, c, Envelope{RemoteIP: tc.ip, Helo: "x.test", MailFrom: tc.mailFrom}, tc.msg)
		if v.DMARC.Result != tc.want || v.DMARC.Policy != tc.policy {
			t.Errorf("%s: DMARC %s policy %s (%s), want %s policy %s; SPF %+v DKIM %+v", tc.name, v.DMARC.Result, v.DMARC.Policy, v.DMARC.Reason, tc.want, tc.policy, v.SPF, v.DKIM)
		}
	}
}

func TestOrganizationalDomain(t *testing.T) {
	for in, want := range map[string]string{
		"example.org":        "example.org",
		"a.b.example.org":    "example.org",
		"mail.example.co.uk": "example.co.uk",
		"co.uk":              "co.uk",
		"Mail.Example.ORG.":  "example.org",
		"x.user.github.io":   "user.github.io",
		"org":                "org",
	} {
		if got := OrganizationalDomain(in); got != want {
			t.Errorf("OrganizationalDomain(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestField(t *testing.T) {
	srv := testdns.Start(t)
	ed := newEd25519(t)
	srv.TXT("example.org", "v=spf1 ip4:192.0.2.0/24 -all")
	srv.TXT("_dmarc.example.org", "v=DMARC1; p=reject")
	publish(t, srv, "example.org", "ed", ed)
	c := newChecker(t, srv)
	v := check(t, c, Envelope{RemoteIP: client, Helo: "x.test", MailFrom: "b@example.org"},
		signed(t, plainMsg, SigningKey{Domain: "example.org", Selector: "ed", Signer: ed}))
	f := v.Field("mx.tern.test")
	name, value, ok := strings.Cut(f, ":")
	if !ok || name != "Authentication-Results" || !strings.HasSuffix(f, "\r\n") {
		t.Fatalf("field %q", f)
	}
	for _, line := range strings.Split(strings.TrimSuffix(f, "\r\n"), "\r\n") {
		if len(line) > 78 {
			t.Errorf("line of %d columns: %q", len(line), line)
		}
	}
	id, results, err := authres.Parse(strings.ReplaceAll(value, "\r\n", ""))
	if err != nil || id != "mx.tern.test" {
		t.Fatalf("parse %q: %q %v", value, id, err)
	}
	got := map[string]string{}
	for _, r := range results {
		switch r := r.(type) {
		case *authres.SPFResult:
			got["spf"] = string(r.Value) + " " + r.From
		case *authres.DKIMResult:
			got["dkim"] = string(r.Value) + " " + r.Domain
		case *authres.DMARCResult:
			got["dmarc"] = string(r.Value) + " " + r.From
		}
	}
	want := map[string]string{"spf": "pass example.org", "dkim": "pass example.org", "dmarc": "pass example.org"}
	for k := range want {
		if got[k] != want[k] {
			t.Errorf("%s = %q, want %q (field %q)", k, got[k], want[k], f)
		}
	}
}

func TestRemoveOurResults(t *testing.T) {
	hdr := "Authentication-Results: mx.tern.test; spf=pass smtp.mailfrom=forged.example\r\n" +
		"Authentication-Results: MX.TERN.TEST 1; dkim=pass header.d=forged.example\r\n" +
		"Authentication-Results: mx.tern.test (forged\r\n" +
		"Authentication-Results: upstream.example; spf=fail smtp.mailfrom=a.example\r\n" +
		"Authentication-Results: mx.tern.test.evil; none\r\n" +
		"Subject: hi\r\n\r\n"
	h, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	if n := RemoveOurResults(&h, "mx.tern.test"); n != 3 {
		t.Errorf("removed %d fields, want 3", n)
	}
	var kept []string
	for f := h.FieldsByKey("Authentication-Results"); f.Next(); {
		kept = append(kept, f.Value())
	}
	want := "upstream.example; spf=fail smtp.mailfrom=a.example|mx.tern.test.evil; none"
	if strings.Join(kept, "|") != want {
		t.Errorf("kept %q, want %q", strings.Join(kept, "|"), want)
	}
}

func TestCheckReadError(t *testing.T) {
	srv := testdns.Start(t)
	c := newChecker(t, srv)
	_, err := c.Check(context.Background(), Envelope{RemoteIP: client, Helo: "x.test"}, &failingReader{s: plainMsg[:40]})
	if err == nil {
		t.Fatal("a failing reader gave no error")
	}
}

type failingReader struct{ s string }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, errBroken
	}
	n := copy(p, r.s)
	r.s = r.s[n:]
	return n, nil
}

var errBroken = &brokenErr{}

type brokenErr struct{}

func (*brokenErr) Error() string { return "disk on fire" }

func FuzzRemoveOurResults(f *testing.F) {
	f.Add("mx.tern.test; spf=pass")
	f.Add("mx.tern.test (c) 1; none")
	f.Add("(\\")
	f.Fuzz(func(t *testing.T, value string) {
		var h textproto.Header
		h.Add("Authentication-Results", value)
		n := RemoveOurResults(&h, "mx.tern.test")
		if n+h.Len() != 1 {
			t.Fatalf("removed %d of 1 and kept %d", n, h.Len())
		}
		if n == 1 && !strings.HasPrefix(strings.ToLower(strings.TrimLeft(value, " \t\r\n")), "mx.tern.test") {
			t.Fatalf("removed %q, which does not claim mx.tern.test", value)
		}
	})
}

func FuzzCheckHeader(f *testing.F) {
	f.Add([]byte(plainMsg))
	f.Add([]byte("From: a@b\r\nFrom: c@d\r\n\r\n"))
	f.Add([]byte("DKIM-Signature: v=1; a=ed25519-sha256; d=example.org; s=x; h=from; bh=; b=\r\nFrom: a@example.org\r\n\r\n"))
	srv, err := testdns.Listen("127.0.0.1")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(srv.Close)
	cl, err := resolver.New(resolver.Config{Servers: []string{srv.Addr}, Timeout: 200 * time.Millisecond, Attempts: 1})
	if err != nil {
		f.Fatal(err)
	}
	c := &Checker{Resolver: cl, AuthServID: "mx.tern.test", Timeout: time.Second}
	f.Fuzz(func(t *testing.T, msg []byte) {
		v, err := c.Check(context.Background(), Envelope{RemoteIP: client, Helo: "x.test", MailFrom: "a@example.org"}, strings.NewReader(string(msg)))
		if err != nil {
			if err == ErrHeaderTooLong {
				return
			}
			t.Fatalf("Check: %v", err)
		}
		f := v.Field("mx.tern.test")
		if _, _, err := authres.Parse(strings.TrimPrefix(strings.ReplaceAll(f, "\r\n", ""), "Authentication-Results:")); err != nil {
			t.Fatalf("our own field %q does not parse: %v", f, err)
		}
	})
}
