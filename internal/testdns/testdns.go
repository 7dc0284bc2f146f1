// Package testdns is a DNS server on loopback for tests: it answers, as a
// recursive resolver would, from records the test gives, over UDP and TCP
// on one port. A name it does not know gets NXDOMAIN; a known name without
// records of the type asked for gets NODATA. A test can make a name fail
// (SERVFAIL, always or the first N times), hang (no answer at all), or
// come truncated over UDP so that the client must ask over TCP.
//
// It is a normal package, not a _test file, so that in-package tests and
// the end-to-end tests in tests/ share it.
package testdns

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TTL is the TTL of the records the helpers add.
const TTL = 300

// Server is a running test DNS server.
type Server struct {
	// Addr is "127.0.0.1:PORT": pass it to --dns or resolver.Config.
	Addr string

	udp, tcp *dns.Server
	done     chan struct{} // closed by Close: hanging questions end
	once     sync.Once

	mu       sync.Mutex
	records  []dns.RR
	servfail map[string]int // name -> SERVFAIL answers left; <0: always
	hang     map[string]bool
	truncate bool // every UDP answer comes truncated
	chase    bool // follow CNAMEs inside our data, as a recursive resolver does
	ad       bool // set the AD bit on answers
	queries  []Query
}

// Query is one question the server was asked.
type Query struct {
	Name  string // lower-case FQDN
	Type  uint16
	Proto string // "udp" or "tcp"
	AD    bool   // the query asked for the AD bit (RFC 6840 §5.7)
}

