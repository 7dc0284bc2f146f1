package route_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"

	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/internal/resolver"
	"github.com/tern-mail/tern/internal/testdns"
	"github.com/tern-mail/tern/mta/route"
)

// How tern-queue wires the resolver and the router: --dns (or
// /etc/resolv.conf), the control directory's hostname, --smtp-port.
func ExampleRouter_Targets() {
	dns, err := testdns.Listen("127.0.0.1") // a real host leaves Servers empty, or takes them from --dns
	if err != nil {
		log.Fatal(err)
	}
	defer dns.Close()
	dns.MX("example.org", 20, "mx2.example.org")
	dns.MX("example.org", 10, "mx1.example.org")
	dns.A("mx1.example.org", "192.0.2.1", "2001:db8::1")
	dns.A("mx2.example.org", "192.0.2.2")
	dns.NullMX("nomail.example")

	res, err := resolver.New(resolver.Config{Servers: []string{dns.Addr}})
	if err != nil {
		log.Fatal(err)
	}
	r := &route.Router{
		Resolver:  res,
		Hostname:  "mail.example.net",
		Port:      25,
		SelfAddrs: func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("198.51.100.7")}, nil },
	}
	ctx := context.Background()
	targets, err := r.Targets(ctx, "example.org", nil)
	fmt.Println(targets[0].Host, targets[0].Addrs, targets[0].Port, targets[1].Host, targets[1].Addrs, err)

	smarthost := &conf.Route{Domain: "*", Addr: netip.MustParseAddr("192.0.2.25"), Port: 587}
	targets, err = r.Targets(ctx, "example.com", smarthost)
	fmt.Println(targets[0].Addrs, targets[0].Port, err)

	_, err = r.Targets(ctx, "nomail.example", nil)
	e := err.(*route.Error)
	fmt.Println(e.Status, e.Temporary, e.Msg)
	// Output:
	// mx1.example.org [2001:db8::1 192.0.2.1] 25 mx2.example.org [192.0.2.2] <nil>
	// [192.0.2.25] 587 <nil>
	// 5.1.10 false nomail.example accepts no mail: it publishes a null MX (RFC 7505)
}
