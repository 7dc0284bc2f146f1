// tern-smtpd receives mail over SMTP, one connection at a time per process
// under inetd, tcpserver or systemd, or from its own listener, and hands
// each message to the queue — with tern-enqueue's code in this process, or
// through a pipe to --enqueue PROG — answering 250 only once the message is
// queued. See tern-smtpd(8) and tern-serve(7).
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
	"github.com/tern-mail/tern/mta/queue"
	"github.com/tern-mail/tern/mta/smtpd"
	"github.com/urfave/cli/v2"
)

// preparedEntries is how many queue entries a tern-smtpd serving every
// connection itself keeps made ahead: enough for the messages of 32
// sessions ending at once; more are made as they are used.
const preparedEntries = 32

func main() {
	flags := append(serve.FlagsFor(serve.Options{Idle: smtpd.Idle}),
		&cli.StringFlag{Name: "conf", EnvVars: []string{"TERN_CONF"}, Value: conf.DefaultDir, Usage: "control `DIR` (hostname, domains, users, aliases, relay, tls.crt, tls.key)"},
		&cli.StringFlag{Name: "mode", EnvVars: []string{"TERN_MODE"}, Value: "mx", Usage: "`MODE`: mx (port 25) or submission (587, 465 with --tls)"},
		&cli.StringFlag{Name: "queue", EnvVars: []string{"TERN_QUEUE"}, Value: queue.DefaultDir, Usage: "queue `DIR` (when no --enqueue program is named)"},
		&cli.StringFlag{Name: "enqueue", EnvVars: []string{"TERN_ENQUEUE"}, Usage: "pipe each message to `PROG` with tern-enqueue's interface (a filter), instead of queueing it in this process"},
		&cli.Int64Flag{Name: "max-size", EnvVars: []string{"TERN_MAX_SIZE"}, Value: smtpd.DefaultMaxSize, Usage: "refuse messages over `BYTES`"},
		&cli.IntFlag{Name: "max-recipients", EnvVars: []string{"TERN_MAX_RECIPIENTS"}, Value: smtpd.DefaultMaxRecipients, Usage: "accept at most `N` recipients a message"},
		&cli.IntFlag{Name: "max-errors", EnvVars: []string{"TERN_MAX_ERRORS"}, Value: smtpd.DefaultMaxErrors, Usage: "close the connection after `N` error replies"},
		&cli.DurationFlag{Name: "greet-delay", EnvVars: []string{"TERN_GREET_DELAY"}, DefaultText: "1s in mx mode, 0 in submission", Usage: "wait `DURATION` before the greeting and refuse clients that talk first"},
		&cli.StringFlag{Name: "checkpassword", EnvVars: []string{"TERN_CHECKPASSWORD"}, Usage: "authenticate with the checkpassword `PROG` instead of the users file"},
		&cli.BoolFlag{Name: "insecure-auth", EnvVars: []string{"TERN_INSECURE_AUTH"}, Usage: "offer AUTH without TLS to anyone (behind a TLS wrapper on pipes)"},
		&cli.BoolFlag{Name: "rdns", EnvVars: []string{"TERN_RDNS"}, Value: true, Usage: "look up the client's name for the Received line"},
	)
	command.Main(&cli.App{
		Name:            "tern-smtpd",
		Usage:           "SMTP receiver: MX and submission",
		UsageText:       "tern-smtpd [--conf DIR] [--mode mx|submission] [--listen ADDR]... [--tls] [--enqueue PROG] [--max-size BYTES] ...",
		HideHelpCommand: true,
		Flags:           flags,
		Action:          run,
	})
}

