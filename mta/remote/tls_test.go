package remote

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"

	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/mta/route"
	"github.com/tern-mail/tern/mta/transport"
)

// plaintext is what the client wrote before TLS began.
func plaintext(m *mx) string { return m.written() }

func TestDeliverStartTLSOpportunistic(t *testing.T) {
	srvTLS, _ := testTLS(t)
	m := newMX(t, "127.0.0.2", 0, withTLS(srvTLS))
	h := newHarness(t, []route.Target{m.target("mx.example.org")}, nil)
	res := h.deliver(message("T1", "s@sender.test", text), transport.Hop{}, rcpts("a@example.org"))
	if !res[0].Delivered() || res[0].TLS != "TLSv1.3" {
		t.Fatalf("result %+v, want delivered over TLSv1.3", res[0])
	}
	got := m.received()
	if len(got) != 1 || !got[0].TLS || got[0].Helo != "tern.test" || string(got[0].Data) != crlf(text) {
		t.Fatalf("received %+v", got)
	}
	// Before the handshake: our own name, then STARTTLS, nothing else.
	if pt := plaintext(m); !strings.HasPrefix(pt, "EHLO tern.test\r\nSTARTTLS\r\n") || strings.Contains(pt, "MAIL FROM") {
		t.Errorf("plaintext part of the conversation: %q", pt[:min(len(pt), 60)])
	}
	if !strings.Contains(h.log.String(), "tls=TLSv1.3 dsn=2.0.0 status=sent") {
		t.Errorf("log: %s", h.log)
	}
}

// A handshake that fails on a may host: the same host once more without
// TLS, as Postfix does.
func TestDeliverStartTLSBrokenRetriesPlain(t *testing.T) {
	broken := &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return nil, errors.New("no certificate today")
	}}
	m := newMX(t, "127.0.0.2", 0, withTLS(broken))
	h := newHarness(t, []route.Target{m.target("mx.example.org")}, nil)
	res := h.deliver(message("T2", "s@sender.test", text), transport.Hop{}, rcpts("a@example.org"))
	if !res[0].Delivered() || res[0].TLS != "" {
		t.Fatalf("result %+v, want delivered in plaintext", res[0])
	}
	if m.connCount() != 2 {
		t.Errorf("%d connections, want 2 (TLS, then plaintext)", m.connCount())
	}
	if got := m.received(); len(got) != 1 || got[0].TLS {
		t.Errorf("received %+v", got)
	}
	if pt := plaintext(m); strings.Count(pt, "STARTTLS") != 1 {
		t.Errorf("STARTTLS tried %d times, want once: %q", strings.Count(pt, "STARTTLS"), pt)
	}
	if !strings.Contains(h.log.String(), "TLS failed, trying again without") {
		t.Errorf("log: %s", h.log)
	}

	// tls=encrypt: the broken handshake is a temporary failure.
	h.targets = []route.Target{m.target("mx.example.org")}
	res = h.deliver(message("T3", "s@sender.test", text), transport.Hop{Route: &conf.Route{Host: "mx.example.org", TLS: conf.TLSEncrypt}}, rcpts("a@example.org"))
	if !res[0].Temporary || res[0].Status != "4.7.5" || !strings.Contains(res[0].Answer, "TLS") {
		t.Errorf("encrypt with a broken handshake: %+v", res[0])
	}
}

func TestDeliverTLSPolicies(t *testing.T) {
	srvTLS, pool := testTLS(t)
	withTLSHost := newMX(t, "127.0.0.2", 0, withTLS(srvTLS))
	plainHost := newMX(t, "127.0.0.3", 0)
	for _, tt := range []struct {
		name   string
		m      *mx
		rt     conf.Route
		status string // "" delivered
		tls    bool
	}{
		{"encrypt, offered", withTLSHost, conf.Route{Host: "mx.test", TLS: conf.TLSEncrypt}, "", true},
		{"encrypt, missing", plainHost, conf.Route{Host: "mx.test", TLS: conf.TLSEncrypt}, "4.7.4", false},
		{"verify, right name", withTLSHost, conf.Route{Host: "mx.test", TLS: conf.TLSVerify}, "", true},
		{"verify, wrong name", withTLSHost, conf.Route{Host: "smarthost.test", TLS: conf.TLSVerify}, "4.7.5", false},
		{"verify, missing", plainHost, conf.Route{Host: "mx.test", TLS: conf.TLSVerify}, "4.7.4", false},
		{"none, offered", withTLSHost, conf.Route{Host: "mx.test", TLS: conf.TLSNone}, "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(tt.m.received())
			h := newHarness(t, []route.Target{tt.m.target("mx.test")}, func(o *Options) { o.RootCAs = pool })
			rt := tt.rt
			res := h.deliver(message("T4", "s@sender.test", text), transport.Hop{Route: &rt, Key: "mx.test"}, rcpts("a@example.org"))
			got := tt.m.received()[before:]
			if tt.status == "" {
				if !res[0].Delivered() || (res[0].TLS != "") != tt.tls || len(got) != 1 || got[0].TLS != tt.tls {
					t.Fatalf("result %+v, received %+v; want delivered, TLS %v", res[0], got, tt.tls)
				}
				return
			}
			if res[0].Status != tt.status || !res[0].Temporary || len(got) != 0 {
				t.Fatalf("result %+v, received %d; want deferred %s, nothing sent", res[0], len(got), tt.status)
			}
		})
	}
}

