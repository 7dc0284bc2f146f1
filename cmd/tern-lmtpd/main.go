// tern-lmtpd is tern's LMTP server (RFC 2033), what `tern-deliver --lmtp`
// runs: local delivery for a stream of messages, with an answer per
// recipient, for Postfix's lmtp(8), Exim's LMTP transport and tern-queue.
// It takes its connection on fd 0 and 1 (a pipe, inetd, systemd
// Accept=yes) or listens (--listen unix:PATH or ADDR, LISTEN_FDS), through
// the same serving layer as the other servers. See tern-lmtpd(8).
//
// It is a program of its own, rather than a mode inside tern-deliver,
// because tern-deliver is started once per message: the LMTP server links
// go-smtp, crypto/tls and the control directory's parsers, whose package
// initialisation every per-message delivery would pay (tests/bench/deliver.sh
// with BASE= a revision that links them shows what).
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/tern-mail/tern/internal/command"
	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/internal/logging"
	"github.com/tern-mail/tern/internal/serve"
	"github.com/tern-mail/tern/internal/tlsconf"
	"github.com/tern-mail/tern/mda/lmtp"
	"github.com/urfave/cli/v2"
)

func main() {
	flags := append(serve.FlagsFor(serve.Options{Idle: lmtp.Idle}),
		&cli.StringFlag{Name: "conf", EnvVars: []string{"TERN_CONF"}, Value: conf.DefaultDir, Usage: "control `DIR` (hostname, domains, users, aliases)"},
		&cli.Int64Flag{Name: "max-size", EnvVars: []string{"TERN_MAX_SIZE"}, Value: lmtp.DefaultMaxSize, Usage: "refuse messages over `BYTES`"},
		&cli.IntFlag{Name: "max-recipients", EnvVars: []string{"TERN_MAX_RECIPIENTS"}, Value: lmtp.DefaultMaxRecipients, Usage: "accept at most `N` recipients a message"},
		&cli.BoolFlag{Name: "quota-hard", EnvVars: []string{"TERN_QUOTA_HARD"}, Usage: "refuse an over-quota recipient for good (552 5.2.2) instead of for now (452 4.2.2)"},
		&cli.StringFlag{Name: "socket-mode", EnvVars: []string{"TERN_SOCKET_MODE"}, Value: "0600", Usage: "permissions, in octal, of the unix sockets --listen makes: who may connect"},
	)
	command.Main(&cli.App{
		Name:            "tern-lmtpd",
		Usage:           "LMTP server: local delivery into the accounts' Maildirs, an answer per recipient",
		UsageText:       "tern-lmtpd [--conf DIR] [--listen unix:PATH|ADDR]... [--user NAME] [--max-size BYTES] [--quota-hard]\n   tern-deliver --lmtp [the same options]",
		HideHelpCommand: true,
		Flags:           flags,
		Action:          run,
	})
}

func run(c *cli.Context) error {
	if c.NArg() > 0 {
		return command.UsageError("unexpected argument %q", c.Args().First())
	}
	mode, err := strconv.ParseUint(c.String("socket-mode"), 8, 32)
	if err != nil || mode > 0o777 {
		return command.UsageError("--socket-mode %q: want permissions in octal, such as 0660", c.String("socket-mode"))
	}
	log := logging.New("tern-lmtpd", os.Stderr, nil)
	// A listener lives for months: it reads the control directory again
	// when a file in it changes (an account added, an alias).
	watch, err := conf.Watch(c.String("conf"), conf.Loader{Hostname: os.Hostname}, log)
	if err != nil {
		return err
	}
	opts := serve.FromCLI(c, serve.Options{Log: log, Env: os.Environ(), Args: os.Args, Idle: lmtp.Idle})
	opts.SocketMode = os.FileMode(mode)
	// --tls makes a listener implicit TLS with the control directory's
	// certificate; STARTTLS is not offered (an LMTP client is local).
	if opts.TLS, err = tlsconf.ServerConfig(watch.Current().Dir, log); err != nil {
		return err
	}
	// Deliveries as root act as each account on a thread of their own,
	// so one process serves every connection and they share flushes.
	opts.StayRoot = true
	host := watch.Current().Hostname
	opts.Busy = func(nc net.Conn) {
		io.WriteString(nc, "421 4.3.2 "+host+" too many connections, try again later\r\n")
	}
	srv := &lmtp.Server{
		Conf:          watch.Current,
		MaxSize:       c.Int64("max-size"),
		MaxRecipients: c.Int("max-recipients"),
		QuotaHard:     c.Bool("quota-hard"),
		Enqueue:       enqueuePath(),
		Env:           forwardEnv(c.String("conf")),
		Euid:          -1,
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return serve.Run(ctx, opts, func(ctx context.Context, conn *serve.Conn) error {
		return srv.Serve(ctx, conn, conn.ID, conn.Log)
	})
}

// enqueuePath is tern-enqueue, for the addresses of ~/.forward: from
// TERN_ENQUEUE_PATH, or beside this program.
func enqueuePath() string {
	if p := os.Getenv("TERN_ENQUEUE_PATH"); p != "" {
		return p
	}
	self, _ := os.Executable()
	return filepath.Join(filepath.Dir(self), "tern-enqueue")
}

// forwardEnv is the environment ~/.forward's commands start from: ours,
// without what describes this server's sockets, with tern's programs
// first on PATH (a filter calls tern-deliver by name) and the control
// directory named.
func forwardEnv(confDir string) []string {
	self, _ := os.Executable()
	var env []string
	for _, e := range os.Environ() {
		k, _, _ := strings.Cut(e, "=")
		switch k {
		case "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "TERN_ACCEPTED", "TERN_LISTEN", "PATH", "TERN_CONF":
			continue
		}
		env = append(env, e)
	}
	return append(env, "PATH="+filepath.Dir(self)+":/usr/local/bin:/usr/bin:/bin", fmt.Sprintf("TERN_CONF=%s", confDir))
}
