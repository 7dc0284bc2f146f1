package msgauth

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/authres"

	"github.com/tern-mail/tern/internal/testdns"
)

// python is Debian's interpreter, whose dist-packages hold python3-dkim
// and python3-spf; the python3 first on PATH may be another.
const python = "/usr/bin/python3"

// needPython skips unless /usr/bin/python3 can import module, which the
// Debian package pkg brings.
func needPython(t *testing.T, module, pkg string) {
	t.Helper()
	if err := pythonHas(module); err != nil {
		t.Skipf("interop test needs %s with %s: apt-get install %s (%v)", python, module, pkg, err)
	}
}

// pythonHas says why /usr/bin/python3 cannot import module, or nil.
func pythonHas(module string) error {
	return exec.Command(python, "-c", "import "+module).Run()
}

func runPython(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(python, append([]string{"testdata/interop.py"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("python %v: %v\n%s", args, err, errb.String())
	}
	return out.String()
}

// TestRFC8463Vector verifies RFC 8463 Appendix A.3's message, signed
// with ed25519 and RSA, against the keys of A.2.
func TestRFC8463Vector(t *testing.T) {
	msg, err := os.ReadFile("testdata/rfc8463.eml")
	if err != nil {
		t.Fatal(err)
	}
	srv := testdns.Start(t)
	srv.TXT("brisbane._domainkey.football.example.com", "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
	srv.TXT("test._domainkey.football.example.com", "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB")
	c := newChecker(t, srv)
	env := Envelope{RemoteIP: client, Helo: "client1.football.example.com", MailFrom: "joe@football.example.com"}
	v := check(t, c, env, string(msg))
	if len(v.DKIM) != 2 || v.DKIM[0].Result != authres.ResultPass || v.DKIM[1].Result != authres.ResultPass {
		t.Errorf("RFC 8463 vector: %+v", v.DKIM)
	}
	v = check(t, c, env, strings.Replace(string(msg), "hungry", "thirsty", 1))
	if len(v.DKIM) != 2 || v.DKIM[0].Result != authres.ResultFail || v.DKIM[1].Result != authres.ResultFail {
		t.Errorf("RFC 8463 vector, body changed: %+v", v.DKIM)
	}
}

// TestDKIMInteropTernSigns: dkimpy verifies what Sign wrote.
func TestDKIMInteropTernSigns(t *testing.T) {
	needPython(t, "dkim, nacl", "python3-dkim python3-nacl")
	ed, rk := newEd25519(t), testRSAKey(t)
	records := map[string]string{}
	for sel, k := range map[string]crypto.Signer{"ed": ed, "rsa": rk} {
		rec, err := KeyRecord(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		records[sel+"._domainkey.example.org"] = rec
	}
	js, _ := json.Marshal(records)
	recPath := filepath.Join(t.TempDir(), "records.json")
	if err := os.WriteFile(recPath, js, 0o600); err != nil {
		t.Fatal(err)
	}
	keys := []SigningKey{{Domain: "example.org", Selector: "ed", Signer: ed}, {Domain: "example.org", Selector: "rsa", Signer: rk}}
	msg := signed(t, plainMsg, keys...)
	if got := runPython(t, msg, "dkim-verify", recPath); got != "pass\npass\n" {
		t.Errorf("dkimpy on tern's signatures: %q, want pass twice", got)
	}
	if got := runPython(t, strings.Replace(msg, "Noon", "Dawn", 1), "dkim-verify", recPath); got != "fail\nfail\n" {
		t.Errorf("dkimpy on a changed body: %q, want fail twice", got)
	}
	if got := runPython(t, strings.Replace(msg, "\r\nFrom: Alice", "\r\nTo: eve@evil.example\r\nFrom: Alice", 1), "dkim-verify", recPath); got != "fail\nfail\n" {
		t.Errorf("dkimpy on an added oversigned To: %q, want fail twice", got)
	}
}

// TestDKIMInteropDkimpySigns: tern verifies what dkimpy signed.
func TestDKIMInteropDkimpySigns(t *testing.T) {
	needPython(t, "dkim, nacl", "python3-dkim python3-nacl")
	ed, rk := newEd25519(t), testRSAKey(t)
	dir := t.TempDir()
	// dkimpy reads an ed25519 key as the base64 seed, RSA as PEM.
	edPath, rsaPath := filepath.Join(dir, "ed.key"), filepath.Join(dir, "rsa.key")
	for path, data := range map[string][]byte{
		edPath:  []byte(base64.StdEncoding.EncodeToString(ed.Seed())),
		rsaPath: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	srv := testdns.Start(t)
	publish(t, srv, "example.org", "ed", ed)
	publish(t, srv, "example.org", "rsa", rk)
	c := newChecker(t, srv)
	env := Envelope{RemoteIP: client, Helo: "x.test", MailFrom: "alice@example.org"}
	for _, tc := range []struct{ sel, path, algo string }{
		{"ed", edPath, "ed25519-sha256"},
		{"rsa", rsaPath, "rsa-sha256"},
	} {
		msg := runPython(t, plainMsg, "dkim-sign", tc.path, "example.org", tc.sel, tc.algo)
		if v := check(t, c, env, msg); len(v.DKIM) != 1 || v.DKIM[0].Result != authres.ResultPass {
			t.Errorf("%s by dkimpy: %+v", tc.algo, v.DKIM)
		}
		if v := check(t, c, env, strings.Replace(msg, "Subject: lunch", "Subject: brunch", 1)); len(v.DKIM) != 1 || v.DKIM[0].Result != authres.ResultFail {
			t.Errorf("%s by dkimpy, header changed: %+v", tc.algo, v.DKIM)
		}
	}
}

// TestSPFInterop: pyspf and tern give the same result on the same
// records, asked from the same DNS server.
func TestSPFInterop(t *testing.T) {
	needPython(t, "spf, dns.resolver", "python3-spf")
	srv := testdns.Start(t)
	srv.TXT("pass.test", "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all")
	srv.TXT("soft.test", "v=spf1 a:nohost.soft.test ~all")
	srv.TXT("neutral.test", "v=spf1 ?all")
	srv.A("none.test", "192.0.2.10")
	srv.TXT("perm.test", "v=spf1 ip4:192.0.2.300 -all")
	srv.TXT("two.test", "v=spf1 -all")
	srv.TXT("two.test", "v=spf1 +all")
	srv.TXT("temp.test", "v=spf1 -all")
	srv.ServFail("temp.test")
	srv.TXT("mx.test", "v=spf1 mx/24 -all")
	srv.MX("mx.test", 10, "in.mx.test")
	srv.A("in.mx.test", "192.0.2.200")
	srv.TXT("redir.test", "v=spf1 redirect=pass.test")
	srv.TXT("macro.test", "v=spf1 exists:%{l}.%{d}.ok.macro.test -all")
	srv.A("alice.macro.test.ok.macro.test", "127.0.0.2")
	for i := range 11 {
		srv.TXT("l"+strconv.Itoa(i)+".loop.test", "v=spf1 include:l"+strconv.Itoa(i+1)+".loop.test -all")
	}
	srv.TXT("l11.loop.test", "v=spf1 +all")
	srv.TXT("helo.test", "v=spf1 a -all")
	srv.A("helo.test", "192.0.2.10")
	c := newChecker(t, srv)
	_, port, _ := strings.Cut(srv.Addr, ":")

	cases := []struct{ ip, from, helo string }{
		{"192.0.2.10", "a@pass.test", "x.test"},
		{"203.0.113.1", "a@pass.test", "x.test"},
		{"2001:db8::1", "a@pass.test", "x.test"},
		{"192.0.2.10", "a@soft.test", "x.test"},
		{"192.0.2.10", "a@neutral.test", "x.test"},
		{"192.0.2.10", "a@none.test", "x.test"},
		{"192.0.2.10", "a@nosuch.test", "x.test"},
		{"192.0.2.10", "a@perm.test", "x.test"},
		{"192.0.2.10", "a@two.test", "x.test"},
		{"192.0.2.10", "a@temp.test", "x.test"},
		{"192.0.2.77", "a@mx.test", "x.test"},
		{"192.0.3.77", "a@mx.test", "x.test"},
		{"192.0.2.10", "a@redir.test", "x.test"},
		{"192.0.2.10", "alice@macro.test", "x.test"},
		{"192.0.2.10", "bob@macro.test", "x.test"},
		{"192.0.2.10", "a@l0.loop.test", "x.test"},
		{"192.0.2.10", "postmaster@helo.test", "helo.test"},
		{"192.0.2.11", "postmaster@helo.test", "helo.test"},
	}
	var in strings.Builder
	for _, tc := range cases {
		fmt.Fprintf(&in, "%s %s %s\n", tc.ip, tc.from, tc.helo)
	}
	// One pyspf process for every case: its start-up is most of the time.
	theirs := strings.Fields(runPython(t, in.String(), "spf", port))
	if len(theirs) != len(cases) {
		t.Fatalf("pyspf gave %d results for %d cases: %q", len(theirs), len(cases), theirs)
	}
	for i, tc := range cases {
		ours := c.checkSPF(t.Context(), Envelope{RemoteIP: netip.MustParseAddr(tc.ip), Helo: tc.helo, MailFrom: tc.from})
		if string(ours.Result) != theirs[i] {
			t.Errorf("SPF <%s> from %s: tern %s (%s), pyspf %s", tc.from, tc.ip, ours.Result, ours.Reason, theirs[i])
		}
	}
}