// Credentials go only over TLS, and only as AUTH PLAIN after STARTTLS.
func TestDeliverAuth(t *testing.T) {
	srvTLS, _ := testTLS(t)
	auth := &conf.RouteAuth{File: "/etc/tern/relay.auth", User: "relay", Password: "s3cret"}
	m := newMX(t, "127.0.0.2", 0, withTLS(srvTLS))
	m.user, m.pass = "relay", "s3cret"
	h := newHarness(t, []route.Target{m.target("smarthost.test")}, nil)
	hop := transport.Hop{Key: "smarthost.test", Route: &conf.Route{Domain: "*", Host: "smarthost.test", Auth: auth}}
	res := h.deliver(message("A1", "s@sender.test", text), hop, rcpts("a@example.org"))
	if !res[0].Delivered() || res[0].TLS == "" {
		t.Fatalf("result %+v", res[0])
	}
	if strings.Join(m.auths, ",") != "relay tls=true" {
		t.Errorf("authentications %q", m.auths)
	}
	if pt := plaintext(m); strings.Contains(pt, "AUTH") || strings.Contains(pt, "czNjcmV0") {
		t.Errorf("credentials in plaintext: %q", pt)
	}

	// A wrong password: deferred, with the server's words.
	bad := *auth
	bad.Password = "wrong"
	h2 := newHarness(t, []route.Target{m.target("smarthost.test")}, nil)
	res = h2.deliver(message("A2", "s@sender.test", text), transport.Hop{Key: "x", Route: &conf.Route{Host: "smarthost.test", Auth: &bad}}, rcpts("a@example.org"))
	if !res[0].Temporary || res[0].Status != "4.7.8" || !strings.Contains(res[0].Answer, "535") {
		t.Errorf("wrong password: %+v", res[0])
	}

	// No TLS to be had: the password is never sent.
	plainHost := newMX(t, "127.0.0.3", 0, func(m *mx) { m.srv.AllowInsecureAuth = true })
	plainHost.user, plainHost.pass = "relay", "s3cret"
	for _, rt := range []conf.Route{{Host: "smarthost.test", Auth: auth}, {Host: "smarthost.test", Auth: auth, TLS: conf.TLSNone}} {
		h3 := newHarness(t, []route.Target{plainHost.target("smarthost.test")}, nil)
		rt := rt
		res = h3.deliver(message("A3", "s@sender.test", text), transport.Hop{Key: "y", Route: &rt}, rcpts("a@example.org"))
		if !res[0].Temporary || res[0].Status != "4.7.0" {
			t.Errorf("tls=%q without TLS: %+v", rt.TLS, res[0])
		}
	}
	if pt := plaintext(plainHost); strings.Contains(pt, "AUTH") || len(plainHost.auths) != 0 || len(plainHost.received()) != 0 {
		t.Errorf("without TLS: sent %q, auths %q", pt, plainHost.auths)
	}
	// tls=none with TLS on offer: still never sent.
	h4 := newHarness(t, []route.Target{m.target("smarthost.test")}, nil)
	res = h4.deliver(message("A4", "s@sender.test", text), transport.Hop{Key: "z", Route: &conf.Route{Host: "smarthost.test", Auth: auth, TLS: conf.TLSNone}}, rcpts("a@example.org"))
	if !res[0].Temporary || len(m.auths) != 2 {
		t.Errorf("tls=none with auth: %+v, auths %q", res[0], m.auths)
	}
}

// RFC 8689: a REQUIRETLS message goes only over verified TLS to a host
// that offers REQUIRETLS; else it fails with 5.7.30.
func TestDeliverRequireTLS(t *testing.T) {
	srvTLS, pool := testTLS(t)
	ok := newMX(t, "127.0.0.2", 0, withTLS(srvTLS), func(m *mx) { m.srv.EnableREQUIRETLS = true })
	noReq := newMX(t, "127.0.0.3", 0, withTLS(srvTLS))
	plainHost := newMX(t, "127.0.0.4", 0)
	msg := func() *transport.Message {
		m := message("RT", "s@sender.test", text)
		m.RequireTLS = true
		return m
	}
	h := newHarness(t, []route.Target{ok.target("mx.test")}, func(o *Options) { o.RootCAs = pool })
	res := h.deliver(msg(), transport.Hop{}, rcpts("a@example.org"))
	if !res[0].Delivered() {
		t.Fatalf("result %+v", res[0])
	}
	if got := ok.received(); len(got) != 1 || !got[0].Opts.RequireTLS || !got[0].TLS {
		t.Errorf("received %+v", got)
	}
	for _, tt := range []struct {
		name string
		tg   route.Target
	}{
		{"no REQUIRETLS", noReq.target("mx.test")},
		{"no TLS", plainHost.target("mx.test")},
		{"wrong name", ok.target("other.test")},
	} {
		h := newHarness(t, []route.Target{tt.tg}, func(o *Options) { o.RootCAs = pool })
		res := h.deliver(msg(), transport.Hop{}, rcpts("a@example.org"))
		if res[0].Status != "5.7.30" || res[0].Temporary {
			t.Errorf("%s: %+v, want 5.7.30", tt.name, res[0])
		}
	}
	if len(noReq.received())+len(plainHost.received()) != 0 || len(ok.received()) != 1 {
		t.Errorf("a REQUIRETLS message went where it must not")
	}
}
