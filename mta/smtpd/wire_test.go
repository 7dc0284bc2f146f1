package smtpd

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"net/netip"
	"strings"
	"testing"

	"github.com/tern-mail/tern/internal/auth"
)

// fakeAuth takes bob's "secret", and is out of order for "broken".
type fakeAuth struct{}

func (fakeAuth) Authenticate(_ context.Context, user, pass string, _ netip.Addr) (*auth.Account, error) {
	switch {
	case user == "broken":
		return nil, auth.ErrTemporary
	case user == "bob@example.org" && pass == "secret":
		return &auth.Account{Name: user, UID: -1, GID: -1}, nil
	}
	return nil, auth.ErrAuthFailed
}

// TestWireCorrections pins every reply the wire changes or adds to the
// engine's, found by the command it answers and its code, never by the
// engine's words: a go-smtp that answers otherwise fails here.
func TestWireCorrections(t *testing.T) {
	plain := func(s string) string { return b64test("\x00" + s) }
	for _, c := range []struct {
		name  string
		tls   bool // a certificate configured (STARTTLS offered)
		in    string
		want  []string
		never []string
	}{
		{"EHLO names this host", false, "EHLO c.example\r\n", []string{"250-mx.test hello c.example\r\n", "250-DSN\r\n", "250-SIZE 4096\r\n"}, []string{"Hello", "STARTTLS", "REQUIRETLS"}},
		{"EHLO offers STARTTLS", true, "EHLO c.example\r\n", []string{"250-mx.test hello c.example\r\n250-STARTTLS\r\n"}, nil},
		{"HELO names this host", false, "HELO c.example\r\n", []string{"250 mx.test hello c.example\r\n"}, []string{"Hello"}},
		{"STARTTLS is ours", true, "EHLO c.example\r\nSTARTTLS\r\n", []string{"220 2.0.0 ready to start TLS\r\n"}, []string{"502"}},
		{"STARTTLS not configured", false, "EHLO c.example\r\nSTARTTLS\r\n", []string{"502 5.5.1 STARTTLS not available here cid=cid1\r\n"}, nil},
		{"STARTTLS in a transaction", true, "EHLO c.example\r\nMAIL FROM:<a@remote.example>\r\nSTARTTLS\r\n", []string{"503 5.5.1 STARTTLS must come before MAIL and AUTH cid=cid1\r\n"}, []string{"220 2.0.0"}},
		{"STARTTLS as message data", true, "EHLO c.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nSTARTTLS\r\n.\r\n", []string{"250 2.0.0 ok: queued as q1\r\n"}, []string{"220 2.0.0", "503"}},
		{"STARTTLS in a BDAT chunk", true, "EHLO c.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<bob@example.org>\r\nBDAT 10 LAST\r\nSTARTTLS\r\n", []string{"250 2.0.0 ok: queued as q1\r\n"}, []string{"220 2.0.0"}},
		{"a command right after a chunk", true, "EHLO c.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<bob@example.org>\r\nBDAT 3 LAST\r\nabcSTARTTLS\r\n", []string{"250 2.0.0 ok: queued as q1\r\n220 2.0.0 ready to start TLS\r\n"}, nil},
		{"a refused BDAT chunk is data", true, "EHLO c.example\r\nBDAT 10\r\nSTARTTLS\r\nNOOP\r\n", []string{"\r\n503 5.5.1 ", "\r\n250 "}, []string{"220 2.0.0"}},
		{"a malformed BDAT has no chunk", false, "EHLO c.example\r\nBDAT 10 FIRST\r\nHELO c.example\r\n", []string{"\r\n501 5.5.4 ", "250 mx.test hello c.example\r\n"}, nil},
		{"out of sequence is 503", false, "MAIL FROM:<a@remote.example>\r\nEHLO c.example\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n", []string{"\r\n503 5.5.1 ", "\r\n503 5.5.1 ", "\r\n503 5.5.1 "}, []string{"502"}},
		{"not implemented is 502", false, "EHLO c.example\r\nEXPN staff\r\nHELP\r\n", []string{"\r\n502 5.5.1 ", "\r\n502 5.5.1 "}, []string{"503"}},
		{"AUTH without a mechanism", false, "EHLO c.example\r\nAUTH\r\n", []string{"\r\n501 5.5.4 "}, nil},
		{"AUTH succeeds with 2.7.0", false, "EHLO c.example\r\nAUTH PLAIN " + plain("bob@example.org\x00secret") + "\r\n", []string{"235 2.7.0 authentication succeeded\r\n"}, nil},
		{"bad base64 at AUTH", false, "EHLO c.example\r\nAUTH PLAIN !!!\r\n", []string{"501 5.5.2 invalid base64 data cid=cid1\r\n"}, []string{"454"}},
		{"bad base64 after 334", false, "EHLO c.example\r\nAUTH PLAIN\r\n!!!\r\nNOOP\r\n", []string{"334 \r\n", "501 5.5.2 invalid base64 data cid=cid1\r\n250 "}, []string{"454"}},
		{"a cancelled AUTH", false, "EHLO c.example\r\nAUTH PLAIN\r\n*\r\n", []string{"334 \r\n501 "}, []string{"5.5.2"}},
		{"a temporary failure stays 454", false, "EHLO c.example\r\nAUTH PLAIN " + plain("broken\x00x") + "\r\n", []string{"454 4.7.0 temporary authentication failure"}, []string{"501"}},
		{"base64 look-alike in a message", false, "EHLO c.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nAUTH PLAIN !!!\r\n.\r\nNOOP\r\n", []string{"250 2.0.0 ok: queued as q1\r\n250 "}, []string{"5.5.2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, _ := testConfig(t)
			cfg.Mode = MX
			cfg.Auth = fakeAuth{}
			cfg.InsecureAuth = true
			if c.tls {
				cfg.TLS = &tls.Config{}
			}
			out := converse(t, cfg, []byte(c.in+"QUIT\r\n"))
			rest := out
			for _, w := range c.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("no %q (in order) in\n%s", w, out)
				}
				rest = rest[i+len(w):]
			}
			for _, n := range c.never {
				if strings.Contains(out, n) {
					t.Errorf("%q in\n%s", n, out)
				}
			}
		})
	}
}

