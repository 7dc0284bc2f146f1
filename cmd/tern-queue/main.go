// tern-queue is the queue runner: it takes submissions in, routes each
// recipient, delivers local ones through tern-deliver as their account and
// remote ones over SMTP, retries, and bounces; and it lists and edits the
// queue for the administrator.
package main

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tern-mail/tern/internal/command"
	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/internal/logging"
	"github.com/tern-mail/tern/mta/queue"
	"github.com/tern-mail/tern/mta/remote"
	"github.com/tern-mail/tern/mta/runner"
	"github.com/tern-mail/tern/mta/smtpclient"
	"github.com/urfave/cli/v2"
)

func main() {
	command.Main(&cli.App{
		Name:            "tern-queue",
		Usage:           "deliver the queue: local mail through tern-deliver, remote mail over SMTP, retries, bounces",
		UsageText:       "tern-queue [--once] [--flush] [options]\ntern-queue --list [--json] | --flush | --delete ID | --hold ID | --release ID",
		Description:     "Without --once it runs as a daemon. See tern-queue(8) and tern-queue(5).",
		HideHelpCommand: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "queue", EnvVars: []string{"TERN_QUEUE"}, Value: queue.DefaultDir, Usage: "queue `DIR`"},
			&cli.StringFlag{Name: "conf", EnvVars: []string{"TERN_CONF"}, Value: conf.DefaultDir, Usage: "control `DIR`"},
			&cli.StringFlag{Name: "deliver", EnvVars: []string{"TERN_DELIVER"}, Usage: "tern-deliver's `PATH` (default: beside tern-queue)"},
			// Not TERN_ENQUEUE: that is tern-smtpd's filter (issue #19).
			&cli.StringFlag{Name: "enqueue", EnvVars: []string{runner.EnqueuePathEnv}, Usage: "tern-enqueue's `PATH`, for .forward (default: beside tern-queue)"},
			&cli.StringFlag{Name: "local-delivery", EnvVars: []string{"TERN_LOCAL_DELIVERY"}, Value: "lmtp", Usage: "hand an account's mail to a deliverer kept per uid (`lmtp`: tern-deliver --lmtp) or run tern-deliver per recipient (exec)"},
			&cli.BoolFlag{Name: "once", EnvVars: []string{"TERN_ONCE"}, Usage: "deliver what is due, then exit (for cron)"},
			&cli.IntFlag{Name: "concurrency", EnvVars: []string{"TERN_CONCURRENCY"}, Value: 100, Usage: "at most `N` messages in delivery at once"},
			&cli.IntFlag{Name: "destination-concurrency", EnvVars: []string{"TERN_DESTINATION_CONCURRENCY"}, Value: 20, Usage: "at most `N` deliveries at once to one destination (a domain's MX hosts, a routes-file host, or local delivery)"},
			&cli.DurationFlag{Name: "max-age", EnvVars: []string{"TERN_MAX_AGE"}, Value: 5 * 24 * time.Hour, Usage: "bounce what is still deferred after `DURATION`"},
			&cli.DurationFlag{Name: "warn-after", EnvVars: []string{"TERN_WARN_AFTER"}, Value: 4 * time.Hour, Usage: "send one delay warning after `DURATION`"},
			&cli.DurationFlag{Name: "scan-interval", EnvVars: []string{"TERN_SCAN_INTERVAL"}, Value: time.Minute, Usage: "scan the queue every `DURATION` besides inotify"},
			&cli.DurationFlag{Name: "timeout", EnvVars: []string{"TERN_TIMEOUT"}, Value: time.Hour, Usage: "kill a delivery after `DURATION` and try again later"},
			&cli.StringFlag{Name: "dns", EnvVars: []string{"TERN_DNS"}, Usage: "ask the DNS server at `ADDR:PORT` (default: /etc/resolv.conf's)"},
			&cli.IntFlag{Name: "smtp-port", EnvVars: []string{"TERN_SMTP_PORT"}, Value: 25, Usage: "reach MX hosts, and routes without a port, on `PORT`"},
			&cli.DurationFlag{Name: "smtp-connect-timeout", EnvVars: []string{"TERN_SMTP_CONNECT_TIMEOUT"}, Value: remote.DefaultConnectTimeout, Usage: "give up a TCP connection to one address after `DURATION`"},
			&cli.DurationFlag{Name: "smtp-greeting-timeout", EnvVars: []string{"TERN_SMTP_GREETING_TIMEOUT"}, Value: smtpclient.DefaultGreetingTimeout, Usage: "wait `DURATION` for the 220 greeting"},
			&cli.DurationFlag{Name: "smtp-helo-timeout", EnvVars: []string{"TERN_SMTP_HELO_TIMEOUT"}, Value: smtpclient.DefaultEHLOTimeout, Usage: "wait `DURATION` for the answer to EHLO or HELO"},
			&cli.DurationFlag{Name: "smtp-mail-timeout", EnvVars: []string{"TERN_SMTP_MAIL_TIMEOUT"}, Value: smtpclient.DefaultMailTimeout, Usage: "wait `DURATION` for the answer to MAIL"},
			&cli.DurationFlag{Name: "smtp-rcpt-timeout", EnvVars: []string{"TERN_SMTP_RCPT_TIMEOUT"}, Value: smtpclient.DefaultRcptTimeout, Usage: "wait `DURATION` for the answer to each RCPT"},
			&cli.DurationFlag{Name: "smtp-data-init-timeout", EnvVars: []string{"TERN_SMTP_DATA_INIT_TIMEOUT"}, Value: smtpclient.DefaultDataInitTimeout, Usage: "wait `DURATION` for the 354 after DATA"},
			&cli.DurationFlag{Name: "smtp-data-block-timeout", EnvVars: []string{"TERN_SMTP_DATA_BLOCK_TIMEOUT"}, Value: smtpclient.DefaultDataBlockTimeout, Usage: "allow `DURATION` for each block of the message written"},
			&cli.DurationFlag{Name: "smtp-data-done-timeout", EnvVars: []string{"TERN_SMTP_DATA_DONE_TIMEOUT"}, Value: smtpclient.DefaultDataEndTimeout, Usage: "wait `DURATION` for the answer to the final dot"},
			&cli.DurationFlag{Name: "smtp-command-timeout", EnvVars: []string{"TERN_SMTP_COMMAND_TIMEOUT"}, Value: smtpclient.DefaultCommandTimeout, Usage: "wait `DURATION` for STARTTLS with its handshake, AUTH, RSET and QUIT"},
			&cli.IntFlag{Name: "smtp-reuse-limit", EnvVars: []string{"TERN_SMTP_REUSE_LIMIT"}, Value: remote.DefaultMaxMessagesPerConn, Usage: "send at most `N` messages over one connection"},
			&cli.DurationFlag{Name: "smtp-idle-timeout", EnvVars: []string{"TERN_SMTP_IDLE_TIMEOUT"}, Value: remote.DefaultIdleTimeout, Usage: "keep a connection `DURATION` for the next message to the same host"},
			&cli.BoolFlag{Name: "list", EnvVars: []string{"TERN_LIST"}, Usage: "list the queue"},
			&cli.BoolFlag{Name: "json", EnvVars: []string{"TERN_JSON"}, Usage: "with --list: JSON"},
			&cli.BoolFlag{Name: "flush", EnvVars: []string{"TERN_FLUSH"}, Usage: "retry every deferred recipient now (alone: tell the running tern-queue)"},
			&cli.StringFlag{Name: "delete", EnvVars: []string{"TERN_DELETE"}, Usage: "remove entry `ID` without a bounce"},
			&cli.StringFlag{Name: "hold", EnvVars: []string{"TERN_HOLD"}, Usage: "keep entry `ID` from delivery"},
			&cli.StringFlag{Name: "release", EnvVars: []string{"TERN_RELEASE"}, Usage: "release held entry `ID` and try it now"},
			// For tests: the time tern-queue believes it is (tern-queue(8), ENVIRONMENT).
			&cli.StringFlag{Name: "now", EnvVars: []string{"TERN_NOW"}, Hidden: true},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return command.UsageError("unexpected argument %q", c.Args().First())
			}
			dir := c.String("queue")
			off, err := runner.ParseNow(c.String("now"), time.Now())
			if err != nil {
				return err
			}
			now := func() time.Time { return time.Now().Add(off) }
			switch {
			case c.Bool("list"):
				return queue.List(dir, os.Stdout, c.Bool("json"), now())
			case c.Bool("flush") && !c.Bool("once"):
				return queue.Flush(dir)
			}
			for _, op := range []struct {
				flag string
				do   func(*queue.Queue, string) error
			}{{"delete", (*queue.Queue).Delete}, {"hold", (*queue.Queue).Hold}, {"release", (*queue.Queue).Release}} {
				if !c.IsSet(op.flag) {
					continue
				}
				q, err := queue.Open(dir)
				if err != nil {
					return err
				}
				return op.do(q, c.String(op.flag))
			}
			var lmtp bool
			switch c.String("local-delivery") {
			case "lmtp":
				lmtp = true
			case "exec":
			default:
				return command.UsageError("--local-delivery %q: want lmtp or exec", c.String("local-delivery"))
			}
			self, _ := os.Executable()
			beside := func(flag, prog string) string {
				if p := c.String(flag); p != "" {
					return p
				}
				return filepath.Join(filepath.Dir(self), prog)
			}
			log := logging.New("tern-queue", os.Stderr, nil)
			if v := os.Getenv("TERN_ENQUEUE"); v != "" {
				// Said, not silently ignored: a shared environment file
				// may have meant it for tern-smtpd.
				log.Warn("TERN_ENQUEUE is tern-smtpd's filter and is not read here; tern-enqueue's path is --enqueue or "+runner.EnqueuePathEnv, "TERN_ENQUEUE", v)
			}
			sigs := make(chan os.Signal, 4)
			signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
			r, err := runner.New(runner.Options{
				Queue: dir, Conf: c.String("conf"),
				Deliver: beside("deliver", "tern-deliver"), Enqueue: beside("enqueue", "tern-enqueue"),
				Concurrency: c.Int("concurrency"), DestinationConcurrency: c.Int("destination-concurrency"), MaxAge: c.Duration("max-age"), WarnAfter: c.Duration("warn-after"),
				ScanInterval: c.Duration("scan-interval"), Timeout: c.Duration("timeout"),
				Once: c.Bool("once"), Flush: c.Bool("flush"), LMTP: lmtp,
				SMTP: runner.SMTPOptions{
					DNS: c.String("dns"), Port: c.Int("smtp-port"),
					ConnectTimeout: c.Duration("smtp-connect-timeout"),
					ReuseLimit:     c.Int("smtp-reuse-limit"), IdleTimeout: c.Duration("smtp-idle-timeout"),
					Client: smtpclient.Options{
						GreetingTimeout: c.Duration("smtp-greeting-timeout"), EHLOTimeout: c.Duration("smtp-helo-timeout"),
						MailTimeout: c.Duration("smtp-mail-timeout"), RcptTimeout: c.Duration("smtp-rcpt-timeout"),
						DataInitTimeout: c.Duration("smtp-data-init-timeout"), DataBlockTimeout: c.Duration("smtp-data-block-timeout"),
						DataEndTimeout: c.Duration("smtp-data-done-timeout"), CommandTimeout: c.Duration("smtp-command-timeout"),
					},
				},
			}, runner.Env{Log: log, Now: now, Signals: sigs, Euid: os.Geteuid()})
			if err != nil {
				return err
			}
			return r.Run(context.Background())
		},
	})
}
