// tern-enqueue puts one message into the queue: the message on stdin, the
// envelope in the arguments, the verdict in the exit status. Installed as
// sendmail and mailq it speaks their command lines (argv[0] decides).
package main

import (
	"fmt"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/tern-mail/tern/internal/command"
	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/internal/sysexit"
	"github.com/tern-mail/tern/mta/enqueue"
	"github.com/tern-mail/tern/mta/queue"
	"github.com/tern-mail/tern/mta/transport"
	"github.com/urfave/cli/v2"
)

func main() {
	mode := enqueue.ModeOf(os.Args[0])
	name, job := "tern-enqueue", "put one message from standard input into the queue"
	usage := "tern-enqueue [-f SENDER] [-t] [-i] [-F NAME] [-v] [-N NOTIFY] [-R RET] [-V ENVID] [--smtputf8] [--body TYPE] [--requiretls] [--] [RECIPIENT...] < message"
	if mode == enqueue.ModeSendmail {
		name = "sendmail"
		usage = "sendmail [-t] [-i | -oi] [-f SENDER] [-F NAME] [-v] [-bm | -bp | -bi | -q] [--] [RECIPIENT...] < message\n" +
			"(tern-enqueue under sendmail's name; its options map to the flags below)"
	} else if mode == enqueue.ModeMailq {
		name, job = "mailq", "list the mail queue"
		usage = "mailq   (tern-enqueue --list: the queue, as tern-queue --list shows it)"
	}
	args := os.Args
	if mode != enqueue.ModeEnqueue {
		out, notes, err := enqueue.SendmailArgs(mode, os.Args[1:])
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: fatal: %v\n", name, err)
			os.Exit(64)
		}
		for _, n := range notes {
			fmt.Fprintf(os.Stderr, "%s: note: %s\n", name, n)
		}
		args = append([]string{name}, out...)
	}
	app := &cli.App{
		Name:            name,
		Usage:           job,
		UsageText:       usage,
		Description:     "Exit 0: queued and on disk; 75: try again later; 64/65: refused. See tern-enqueue(8).",
		HideHelpCommand: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "from", Aliases: []string{"f"}, EnvVars: []string{"TERN_FROM"}, Usage: "envelope `SENDER`; '' or '<>' for the null sender"},
			&cli.BoolFlag{Name: "read-recipients", Aliases: []string{"t"}, EnvVars: []string{"TERN_READ_RECIPIENTS"}, Usage: "take recipients from To, Cc and Bcc, and remove Bcc"},
			&cli.BoolFlag{Name: "ignore-dots", Aliases: []string{"i"}, EnvVars: []string{"TERN_IGNORE_DOTS"}, Usage: "a line with a single dot is data, not the end of the message (overrides --dot; sendmail's -i)"},
			&cli.BoolFlag{Name: "dot", EnvVars: []string{"TERN_DOT"}, Usage: "a line with a single dot ends the message (sendmail without -i)"},
			&cli.StringFlag{Name: "full-name", Aliases: []string{"F"}, EnvVars: []string{"TERN_FULL_NAME"}, Usage: "the sender's `NAME` in an added From field"},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, EnvVars: []string{"TERN_VERBOSE"}, Usage: "print qid=ID on standard output once queued"},
			&cli.StringFlag{Name: "notify", Aliases: []string{"N"}, EnvVars: []string{"TERN_NOTIFY"}, Usage: "DSN `NOTIFY` for every recipient without its own: never, or a comma list of success, failure, delay (RFC 3461)"},
			&cli.StringFlag{Name: "ret", Aliases: []string{"R"}, EnvVars: []string{"TERN_RET"}, Usage: "what a bounce returns, `RET`: full (the message) or hdrs (its header) (RFC 3461)"},
			&cli.StringFlag{Name: "envid", Aliases: []string{"V"}, EnvVars: []string{"TERN_ENVID"}, Usage: "envelope `ID` that DSNs quote back, up to 100 printable ASCII characters (RFC 3461)"},
			&cli.BoolFlag{Name: "smtputf8", EnvVars: []string{"TERN_SMTPUTF8"}, Usage: "the message needs SMTPUTF8 (RFC 6531); implied by an address that is not ASCII"},
			&cli.StringFlag{Name: "body", EnvVars: []string{"TERN_BODY"}, Usage: "the BODY `TYPE` a client declared: 7bit or 8bitmime (RFC 6152)"},
			&cli.BoolFlag{Name: "requiretls", EnvVars: []string{"TERN_REQUIRETLS"}, Usage: "send the message on only over TLS (RFC 8689 REQUIRETLS)"},
			&cli.StringFlag{Name: "queue", EnvVars: []string{"TERN_QUEUE"}, Value: queue.DefaultDir, Usage: "queue `DIR`"},
			&cli.StringFlag{Name: "conf", EnvVars: []string{"TERN_CONF"}, Value: conf.DefaultDir, Usage: "control `DIR` (only its hostname file is read)"},
			&cli.Int64Flag{Name: "max-size", EnvVars: []string{"TERN_MAX_SIZE"}, Value: 100 << 20, Usage: "refuse a message over `BYTES` (exit 65); 0 for no limit"},
			&cli.BoolFlag{Name: "list", EnvVars: []string{"TERN_LIST"}, Usage: "list the queue (as mailq and sendmail -bp)"},
			&cli.BoolFlag{Name: "flush", EnvVars: []string{"TERN_FLUSH"}, Usage: "ask tern-queue to retry everything now (as sendmail -q)"},
			&cli.BoolFlag{Name: "noop", Hidden: true},
		},
		Action: func(c *cli.Context) error {
			dir := c.String("queue")
			switch {
			case c.Bool("noop"):
				return nil
			case c.Bool("list"):
				return queue.List(dir, os.Stdout, false, time.Now())
			case c.Bool("flush"):
				return queue.Flush(dir)
			}
			login := ""
			if u, err := user.Current(); err == nil {
				login = u.Username
			}
			var rcpts []enqueue.Recipient
			for _, a := range c.Args().Slice() {
				r, err := enqueue.ParseRecipient(a)
				if err != nil {
					return err
				}
				rcpts = append(rcpts, r)
			}
			o := enqueue.Options{
				Queue: dir, Conf: c.String("conf"),
				Sender: c.String("from"), SenderSet: c.IsSet("from"),
				Recipients:     rcpts,
				ReadRecipients: c.Bool("read-recipients"),
				DotEnds:        c.Bool("dot") && !c.Bool("ignore-dots"),
				FullName:       c.String("full-name"),
				Verbose:        c.Bool("verbose"),
				MaxSize:        c.Int64("max-size"),
				Conversation: enqueue.Conversation{
					SMTPUTF8:   c.Bool("smtputf8"),
					Body:       strings.ToUpper(c.String("body")),
					EnvID:      c.String("envid"),
					Ret:        strings.ToUpper(c.String("ret")),
					RequireTLS: c.Bool("requiretls"),
				},
			}
			if v := c.String("notify"); v != "" {
				n, err := transport.ParseNotify(v)
				if err != nil {
					return sysexit.New(sysexit.Usage, "-N: %v", err)
				}
				o.Notify = n
			}
			_, err := enqueue.Run(o, enqueue.Env{Stdin: os.Stdin, Stdout: os.Stdout, Now: time.Now, User: login, Hostname: os.Hostname})
			return err
		},
	}
	os.Exit(command.Run(app, args, os.Stderr))
}