// Start starts a server on 127.0.0.1 with a free port, stopped when the
// test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := Listen("127.0.0.1")
	if err != nil {
		tb.Fatalf("testdns: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// Listen starts a server on host (an address on loopback) with a free
// port for both UDP and TCP. Close stops it.
func Listen(host string) (*Server, error) {
	s := &Server{servfail: map[string]int{}, hang: map[string]bool{}, chase: true, done: make(chan struct{})}
	var pc net.PacketConn
	var ln net.Listener
	// The kernel picks the UDP port; TCP must get the same one, which
	// another process may hold: try a few times.
	for try := 0; ; try++ {
		var err error
		pc, err = net.ListenPacket("udp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, err
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if try == 20 {
			return nil, fmt.Errorf("no port free for both UDP and TCP: %w", err)
		}
	}
	s.Addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(s.serve)
	s.udp = &dns.Server{PacketConn: pc, Handler: h}
	s.tcp = &dns.Server{Listener: ln, Handler: h}
	started := make(chan error, 2)
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		srv.NotifyStartedFunc = func() { started <- nil }
		go func() {
			if err := srv.ActivateAndServe(); err != nil {
				started <- err
			}
		}()
	}
	for range 2 {
		if err := <-started; err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// Close stops the server; hanging questions are let go.
func (s *Server) Close() {
	s.once.Do(func() { close(s.done) })
	s.udp.Shutdown()
	s.tcp.Shutdown()
}

// Add adds records written in zone-file syntax, one a string, such as
// "example.org. 300 IN MX 10 mx.example.org.". It panics on a bad one:
// that is a bug in the test.
func (s *Server) Add(rrs ...string) {
	for _, text := range rrs {
		rr, err := dns.NewRR(text)
		if err != nil || rr == nil {
			panic(fmt.Sprintf("testdns: record %q: %v", text, err))
		}
		s.mu.Lock()
		s.records = append(s.records, rr)
		s.mu.Unlock()
	}
}

// MX adds an MX record; host "." makes a null MX (RFC 7505).
func (s *Server) MX(domain string, pref int, host string) {
	s.Add(fmt.Sprintf("%s %d IN MX %d %s", dns.Fqdn(domain), TTL, pref, dns.Fqdn(host)))
}

// NullMX gives domain the null MX "0 ." (RFC 7505).
func (s *Server) NullMX(domain string) { s.MX(domain, 0, ".") }

// A adds an address record: A for IPv4, AAAA for IPv6.
func (s *Server) A(name string, addrs ...string) {
	for _, a := range addrs {
		t := "A"
		if strings.Contains(a, ":") {
			t = "AAAA"
		}
		s.Add(fmt.Sprintf("%s %d IN %s %s", dns.Fqdn(name), TTL, t, a))
	}
}

// TXT adds one TXT record made of the strings given.
func (s *Server) TXT(name string, parts ...string) {
	q := make([]string, len(parts))
	for i, p := range parts {
		q[i] = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(p) + `"`
	}
	s.Add(fmt.Sprintf("%s %d IN TXT %s", dns.Fqdn(name), TTL, strings.Join(q, " ")))
}

// CNAME makes name an alias of target.
func (s *Server) CNAME(name, target string) {
	s.Add(fmt.Sprintf("%s %d IN CNAME %s", dns.Fqdn(name), TTL, dns.Fqdn(target)))
}

// Remove removes every record of name.
func (s *Server) Remove(name string) {
	fq := dns.CanonicalName(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.records[:0]
	for _, rr := range s.records {
		if dns.CanonicalName(rr.Header().Name) != fq {
			kept = append(kept, rr)
		}
	}
	s.records = kept
}

// ServFail makes every question about name get SERVFAIL.
func (s *Server) ServFail(name string) { s.FailTimes(name, -1) }

// FailTimes makes the next n questions about name get SERVFAIL, and the
// ones after them their answer; n < 0 means always.
func (s *Server) FailTimes(name string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.servfail[dns.CanonicalName(name)] = n
}

// Hang makes questions about name go unanswered, over UDP and TCP.
func (s *Server) Hang(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hang[dns.CanonicalName(name)] = true
}

// Heal undoes ServFail, FailTimes and Hang for name.
func (s *Server) Heal(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.servfail, dns.CanonicalName(name))
	delete(s.hang, dns.CanonicalName(name))
}

// TruncateUDP makes every answer over UDP come empty and truncated, so
// that only TCP gets the records.
func (s *Server) TruncateUDP(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.truncate = on
}

// Chase says whether the server follows CNAMEs into its own data, as a
// recursive resolver does (the default), or answers with the CNAME alone
// and leaves the rest to the client.
func (s *Server) Chase(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.chase = on
}

// Authentic makes the server set the AD bit, as a validating resolver
// does for DNSSEC-signed data.
func (s *Server) Authentic(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ad = on
}

// Queries returns the questions asked so far, in order.
func (s *Server) Queries() []Query {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Query(nil), s.queries...)
}

// Count returns how many questions about name of type qtype (0: any)
// were asked.
func (s *Server) Count(name string, qtype uint16) int {
	fq := dns.CanonicalName(name)
	n := 0
	for _, q := range s.Queries() {
		if q.Name == fq && (qtype == 0 || q.Type == qtype) {
			n++
		}
	}
	return n
}

// soa is the authority record of negative answers (RFC 2308 §3); its
// MINIMUM is what a client may cache them for.
var soa = func() dns.RR {
	rr, err := dns.NewRR(". 60 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60")
	if err != nil {
		panic(err)
	}
	return rr
}()

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := dns.CanonicalName(q.Name)
	proto := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		proto = "tcp"
	}
	s.mu.Lock()
	s.queries = append(s.queries, Query{Name: name, Type: q.Qtype, Proto: proto, AD: req.AuthenticatedData})
	hang := s.hang[name]
	fail := false
	if n, ok := s.servfail[name]; ok && n != 0 {
		fail = true
		if n > 0 {
			s.servfail[name] = n - 1
		}
	}
	truncate, ad := s.truncate && proto == "udp", s.ad
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	if !hang && !fail {
		s.answer(m, name, q.Qtype)
	}
	s.mu.Unlock()
	switch {
	case hang:
		// No answer: over TCP the connection stays open until the
		// client gives up or the server stops.
		if proto == "tcp" {
			select {
			case <-s.done:
			case <-time.After(time.Minute):
			}
		}
		return
	case fail:
		m.Rcode = dns.RcodeServerFailure
	case truncate:
		m.Answer, m.Ns, m.Extra = nil, nil, nil
		m.Truncated = true
	}
	m.AuthenticatedData = ad && m.Rcode == dns.RcodeSuccess
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), false)
	}
	if proto == "udp" {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// answer fills m for (name, qtype) from the records; s.mu is held.
func (s *Server) answer(m *dns.Msg, name string, qtype uint16) {
	for hops := 0; hops < 16; hops++ {
		var cname dns.RR
		found := false
		for _, rr := range s.records {
			h := rr.Header()
			if dns.CanonicalName(h.Name) != name {
				continue
			}
			switch {
			case h.Rrtype == qtype:
				m.Answer = append(m.Answer, dns.Copy(rr))
				found = true
			case h.Rrtype == dns.TypeCNAME:
				cname = rr
			}
		}
		switch {
		case found:
			return
		case cname != nil:
			m.Answer = append(m.Answer, dns.Copy(cname))
			if !s.chase {
				return
			}
			name = dns.CanonicalName(cname.(*dns.CNAME).Target)
			continue
		case !s.exists(name):
			m.Rcode = dns.RcodeNameError
		}
		m.Ns = append(m.Ns, dns.Copy(soa))
		return
	}
}

// exists reports whether name owns a record or is above one (an empty
// non-terminal, RFC 8020 §2: NODATA, not NXDOMAIN).
func (s *Server) exists(name string) bool {
	for _, rr := range s.records {
		o := dns.CanonicalName(rr.Header().Name)
		if o == name || strings.HasSuffix(o, "."+name) {
			return true
		}
	}
	return false
}
