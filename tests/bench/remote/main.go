// Command remote is the MX side of tests/bench/remote.sh: SMTP sinks on
// several loopback addresses, one port, that take every message and keep
// nothing but counts (connections opened, messages, octets, the time of
// the last message), written to a file every 50 ms so that the script can
// tell when a run is over and what it cost. With -dns it also serves the
// zone that makes those sinks the MX hosts of the bench's domains
// (d0.bench.example ... : MX 10 mx.dN.bench.example, A the Nth address).
//
// A sink of our own rather than Postfix's smtp-sink: smtp-sink counts
// messages but not connections, and the goal compares both.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/tern-mail/tern/internal/testdns"
)

type counts struct {
	conns, msgs, octets atomic.Int64
	last                atomic.Int64 // unix nanoseconds of the last message taken
}

type session struct{ c *counts }

func (s *session) Mail(string, *smtp.MailOptions) error { return nil }
func (s *session) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *session) Reset()                               {}
func (s *session) Logout() error                        { return nil }
func (s *session) Data(r io.Reader) error {
	n, err := io.Copy(io.Discard, r)
	if err != nil {
		return err
	}
	s.c.octets.Add(n)
	s.c.msgs.Add(1)
	s.c.last.Store(time.Now().UnixNano())
	return nil
}

func main() {
	ips := flag.String("ips", "", "comma-separated loopback `ADDRESSES` to listen on, one MX host each")
	port := flag.Int("port", 0, "the `PORT` every sink listens on")
	dnsHost := flag.String("dns", "", "serve the bench's zone on `ADDRESS` (a free port; printed as dns=ADDR:PORT)")
	stats := flag.String("stats", "", "write the counts to `FILE` every 50 ms")
	flag.Parse()
	if *ips == "" || *port == 0 || *stats == "" {
		fmt.Fprintln(os.Stderr, "usage: remote -ips A,B,... -port PORT -stats FILE [-dns 127.0.0.1]")
		os.Exit(64)
	}
	if err := run(strings.Split(*ips, ","), *port, *dnsHost, *stats); err != nil {
		fmt.Fprintln(os.Stderr, "remote:", err)
		os.Exit(1)
	}
}

func run(ips []string, port int, dnsHost, stats string) error {
	var c counts
	for _, ip := range ips {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
		if err != nil {
			return err
		}
		srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
			c.conns.Add(1)
			return &session{c: &c}, nil
		}))
		srv.Domain = "sink.bench.example"
		srv.ReadTimeout = time.Minute
		srv.WriteTimeout = time.Minute
		srv.MaxRecipients = 1000
		go srv.Serve(l)
	}
	if dnsHost != "" {
		d, err := testdns.Listen(dnsHost)
		if err != nil {
			return err
		}
		defer d.Close()
		for i, ip := range ips {
			domain := fmt.Sprintf("d%d.bench.example", i)
			d.MX(domain, 10, "mx."+domain)
			d.A("mx."+domain, ip)
		}
		fmt.Printf("dns=%s\n", d.Addr)
	}
	fmt.Println("ready")
	write := func() error {
		tmp := stats + ".tmp"
		text := fmt.Sprintf("%d %d %d %d\n", c.msgs.Load(), c.conns.Load(), c.octets.Load(), c.last.Load())
		if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
			return err
		}
		return os.Rename(tmp, stats)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return write()
		case <-tick.C:
			if err := write(); err != nil {
				return err
			}
		}
	}
}
