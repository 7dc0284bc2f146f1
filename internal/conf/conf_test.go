package conf

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tern-mail/tern/internal/sysexit"
)

func writeConf(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func fixedHost(name string) Loader {
	return Loader{Hostname: func() (string, error) { return name, nil }}
}

func TestLoadEmpty(t *testing.T) {
	c, err := fixedHost("Mx.Example.ORG.").Load(writeConf(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Hostname != "mx.example.org" || c.TLSCert != "" || len(c.Domains) != 0 || c.Users != nil {
		t.Errorf("empty directory: %+v", c)
	}
	if !c.IsLocalDomain("MX.example.org") || !c.IsLocalDomain("localhost") || c.IsLocalDomain("example.org") {
		t.Error("IsLocalDomain wrong for the host name")
	}
	_, err = fixedHost("x").Load(filepath.Join(t.TempDir(), "missing"))
	if sysexit.Code(err) != sysexit.Config {
		t.Errorf("missing directory: %v (status %d)", err, sysexit.Code(err))
	}
	_, err = Loader{Hostname: func() (string, error) { return "", errors.New("uname failed") }}.Load(writeConf(t, nil))
	if err == nil || !strings.Contains(err.Error(), "uname failed") {
		t.Errorf("failing system hostname: %v", err)
	}
}

const aliasesFixture = `# postmaster must exist (RFC 5321 §4.5.1)
postmaster: root
root: alice,
  bob@example.org
Lists: "|/usr/bin/list-filter --from, --to", /srv/mail/lists/Maildir/
	, carol@remote.example
support@example.org: alice
logger: |/usr/bin/logger -t mail
`

func TestLoad(t *testing.T) {
	dir := writeConf(t, map[string]string{
		"hostname": "# this host\nmx.example.org\n",
		"domains":  "example.org\nXN--BCHER-KVA.example.\n\n# comment\n",
		"users":    "alice:{PLAIN}x:1000:1000::/home/alice:\nbob@example.org:{PLAIN}y:::::/var/vmail/bob:\n",
		"aliases":  aliasesFixture,
		"relay":    "127.0.0.1\n192.0.2.0/24\n::1\n2001:db8::/32\n",
		"routes":   "example.net relay.example.net:2525\n.example.com [192.0.2.1]\n* [IPv6:2001:db8::25]:587\n",
		"tls.crt":  "x", "tls.key": "y",
	})
	c, err := fixedHost("unused").Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if c.Hostname != "mx.example.org" || c.TLSCert != filepath.Join(dir, "tls.crt") || c.TLSKey != filepath.Join(dir, "tls.key") {
		t.Errorf("conf %+v", c)
	}
	if !c.IsLocalDomain("EXAMPLE.org.") || !c.IsLocalDomain("xn--bcher-kva.example") || c.IsLocalDomain("example.net") {
		t.Error("IsLocalDomain")
	}
	for _, tc := range []struct {
		addr, acct, alias, detail string
		err                       error
	}{
		{"alice", "alice", "", "", nil},
		{"Alice@Example.org", "alice", "", "", nil},
		{"alice+lists@example.org", "alice", "", "lists", nil},
		{"alice@mx.example.org", "alice", "", "", nil},
		{"bob@example.org", "bob@example.org", "", "", nil},
		{"bob@xn--bcher-kva.example", "", "", "", ErrNoUser},
		{"bob", "", "", "", ErrNoUser},
		{"postmaster@example.org", "", "postmaster", "", nil},
		{"lists+x@example.org", "", "lists", "x", nil},
		{"support@example.org", "", "support@example.org", "", nil},
		{"support@xn--bcher-kva.example", "", "", "", ErrNoUser},
		{"alice@example.net", "", "", "", ErrNotLocal},
		{"+x@example.org", "", "", "", ErrNoUser},
		{"@example.org", "", "", "", ErrNoUser},
	} {
		r, err := c.LookupUser(tc.addr)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: error %v, want %v", tc.addr, err, tc.err)
			continue
		}
		if err != nil {
			continue
		}
		switch {
		case tc.acct != "" && (r.Account == nil || r.Account.Name != tc.acct):
			t.Errorf("%s: %+v, want account %s", tc.addr, r, tc.acct)
		case tc.alias != "" && (r.Alias == nil || r.Alias.Name != tc.alias):
			t.Errorf("%s: %+v, want alias %s", tc.addr, r, tc.alias)
		case r.Detail != tc.detail:
			t.Errorf("%s: detail %q, want %q", tc.addr, r.Detail, tc.detail)
		}
	}
	lists := c.Aliases["lists"]
	want := []Target{{TargetCommand, "/usr/bin/list-filter --from, --to"}, {TargetMaildir, "/srv/mail/lists/Maildir/"}, {TargetAddress, "carol@remote.example"}}
	if lists == nil || len(lists.Targets) != 3 || lists.Line != 5 {
		t.Fatalf("lists: %+v", lists)
	}
	for i := range want {
		if lists.Targets[i] != want[i] {
			t.Errorf("lists target %d: %+v, want %+v", i, lists.Targets[i], want[i])
		}
	}
	if root := c.Aliases["root"]; len(root.Targets) != 2 || root.Targets[0] != (Target{TargetLocal, "alice"}) {
		t.Errorf("root: %+v", root)
	}
	for addr, want := range map[string]bool{"127.0.0.1": true, "::ffff:127.0.0.1": true, "192.0.2.200": true, "192.0.3.1": false, "::1": true, "2001:db8:1::5": true, "2001:db9::1": false, "fe80::1%eth0": false} {
		if got := c.Relay.Contains(netip.MustParseAddr(addr)); got != want {
			t.Errorf("relay contains %s: %v, want %v", addr, got, want)
		}
	}
	for domain, want := range map[string]string{
		"example.net": "relay.example.net:2525", "a.b.example.com": "192.0.2.1:0", "example.com": "2001:db8::25:587", "other.example": "2001:db8::25:587",
	} {
		r, ok := c.Routes.Lookup(domain)
		got := r.Host
		if r.Addr.IsValid() {
			got = r.Addr.String()
		}
		if got = got + ":" + strconv.Itoa(r.Port); !ok || got != want {
			t.Errorf("route for %s: %s %v, want %s", domain, got, ok, want)
		}
	}
}

func TestErrorsNameFileAndLine(t *testing.T) {
	for _, tc := range []struct{ file, content, want string }{
		{"hostname", "a.example\nb.example\n", "hostname:2: one host name only"},
		{"hostname", "bad_host!\n", "hostname:1: domain \"bad_host!\""},
		{"domains", "example.org\nbücher.example\n", "domains:2: domain \"bücher.example\" is not ASCII"},
		{"domains", "ex..ample\n", "domains:1: domain \"ex..ample\": empty label"},
		{"domains", "\n-a.example\n", "domains:2: domain \"-a.example\""},
		{"users", "#\nbob:{MD5}x\n", "users:2: user bob: unknown password scheme"},
		{"aliases", "root alice\n", "aliases:1: want \"name: target, target\""},
		{"aliases", "\n  alice\n", "aliases:2: continuation line"},
		{"aliases", "a: b\nroot:\n  \nx: y\n", "aliases:2: alias root has no target"},
		{"aliases", "root: /var/mail/root\n", "aliases:1: alias root: /var/mail/root: mbox files are not supported"},
		{"aliases", "root: :include:/etc/list\n", "aliases:1: alias root: :include: files are not supported"},
		{"aliases", "root: \"|cmd\n", "aliases:1: alias root: unterminated quote"},
		{"aliases", "root: a\nROOT: b\n", "aliases:2: alias root is already on line 1"},
		{"aliases", "root: a@\n", "aliases:1: alias root: address \"a@\""},
		{"aliases", "root: a b\n", "aliases:1: alias root: target \"a b\" holds a blank"},
		{"relay", "127.0.0.1\n10.0.0.1/8\n", "relay:2: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?"},
		{"relay", "localhost\n", "relay:1: want an address or a network"},
		{"routes", "example.net\n", "routes:1: want \"domain host[:port] [tls=may|encrypt|verify|none] [auth=FILE]\""},
		{"routes", "example.net relay tls=maybe\n", "routes:1: tls=maybe: want may, encrypt, verify or none"},
		{"routes", "example.net relay tls=may tls=none\n", "routes:1: tls= given twice"},
		{"routes", "example.net relay auth=a auth=b\n", "routes:1: auth= given twice"},
		{"routes", "example.net relay tls=none auth=relay.auth\n", "routes:1: auth= with tls=none: credentials are never sent without TLS"},
		{"routes", "example.net relay port=25\n", "routes:1: unknown option \"port\""},
		{"routes", "example.net relay tls\n", "routes:1: option \"tls\": want tls=POLICY or auth=FILE"},
		{"routes", "example.net relay auth=\n", "routes:1: option \"auth=\""},
		{"routes", "example.net relay:99999\n", "routes:1: port \"99999\""},
		{"routes", "example.net [300.1.1.1]\n", "routes:1: address literal \"[300.1.1.1]\""},
		{"routes", "* a.example\n* b.example\n", "routes:2: route for * is already on line 1"},
		{"domains", "#\n" + strings.Repeat("a", 5000) + "\n", "domains:2: line longer than 4096 bytes"},
	} {
		dir := writeConf(t, map[string]string{tc.file: tc.content})
		_, err := fixedHost("h.example").Load(dir)
		want := filepath.Join(dir, tc.want)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s %.30q: %v, want %q", tc.file, tc.content, err, want)
			continue
		}
		if sysexit.Code(err) != sysexit.Config {
			t.Errorf("%s: status %d, want 78", tc.file, sysexit.Code(err))
		}
	}
	dir := writeConf(t, map[string]string{"tls.crt": "x"})
	if _, err := fixedHost("h.example").Load(dir); err == nil || !strings.Contains(err.Error(), "tls.key") {
		t.Errorf("tls.crt without tls.key: %v", err)
	}
}

func FuzzParseAliases(f *testing.F) {
	f.Add(aliasesFixture)
	f.Add("a: \"|x\\\"y\", b\n\tc\n")
	f.Fuzz(func(t *testing.T, in string) {
		a, err := ParseAliases("aliases", strings.NewReader(in))
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) && !strings.Contains(err.Error(), "aliases") {
				t.Errorf("error without file name: %v", err)
			}
			return
		}
		for name, al := range a {
			if name == "" || len(al.Targets) == 0 {
				t.Errorf("alias %q with %d targets", name, len(al.Targets))
			}
			for _, tg := range al.Targets {
				if tg.Value == "" || strings.ContainsAny(tg.Value, "\n\x00") {
					t.Errorf("alias %q: bad target %q", name, tg.Value)
				}
			}
		}
	})
}

