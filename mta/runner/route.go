package runner

import (
	"errors"
	"net"
	"strconv"
	"strings"

	"github.com/tern-mail/tern/internal/address"
	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/mta/transport"
)

// localKey is the destination of every local delivery: this host, one
// destination under --destination-concurrency like any other, so that a
// flood of local mail leaves slots for remote mail and the other way
// round.
const localKey = "local"

// routed is where routing sends one recipient: a hop to hand it to, or an
// outcome decided without a transport (an unknown local user, a failed
// lookup), or an alias to expand.
type routed struct {
	hop     transport.Hop
	decided *transport.Result
	alias   *conf.Recipient
}

// routeOf decides where one recipient goes (issue #13 §0: route first, then
// hand a group to a transport). Alias targets that are commands or
// Maildirs, and accounts, are local; an address in a domain not delivered
// here goes over SMTP, to the routes file's host for its domain or else to
// its MX hosts.
func routeOf(c *conf.Conf, addr string) routed {
	if strings.HasPrefix(addr, "|") || strings.HasPrefix(addr, "/") {
		return routed{hop: transport.Hop{Kind: transport.Local, Key: localKey}}
	}
	rcpt, err := c.LookupUser(addr)
	switch {
	case errors.Is(err, conf.ErrNotLocal):
		return routed{hop: smtpHop(c, addr)}
	case errors.Is(err, conf.ErrNoUser):
		return routed{decided: &transport.Result{Status: "5.1.1", Answer: "no such user here", DiagType: "X-Unix"}}
	case err != nil:
		return routed{decided: &transport.Result{Status: "4.3.0", Temporary: true, Answer: err.Error(), DiagType: "X-Unix"}}
	case rcpt.Alias != nil:
		return routed{alias: rcpt}
	}
	return routed{hop: transport.Hop{Kind: transport.Local, Key: localKey}}
}

// smtpHop is the hop of a remote address. Every domain sent through one
// routes-file host shares that host's key, so a smarthost has one
// concurrency limit and one back-off, not one per domain.
func smtpHop(c *conf.Conf, addr string) transport.Hop {
	_, domain := address.Split(addr)
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	hop := transport.Hop{Kind: transport.SMTP, Domain: domain, Key: "smtp:" + domain}
	if rt, ok := c.Routes.Lookup(domain); ok {
		hop.Route = &rt
		host := rt.Host
		if host == "" {
			host = "[" + rt.Addr.String() + "]"
		}
		if rt.Port != 0 {
			host = net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(rt.Port))
		}
		hop.Key = "route:" + host
	}
	return hop
}

// hopKey is the destination key of a recipient, for the scheduler: which
// destination limits and back-offs an entry waits on. Aliases count as
// local until they are expanded.
func hopKey(c *conf.Conf, addr string) string {
	r := routeOf(c, addr)
	if r.decided != nil || r.alias != nil {
		return localKey
	}
	return r.hop.Key
}
