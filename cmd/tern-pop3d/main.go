// tern-pop3d serves POP3 over the Maildirs of the accounts in the users
// file (or a checkpassword program), one connection at a time per process
// under inetd, tcpserver or systemd, or from its own listener. See
// tern-pop3d(8) and tern-serve(7).
package main

import (
	"context"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tern-mail/tern/internal/auth"
	"github.com/tern-mail/tern/internal/command"
	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/internal/logging"
	"github.com/tern-mail/tern/internal/serve"
	"github.com/tern-mail/tern/internal/tlsconf"
	"github.com/tern-mail/tern/pop3d"
	"github.com/urfave/cli/v2"
)

// The timeouts tern-pop3d(8) promises: a silent client keeps its session
// for 10 minutes, the least RFC 1939 §3 allows an autologout timer, and
// no session outlives an hour.
var timeouts = serve.Options{Idle: 10 * time.Minute, Total: time.Hour}

func main() {
	flags := append(serve.FlagsFor(timeouts),
		&cli.StringFlag{Name: "conf", EnvVars: []string{"TERN_CONF"}, Value: conf.DefaultDir, Usage: "control `DIR` (hostname, users, tls.crt, tls.key)"},
		&cli.StringFlag{Name: "checkpassword", EnvVars: []string{"TERN_CHECKPASSWORD"}, Usage: "authenticate with the checkpassword `PROG` instead of the users file"},
		&cli.BoolFlag{Name: "insecure-auth", EnvVars: []string{"TERN_INSECURE_AUTH"}, Usage: "accept passwords on unencrypted connections from anywhere, not only loopback"},
	)
	command.Main(&cli.App{
		Name:            "tern-pop3d",
		Usage:           "POP3 server over Maildir",
		UsageText:       "tern-pop3d [--conf DIR] [--listen ADDR]... [--tls] [--checkpassword PROG] [--insecure-auth]",
		HideHelpCommand: true,
		Flags:           flags,
		Action:          run,
	})
}

func run(c *cli.Context) error {
	if c.NArg() > 0 {
		return command.UsageError("unexpected argument %q", c.Args().First())
	}
	log := logging.New("tern-pop3d", os.Stderr, nil)
	cf, err := conf.Load(c.String("conf"))
	if err != nil {
		return err
	}
	opts := serve.FromCLI(c, serve.Options{Log: log, Env: os.Environ(), Args: os.Args, Idle: timeouts.Idle, Total: timeouts.Total})
	// A session holds the names and sizes of its maildrop, which grow with
	// it; the limit keeps the whole process within tests/bench/pop3.sh's
	// memory goal at its largest maildrop.
	opts.SessionMemory = 32 << 20
	opts.Busy = func(nc net.Conn) { io.WriteString(nc, "-ERR [SYS/TEMP] too many connections, try again later\r\n") }
	if opts.TLS, err = tlsconf.ServerConfig(cf.Dir, log); err != nil {
		return err
	}
	authn := auth.ForServer(c.String("checkpassword"), cf.UsersPath(), log)
	insecure := c.Bool("insecure-auth")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return serve.Run(ctx, opts, func(ctx context.Context, conn *serve.Conn) error {
		cfg := pop3d.Config{
			Auth:      &pop3d.Backend{Authenticator: serve.TrustOnLogin(authn, conn), Remote: conn.Remote.Addr()},
			Greeting:  cf.Hostname + " tern POP3 ready cid=" + conn.ID,
			Log:       conn.Log,
			TLSActive: conn.IsTLS,
			Secure: func() bool {
				return conn.IsTLS() || insecure || conn.Remote.Addr().Unmap().IsLoopback()
			},
		}
		if opts.TLS != nil {
			cfg.StartTLS = func() (io.Reader, io.Writer, error) {
				if err := conn.StartTLS(opts.TLS); err != nil {
					return nil, nil, err
				}
				return conn, conn, nil
			}
		}
		return pop3d.Serve(ctx, conn, cfg)
	})
}
