// tern-imapd serves IMAP (RFC 9051 and RFC 3501) over the Maildirs of
// the accounts in the users file (or a checkpassword program), one
// connection per process under inetd, tcpserver or systemd, from its own
// listener, or preauthenticated on stdin and stdout for ssh and local
// clients. See tern-imapd(8) and tern-serve(7).
package main

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/tern-mail/tern/imapd"
	"github.com/tern-mail/tern/internal/account"
	"github.com/tern-mail/tern/internal/auth"
	"github.com/tern-mail/tern/internal/command"
	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/internal/logging"
	"github.com/tern-mail/tern/internal/serve"
	"github.com/tern-mail/tern/internal/sysexit"
	"github.com/tern-mail/tern/internal/tlsconf"
	"github.com/urfave/cli/v2"
)

func main() {
	flags := append(serve.Flags(),
		&cli.StringFlag{Name: "conf", EnvVars: []string{"TERN_CONF"}, Value: conf.DefaultDir, Usage: "control `DIR` (hostname, users, tls.crt, tls.key)"},
		&cli.StringFlag{Name: "checkpassword", EnvVars: []string{"TERN_CHECKPASSWORD"}, Usage: "authenticate with the checkpassword `PROG` instead of the users file"},
		&cli.BoolFlag{Name: "insecure-auth", EnvVars: []string{"TERN_INSECURE_AUTH"}, Usage: "accept passwords on unencrypted connections from anywhere, not only loopback"},
		&cli.StringFlag{Name: "preauth", EnvVars: []string{"TERN_PREAUTH"}, Usage: "serve account `USER` on stdin and stdout without a login (ssh, local clients)"},
		&cli.StringFlag{Name: "maildir", EnvVars: []string{"TERN_MAILDIR"}, Usage: "with --preauth, serve the Maildir at `DIR` instead of the account's"},
		&cli.Uint64Flag{Name: "append-limit", EnvVars: []string{"TERN_APPEND_LIMIT"}, Value: imapd.DefaultAppendLimit, Usage: "take messages of at most `N` octets with APPEND"},
	)
	command.Main(&cli.App{
		Name:            "tern-imapd",
		Usage:           "IMAP server over Maildir",
		UsageText:       "tern-imapd [--conf DIR] [--listen ADDR]... [--tls] [--checkpassword PROG] [--insecure-auth]\n   tern-imapd --preauth USER [--maildir DIR]",
		HideHelpCommand: true,
		Flags:           flags,
		Action:          run,
	})
}

func run(c *cli.Context) error {
	if c.NArg() > 0 {
		return command.UsageError("unexpected argument %q", c.Args().First())
	}
	log := logging.New("tern-imapd", os.Stderr, nil)
	limit := c.Uint64("append-limit")
	if limit == 0 || limit > 1<<32-1 {
		return command.UsageError("--append-limit %d: between 1 and 4294967295 octets", limit)
	}
	preauth := c.String("preauth")
	if c.String("maildir") != "" && preauth == "" {
		return command.UsageError("--maildir is for --preauth")
	}
	if preauth != "" && len(c.StringSlice("listen")) > 0 {
		return command.UsageError("--preauth serves stdin and stdout: it takes no --listen")
	}
	cf, err := conf.Load(c.String("conf"))
	if err != nil && (preauth == "" || c.String("maildir") == "") {
		return err
	}
	var preauthed *auth.Account
	if preauth != "" {
		if preauthed, err = preauthAccount(cf, preauth, c.String("maildir")); err != nil {
			return err
		}
	}
	opts := serve.FromCLI(c, serve.Options{
		Log: log, Env: os.Environ(), Args: os.Args,
		// RFC 9051 §5.4: an idle client is logged out after no less
		// than 30 minutes; clients in IDLE stay for days.
		Idle: 31 * time.Minute, Total: 7 * 24 * time.Hour,
	})
	opts.Busy = func(nc net.Conn) { io.WriteString(nc, "* BYE [UNAVAILABLE] too many connections, try again later\r\n") }
	var authn auth.Authenticator
	hostname := "localhost"
	if cf != nil {
		hostname = cf.Hostname
		if opts.TLS, err = tlsconf.ServerConfig(cf.Dir, log); err != nil {
			return err
		}
		authn = auth.ForServer(c.String("checkpassword"), cf.UsersPath(), log)
	}
	insecure := c.Bool("insecure-auth")
	accounts := imapd.Accounts{Authenticator: authn, Open: account.Open}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return serve.Run(ctx, opts, func(ctx context.Context, conn *serve.Conn) error {
		cfg := imapd.Config{
			Greeting:     hostname + " tern IMAP ready cid=" + conn.ID,
			Log:          conn.Log,
			Remote:       conn.Remote.Addr(),
			IsTLS:        conn.IsTLS,
			InsecureAuth: insecure,
			AppendLimit:  uint32(limit),
			NewSession: func(st *imapd.ConnState) (imapserver.Session, bool, error) {
				accounts := accounts
				accounts.Authenticator = serve.TrustOnLogin(accounts.Authenticator, conn)
				if preauthed != nil {
					conn.Trust()
				}
				s, err := imapd.NewSession(ctx, st, accounts, preauthed)
				return s, preauthed != nil, err
			},
		}
		if opts.TLS != nil {
			cfg.TLS = opts.TLS
			cfg.StartTLS = func() error { return conn.StartTLS(opts.TLS) }
		}
		return imapd.Serve(ctx, conn, cfg)
	})
}

// preauthAccount is the account --preauth serves: from the users file,
// or, with --maildir, the Maildir given, served as its owner (the owner
// of the directory it is to be made in, when it is not there yet).
func preauthAccount(cf *conf.Conf, user, dir string) (*auth.Account, error) {
	if dir != "" {
		a := &auth.Account{Name: user, UID: -1, GID: -1, Maildir: dir}
		if os.Geteuid() == 0 {
			st, err := os.Stat(dir)
			if errors.Is(err, fs.ErrNotExist) {
				st, err = os.Stat(filepath.Dir(filepath.Clean(dir)))
			}
			if err != nil {
				return nil, sysexit.Wrap(sysexit.NoInput, err)
			}
			if sys, ok := st.Sys().(*syscall.Stat_t); ok {
				a.UID, a.GID = int(sys.Uid), int(sys.Gid)
			}
		}
		return a, nil
	}
	users, err := auth.LoadUsers(cf.UsersPath())
	if err != nil {
		return nil, sysexit.Wrap(sysexit.Config, err)
	}
	e, ok := users.Lookup(user)
	if !ok {
		return nil, sysexit.New(sysexit.NoUser, "no account %q in %s", user, cf.UsersPath())
	}
	return e.Account(), nil
}