func FuzzParseRoutes(f *testing.F) {
	f.Add("example.net relay.example.net:2525\n.example.com [192.0.2.1]\n* [IPv6:2001:db8::25]:587\n")
	f.Add("* smtp.provider.example:587 tls=verify auth=/etc/tern/provider.auth\nexample.org [::1] tls=none\n")
	f.Add("example.org relay tls=encrypt auth=x auth=y\n")
	f.Fuzz(func(t *testing.T, in string) {
		rs, err := ParseRoutes("routes", strings.NewReader(in))
		if err != nil {
			return
		}
		for _, r := range rs {
			if (r.Host == "") == !r.Addr.IsValid() || r.Port < 0 || r.Port > 65535 {
				t.Errorf("route %+v", r)
			}
			switch r.TLS {
			case "", TLSMay, TLSEncrypt, TLSVerify, TLSNone:
			default:
				t.Errorf("route %+v: tls=%q", r, r.TLS)
			}
			if r.Auth != nil && (r.TLS == TLSNone || r.Auth.File == "" || r.Auth.Password != "") {
				t.Errorf("route %+v: auth %q", r, r.Auth.File)
			}
		}
	})
}

// An unquoted command runs to the next comma, as Postfix reads it.
func TestUnquotedCommand(t *testing.T) {
	a, err := ParseAliases("aliases", strings.NewReader(aliasesFixture))
	if err != nil {
		t.Fatal(err)
	}
	if got := a["logger"].Targets; len(got) != 1 || got[0] != (Target{TargetCommand, "/usr/bin/logger -t mail"}) {
		t.Errorf("logger: %+v", got)
	}
}

