package msgauth

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-message/textproto"

	"github.com/tern-mail/tern/internal/testdns"
)

func TestSignedHeaderKeys(t *testing.T) {
	h, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(
		"From: a@example.org\r\nTo: b@x\r\nTo: c@x\r\nSender: s@example.org\r\nX-Other: 1\r\n\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, k := range signedHeaderKeys(h) {
		count[k]++
	}
	// Oversigned: one more than present; others as present; unknown never.
	for k, want := range map[string]int{"From": 2, "To": 3, "Subject": 1, "Date": 1, "References": 1, "Sender": 1, "List-Id": 0, "X-Other": 0} {
		if count[k] != want {
			t.Errorf("h= holds %s %d times, want %d", k, count[k], want)
		}
	}
}

func TestLoadSigningKeys(t *testing.T) {
	conf := t.TempDir()
	if keys, err := LoadSigningKeys(conf, "example.org"); err != nil || keys != nil {
		t.Fatalf("no dkim directory: %v %v, want no keys and no error", keys, err)
	}
	if _, _, err := GenerateKey(conf, "Example.ORG", "b", KeyEd25519); err != nil {
		t.Fatal(err)
	}
	dir := KeyDir(conf, "example.org")
	// A PKCS #1 RSA key, as opendkim-genkey writes.
	rk := testRSAKey(t)
	os.WriteFile(filepath.Join(dir, "a.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}), 0o600)
	os.WriteFile(filepath.Join(dir, "README"), []byte("not a key"), 0o600)
	keys, err := LoadSigningKeys(conf, "EXAMPLE.org")
	if err != nil || len(keys) != 2 || keys[0].Selector != "a" || keys[1].Selector != "b" || keys[0].Domain != "example.org" {
		t.Fatalf("keys %+v, %v", keys, err)
	}
	os.WriteFile(filepath.Join(dir, "c.key"), []byte("garbage"), 0o600)
	if _, err := LoadSigningKeys(conf, "example.org"); err == nil || !strings.Contains(err.Error(), "c.key") {
		t.Errorf("a bad key file: %v, want an error naming it", err)
	}
}

func TestParsePrivateKey(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(ec)
	for name, data := range map[string]string{
		"no PEM":      "hello",
		"certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
		"bad PKCS8":   "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
		"ECDSA key":   string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
	} {
		if _, err := ParsePrivateKey([]byte(data)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestGenerateKeyRefuses(t *testing.T) {
	conf := t.TempDir()
	for _, tc := range []struct{ domain, selector, typ string }{
		{"example.org", "s", "dsa"},
		{"example.org", "../s", KeyEd25519},
		{"example.org", "", KeyEd25519},
		{"../x", "s", KeyEd25519},
		{"org", "s", KeyEd25519},
	} {
		if _, _, err := GenerateKey(conf, tc.domain, tc.selector, tc.typ); err == nil {
			t.Errorf("GenerateKey(%q, %q, %q) succeeded", tc.domain, tc.selector, tc.typ)
		}
	}
	if _, _, err := GenerateKey(conf, "example.org", "s", KeyEd25519); err != nil {
		t.Fatal(err)
	}
	if _, _, err := GenerateKey(conf, "example.org", "s", KeyEd25519); err == nil || !strings.Contains(err.Error(), ErrKeyExists.Error()) {
		t.Errorf("second key of the same name: %v", err)
	}
	if ents, _ := os.ReadDir(KeyDir(conf, "example.org")); len(ents) != 1 {
		t.Errorf("left behind: %v", ents)
	}
}

func TestCompareDNS(t *testing.T) {
	srv := testdns.Start(t)
	c := newChecker(t, srv)
	ed := newEd25519(t)
	rec, _ := KeyRecord(ed.Public())
	// Published folded differently: the same key.
	srv.TXT("s._domainkey.example.org", "v=DKIM1; k=ed25519; p="+keyTag(rec)[:20]+" "+keyTag(rec)[20:])
	srv.TXT("example.org", "v=spf1 mx ~all")
	srv.TXT("example.org", "google-site-verification=abc")
	srv.TXT("_dmarc.example.org", "v=DMARC1; p=none")
	srv.ServFail("t._domainkey.example.org")
	recs := []DNSRecord{
		{Kind: "DKIM", Name: "s._domainkey.example.org", Value: rec},
		{Kind: "DKIM", Name: "t._domainkey.example.org", Value: rec},
		{Kind: "DKIM", Name: "u._domainkey.example.org", Value: rec},
		{Kind: "SPF", Name: "example.org", Value: "v=spf1 mx ~all"},
		{Kind: "DMARC", Name: "_dmarc.example.org", Value: "v=DMARC1; p=quarantine"},
	}
	CompareDNS(t.Context(), c.Resolver, recs)
	want := []RecordState{RecordOK, RecordUnknown, RecordMissing, RecordOK, RecordDiffers}
	for i, r := range recs {
		if r.State != want[i] {
			t.Errorf("%s %s: %s, want %s (%v)", r.Kind, r.Name, r.State, want[i], r.Err)
		}
	}
	var b strings.Builder
	if err := WriteZone(&b, recs[4:]); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != "_dmarc.example.org. 3600 IN TXT \"v=DMARC1; p=quarantine\"\n; DMARC: differs: published \"v=DMARC1; p=none\"\n" {
		t.Errorf("zone %q", got)
	}
}

func FuzzKeyTag(f *testing.F) {
	f.Add("v=DKIM1; k=rsa; p=MIGf MA0")
	f.Add("p=;p=x")
	f.Add(";;==")
	f.Fuzz(func(t *testing.T, rec string) {
		p := keyTag(rec)
		if strings.ContainsAny(p, " \t\r\n") {
			t.Fatalf("keyTag(%q) = %q holds white space", rec, p)
		}
		if p != "" && !strings.Contains(strings.Join(strings.Fields(rec), ""), p) {
			t.Fatalf("keyTag(%q) = %q, not from the record", rec, p)
		}
	})
}
