package serve

import (
	"github.com/urfave/cli/v2"
)

// Flags are the serving options every server program takes, documented
// once in tern-serve(7). Each can also be set in the environment as
// TERN_<FLAG>.
func Flags() []cli.Flag { return FlagsFor(Options{}) }

// FlagsFor is Flags with a server's own timeouts (o.Idle, o.Total) as the
// defaults its --help shows; the server gives FromCLI the same.
func FlagsFor(o Options) []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "listen", EnvVars: []string{"TERN_LISTEN"}, Usage: "listen on `ADDR` (host:port, or unix:PATH), repeatable; without it the connection is on fd 0 and 1"},
		&cli.BoolFlag{Name: "tls", EnvVars: []string{"TERN_TLS"}, Usage: "implicit TLS: every connection starts with a TLS handshake"},
		&cli.StringFlag{Name: "user", EnvVars: []string{"TERN_USER"}, Usage: "become system account `NAME` once the listeners are open"},
		&cli.BoolFlag{Name: "fork", EnvVars: []string{"TERN_FORK"}, Usage: "serve each connection in a process of its own (always, when root)"},
		&cli.IntFlag{Name: "max-connections", EnvVars: []string{"TERN_MAX_CONNECTIONS"}, Usage: "at most `N` connections at a time", Value: DefaultMaxConns},
		&cli.IntFlag{Name: "max-per-ip", EnvVars: []string{"TERN_MAX_PER_IP"}, Usage: "at most `N` connections at a time from one address", Value: DefaultMaxPerIP},
		&cli.DurationFlag{Name: "idle-timeout", EnvVars: []string{"TERN_IDLE_TIMEOUT"}, Value: o.Idle, Usage: "close a connection silent for `DURATION`; 0 for never"},
		&cli.DurationFlag{Name: "session-timeout", EnvVars: []string{"TERN_SESSION_TIMEOUT"}, Value: o.Total, Usage: "close any connection after `DURATION`; 0 for no limit"},
	}
}

// FromCLI returns o with the serving flags of c applied over it; a server
// sets its own protocol's timeouts in o first and flags given by the
// administrator win.
func FromCLI(c *cli.Context, o Options) Options {
	o.Listen = c.StringSlice("listen")
	o.ImplicitTLS = c.Bool("tls")
	o.User = c.String("user")
	o.Fork = c.Bool("fork")
	o.MaxConns = c.Int("max-connections")
	o.MaxPerIP = c.Int("max-per-ip")
	if c.IsSet("idle-timeout") {
		o.Idle = c.Duration("idle-timeout")
	}
	if c.IsSet("session-timeout") {
		o.Total = c.Duration("session-timeout")
	}
	return o
}
