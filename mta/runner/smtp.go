package runner

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/internal/resolver"
	"github.com/tern-mail/tern/internal/sysexit"
	"github.com/tern-mail/tern/mta/remote"
	"github.com/tern-mail/tern/mta/route"
	"github.com/tern-mail/tern/mta/smtpclient"
	"github.com/tern-mail/tern/mta/transport"
)

// SMTPOptions are tern-queue's options for remote delivery.
type SMTPOptions struct {
	DNS  string // "ADDR:PORT" of the DNS server to ask (--dns); "" means /etc/resolv.conf's
	Port int    // where MX hosts are reached (--smtp-port); 0 means 25
	// Client holds the SMTP time limits of RFC 5321 §4.5.3.2; zero ones
	// take smtpclient's defaults.
	Client         smtpclient.Options
	ConnectTimeout time.Duration // one TCP connection; 0 means remote's default
	ReuseLimit     int           // messages one connection carries; 0 means remote's default
	IdleTimeout    time.Duration // how long an idle connection is kept; 0 means remote's default
}

// smtpTransport builds the SMTP transport from the runner's options and
// the resolver and dialer of its environment, for the control directory c.
func (r *Runner) smtpTransport(c *conf.Conf) (*remote.Transport, error) {
	res := r.env.Resolver
	if res == nil {
		cfg := resolver.Config{Now: r.env.Now}
		if r.o.SMTP.DNS != "" {
			server, err := resolver.ParseServer(r.o.SMTP.DNS)
			if err != nil {
				return nil, sysexit.Wrap(sysexit.Usage, err)
			}
			cfg.Servers = []string{server}
		}
		cl, err := resolver.New(cfg)
		if err != nil {
			return nil, sysexit.Wrap(sysexit.Config, err)
		}
		res = cl
	}
	// One router for the transport's life: it keeps the machine's
	// addresses for a while. A new hostname makes a new transport, and a
	// new router with it.
	rtr := &route.Router{Resolver: res, Hostname: c.Hostname, SelfAddrs: r.env.SelfAddrs, Port: r.o.SMTP.Port}
	return remote.New(remote.Options{
		Targets: rtr.Targets, Dial: r.env.Dial, Now: r.env.Now, Hostname: c.Hostname,
		Client: r.o.SMTP.Client, ConnectTimeout: r.o.SMTP.ConnectTimeout,
		MaxMessagesPerConn: r.o.SMTP.ReuseLimit, IdleTimeout: r.o.SMTP.IdleTimeout,
		// Room for a connection of every delivery that can run at once:
		// with fewer, a busy run closes connections it opens again
		// straight away.
		MaxIdle: max(remote.DefaultMaxIdle, r.o.Concurrency),
		Log:     r.log,
	}), nil
}

// reloadSMTP makes a new SMTP transport when the hostname it greets with
// changed, and lets the old one finish and close its connections.
func (r *Runner) reloadSMTP(old, c *conf.Conf) {
	if r.ownSMTP == nil || old.Hostname == c.Hostname {
		return
	}
	t, err := r.smtpTransport(c)
	if err != nil {
		r.log.Error("keeping the old SMTP transport", "err", err)
		return
	}
	r.confMu.Lock()
	prev := r.ownSMTP
	r.ownSMTP = t
	r.confMu.Unlock()
	go prev.Close()
}

// transport is the transport of kind k now.
func (r *Runner) transport(k transport.Kind) transport.Transport {
	r.confMu.Lock()
	defer r.confMu.Unlock()
	if k == transport.SMTP && r.ownSMTP != nil {
		return r.ownSMTP
	}
	return r.transports[k]
}

// Dial opens a network connection (net.Dialer's DialContext).
type Dial = func(ctx context.Context, network, addr string) (net.Conn, error)

// SelfAddrs lists this host's addresses, for loop detection.
type SelfAddrs = func() ([]netip.Addr, error)