func b64test(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// FuzzDataAsSent sends arbitrary message data after DATA, as raw bytes:
// when those bytes, up to the end-of-data line, have a CR or LF outside a
// CRLF, nothing is queued (RFC 5321 s. 2.3.8), whatever the engine's dot
// unstuffing made of them; when something is queued, it is those bytes
// unstuffed with LF line ends, byte for byte.
func FuzzDataAsSent(f *testing.F) {
	for _, s := range []string{
		"Subject: x\r\n\r\nbody\r\n",
		"a\r\n.\rhidden\r\n",
		".\rSubject: x\r\n",
		"a\r\n..b\r\n.\r\n",
		"a\n.\nb\r\n",
		"a\r.\rb\r\n",
		"x\r",
	} {
		f.Add([]byte(s))
	}
	const head = "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, q := testConfig(t)
		cfg.MaxSize = 1 << 20
		in := head + string(data) + "\r\n.\r\nQUIT\r\n"
		converse(t, cfg, []byte(in))
		// The data as sent ends at the first CRLF "." CRLF, counting the
		// CRLF that ends the DATA command.
		sent := "\r\n" + string(data) + "\r\n.\r\n"
		sent = sent[2 : strings.Index(sent, "\r\n.\r\n")+2]
		bad := strings.Contains(strings.ReplaceAll(sent, "\r\n", ""), "\r") ||
			strings.Contains(strings.ReplaceAll(sent, "\r\n", ""), "\n")
		if bad && len(q.msgs) > 0 {
			t.Fatalf("data %q has a bare CR or LF, and %q was queued", sent, q.msgs)
		}
		if len(q.msgs) == 0 {
			return
		}
		var want strings.Builder
		for _, l := range strings.SplitAfter(sent, "\r\n") {
			if l == "" {
				continue
			}
			want.WriteString(strings.TrimSuffix(strings.TrimPrefix(l, "."), "\r\n") + "\n")
		}
		m := q.msgs[0]
		body := m[strings.Index(m, "; Thu, 01 Jan 1970 00:00:00 +0000\n")+len("; Thu, 01 Jan 1970 00:00:00 +0000\n"):]
		if body != want.String() {
			t.Fatalf("data %q queued as %q, want %q", sent, body, want.String())
		}
	})
}