func run(c *cli.Context) error {
	if c.NArg() > 0 {
		return command.UsageError("unexpected argument %q", c.Args().First())
	}
	mode, err := smtpd.ParseMode(c.String("mode"))
	if err != nil {
		return command.UsageError("--mode: %v", err)
	}
	log := logging.New("tern-smtpd", os.Stderr, nil)
	// A --listen server lives for months: it reads the control directory
	// again when a file in it changes (a user added, an alias).
	watch, err := conf.Watch(c.String("conf"), conf.Loader{Hostname: os.Hostname}, log)
	if err != nil {
		return err
	}
	cf := watch.Current()
	opts := serve.FromCLI(c, serve.Options{Log: log, Env: os.Environ(), Args: os.Args, Idle: smtpd.Idle})
	host := cf.Hostname
	opts.Busy = func(nc net.Conn) {
		io.WriteString(nc, "421 4.7.0 "+host+" too many connections, try again later\r\n")
	}
	if opts.TLS, err = tlsconf.ServerConfig(cf.Dir, log); err != nil {
		return err
	}
	authn := auth.ForServer(c.String("checkpassword"), cf.UsersPath(), log)

	var enq smtpd.Enqueuer = &smtpd.Pipe{Command: c.String("enqueue"), Env: os.Environ()}
	if c.String("enqueue") == "" {
		d := &smtpd.Direct{Queue: c.String("queue"), Now: time.Now, Host: func() string { return watch.Current().Hostname }}
		if err := d.Open(); err != nil {
			log.Warn("queue not open; each message tries again", "err", err)
		}
		enq = d
		// One process for every connection: messages go into entries
		// made ahead (one flush each instead of two; tern-queue(5)).
		opts.Shared = func() {
			if err := d.KeepReady(preparedEntries); err != nil {
				log.Warn("queue not open; each message tries again", "err", err)
			}
		}
		defer d.Close()
	}
	_, relayClient := os.LookupEnv("RELAYCLIENT")
	cfg := &smtpd.Config{
		Mode:          mode,
		Conf:          cf,
		Control:       watch.Current,
		Auth:          authn,
		Enqueue:       enq,
		MaxSize:       c.Int64("max-size"),
		MaxRecipients: c.Int("max-recipients"),
		MaxErrors:     c.Int("max-errors"),
		GreetDelay:    c.Duration("greet-delay"),
		InsecureAuth:  c.Bool("insecure-auth"),
		RelayClient:   relayClient,
	}
	if !c.IsSet("greet-delay") && mode == smtpd.MX {
		cfg.GreetDelay = smtpd.DefaultGreetDelay
	}
	if c.Bool("rdns") {
		cfg.LookupAddr = net.DefaultResolver.LookupAddr
		cfg.LookupHost = net.DefaultResolver.LookupHost
	}
	// STARTTLS is ours to offer; with --tls every connection is TLS from
	// its first byte, and STARTTLS is not offered again.
	if !opts.ImplicitTLS {
		cfg.TLS = opts.TLS
	}
	if os.Geteuid() == 0 && opts.User == "" {
		// Unlike a POP3 session, an SMTP session has no account to become:
		// it would run as root from start to end.
		log.Warn("serving SMTP as root; give --user (an account such as tern) to drop root once the port is bound and the queue is open")
	}
	if mode == smtpd.Submission && opts.TLS == nil && !cfg.InsecureAuth {
		log.Warn("submission without tls.crt: only loopback clients can log in")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return serve.Run(ctx, opts, func(ctx context.Context, conn *serve.Conn) error {
		return cfg.Serve(ctx, conn, smtpd.Peer{
			ID:     conn.ID,
			Remote: conn.Remote,
			Host:   remoteHost(opts.Env, opts.Listen),
			Log:    conn.Log,
		})
	})
}

// remoteHost is tcpserver's lookup of the client's name, when the
// connection came that way (not from our own listener, whose environment
// says nothing of any one client).
func remoteHost(env, listen []string) string {
	if len(listen) > 0 {
		return ""
	}
	for _, e := range env {
		if v, ok := cutPrefix(e, "TCPREMOTEHOST="); ok {
			return v
		}
	}
	return ""
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return "", false
}