func TestRouteOptions(t *testing.T) {
	dir := writeConf(t, map[string]string{
		"routes": "example.net relay.example.net tls=verify auth=relay.auth\n" +
			"example.org [192.0.2.1]:2525 tls=none\n" +
			"* smtp.provider.example:587 auth=/nonexistent/ignored.auth tls=encrypt\n" +
			"example.com mx.example.com\n",
		"relay.auth": "# for relay.example.net\n\n  bob@example.net   s3cret with blanks \n",
	})
	if err := os.Chmod(filepath.Join(dir, "relay.auth"), 0o600); err != nil {
		t.Fatal(err)
	}
	rs, err := ParseRoutes(filepath.Join(dir, "routes"), strings.NewReader(mustRead(t, filepath.Join(dir, "routes"))))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		tls  TLSPolicy
		auth string
	}{{TLSVerify, filepath.Join(dir, "relay.auth")}, {TLSNone, ""}, {TLSEncrypt, "/nonexistent/ignored.auth"}, {"", ""}}
	for i, w := range want {
		r := rs[i]
		got := ""
		if r.Auth != nil {
			got = r.Auth.File
		}
		if r.TLS != w.tls || got != w.auth {
			t.Errorf("route %d: tls=%q auth=%q, want tls=%q auth=%q", i, r.TLS, got, w.tls, w.auth)
		}
	}
	// The loader reads the credentials; the missing file of line 3 is
	// an error then, and not before.
	if _, err := fixedHost("h.example").Load(dir); err != nil {
		t.Errorf("without RouteAuth: %v", err)
	}
	l := fixedHost("h.example")
	l.RouteAuth = true
	_, err = l.Load(dir)
	if want := filepath.Join(dir, "routes") + ":3: auth file: open /nonexistent/ignored.auth"; err == nil || !strings.HasPrefix(err.Error(), want) || sysexit.Code(err) != sysexit.Config {
		t.Errorf("missing auth file: %v, want %q", err, want)
	}
	if err := os.WriteFile(filepath.Join(dir, "routes"), []byte("example.net relay.example.net tls=verify auth=relay.auth\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := l.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Routes[0].Auth
	if a.User != "bob@example.net" || a.Password != "s3cret with blanks" {
		t.Errorf("credentials %q %q", a.User, a.Password)
	}
	// Never printed.
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("route", "route", c.Routes[0], "auth", a)
	for _, s := range []string{fmt.Sprintf("%v %+v %#v %s", c.Routes[0], c.Routes[0], c.Routes[0], a), logged.String()} {
		if strings.Contains(s, "s3cret") {
			t.Errorf("the password shows: %s", s)
		}
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRouteAuthErrors(t *testing.T) {
	for _, tc := range []struct {
		content string
		mode    os.FileMode
		want    string // after the directory; "" for success
	}{
		{"bob pw\n", 0o600, ""},
		{"bob pw\n", 0o400, ""},
		{"bob pw\n", 0o640, "routes:2: auth file %s/a.auth is readable by others than its owner (mode 0640): chmod 600 %s/a.auth"},
		{"bob pw\n", 0o604, "routes:2: auth file %s/a.auth is readable by others than its owner (mode 0604)"},
		{"# empty\n", 0o600, "routes:2: auth file %s/a.auth holds no \"user password\" line"},
		{"bob\n", 0o600, "a.auth:1: want \"user password\""},
		{"#\nbob pw\nalice pw2\n", 0o600, "a.auth:3: one \"user password\" line only (the first is on line 2)"},
		{"bob p\x01w\n", 0o600, "a.auth:1: user or password holds a control character"},
		{"bob " + strings.Repeat("x", 5000) + "\n", 0o600, "a.auth:1: line longer than 4096 bytes"},
		{strings.Repeat("#\n", 9000), 0o600, "routes:2: auth file %s/a.auth is larger than 16384 bytes"},
	} {
		dir := writeConf(t, map[string]string{"routes": "#\n* relay.example tls=encrypt auth=a.auth\n", "a.auth": tc.content})
		if err := os.Chmod(filepath.Join(dir, "a.auth"), tc.mode); err != nil {
			t.Fatal(err)
		}
		_, err := Load(dir)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%q %o: %v", tc.content, tc.mode, err)
			}
			continue
		}
		want := filepath.Join(dir, strings.ReplaceAll(tc.want, "%s", dir))
		if err == nil || !strings.HasPrefix(err.Error(), want) || sysexit.Code(err) != sysexit.Config {
			t.Errorf("%.20q %o: %v\n  want %s", tc.content, tc.mode, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "pw") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
}
