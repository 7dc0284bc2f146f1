// tern-deliver is the local delivery agent: one message on stdin into a
// Maildir, answered by its exit status alone, so that tern-queue, procmail,
// maildrop, Postfix, fetchmail, qmail and shell scripts can all use it.
//
// It is started once per message, so its start-up is most of its cost: its
// command line is parsed by internal/command/lean instead of urfave/cli
// (same flags, environment variables, --help and exit statuses; see that
// package for the measurement), and it links nothing it does not use.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/tern-mail/tern/internal/command/lean"
	"github.com/tern-mail/tern/internal/logging"
	"github.com/tern-mail/tern/internal/sysexit"
	"github.com/tern-mail/tern/mda"
)

func main() {
	if args, ok := lmtpArgs(os.Args[1:]); ok {
		os.Exit(runLMTP(args))
	}
	lean.Main(&lean.App{
		Name:      "tern-deliver",
		Usage:     "deliver one message from standard input into a Maildir",
		UsageText: "tern-deliver [-m FOLDER] [-f SENDER] [-r RECIPIENT] [--quota-hard] [MAILDIR] < message",
		Description: "MAILDIR defaults to $HOME/Maildir/. The exit status says what happened, as sysexits.h\n" +
			"defines: 0 delivered, 75 try again later, 65 loop or bad message, 73 cannot create,\n" +
			"77 permission denied, 64 usage. See tern-deliver(8).",
		Flags: []lean.Flag{
			{Name: "folder", Aliases: []string{"m"}, EnvVars: []string{"TERN_FOLDER"}, Usage: "deliver into the Maildir++ `FOLDER` (e.g. Lists.Go), creating it when missing"},
			{Name: "from", Aliases: []string{"f"}, EnvVars: []string{"SENDER", "TERN_FROM"}, Usage: "envelope `SENDER`, written as Return-Path"},
			{Name: "recipient", Aliases: []string{"r"}, EnvVars: []string{"RECIPIENT", "TERN_RECIPIENT"}, Usage: "envelope `RECIPIENT`, written as Delivered-To and checked for loops"},
			{Name: "quota-hard", Kind: lean.Bool, EnvVars: []string{"TERN_QUOTA_HARD"}, Usage: "refuse an over-quota message for good (exit 73) instead of for now (exit 75)"},
			{Name: "max-size", Kind: lean.Int, Value: "104857600", EnvVars: []string{"TERN_MAX_SIZE"}, Usage: "refuse a message over `BYTES` (exit 65); 0 for no limit"},
			{Name: "forward", Kind: lean.Bool, EnvVars: []string{"TERN_FORWARD"}, Usage: "obey $HOME/.forward (tern-queue sets this when delivering for an account)"},
			{Name: "verbose", Aliases: []string{"v"}, Kind: lean.Bool, EnvVars: []string{"TERN_VERBOSE"}, Usage: "log the delivered file's name on standard error"},
			{Name: "lmtp", Kind: lean.Bool, Usage: "speak LMTP (RFC 2033) on standard input and output or on --listen sockets, for a stream of messages: runs tern-lmtpd(8) with the other arguments"},
		},
		Action: func(c *lean.Context) error {
			if c.Bool("lmtp") {
				// A spelling lmtpArgs does not take (--lmtp=1).
				return lean.UsageError("write --lmtp alone, before MAILDIR or any argument")
			}
			if c.NArg() > 1 {
				return lean.UsageError("one MAILDIR at most, got %d arguments", c.NArg())
			}
			d := mda.Delivery{
				Envelope:  mda.Envelope{Sender: c.String("from"), Recipient: c.String("recipient")},
				Home:      os.Getenv("HOME"),
				Folder:    c.String("folder"),
				QuotaHard: c.Bool("quota-hard"),
				MaxSize:   c.Int64("max-size"),
			}
			if c.NArg() == 1 {
				d.Maildir = c.Args()[0]
			}
			if c.Bool("forward") {
				return mda.DeliverForward(os.Stdin, d, forwarding())
			}
			m, err := mda.Deliver(os.Stdin, d)
			if err != nil {
				return err
			}
			if c.Bool("verbose") {
				log := logging.New("tern-deliver", os.Stderr, nil)
				log.Info("delivered", "to", c.String("recipient"), "folder", folderName(c.String("folder")), "file", m.Name, "size", m.Size)
			}
			return nil
		},
	})
}

// lmtpArgs finds --lmtp among the flags (before "--" or the first
// argument that is not a flag) and returns the arguments without it.
func lmtpArgs(args []string) ([]string, bool) {
	for i, a := range args {
		switch a {
		case "--lmtp", "-lmtp", "--lmtp=true", "-lmtp=true":
			return append(append([]string(nil), args[:i]...), args[i+1:]...), true
		case "--":
			return nil, false
		}
		if !strings.HasPrefix(a, "-") {
			// A flag's value, or MAILDIR: keep looking only past values.
			if i == 0 || !strings.HasPrefix(args[i-1], "-") || strings.Contains(args[i-1], "=") {
				return nil, false
			}
		}
	}
	return nil, false
}

// runLMTP becomes tern-lmtpd, the LMTP server, which lives beside this
// program (see cmd/tern-lmtpd for why it is a program of its own).
func runLMTP(args []string) int {
	self, err := os.Executable()
	if err == nil {
		prog := filepath.Join(filepath.Dir(self), "tern-lmtpd")
		err = syscall.Exec(prog, append([]string{prog}, args...), os.Environ())
		err = fmt.Errorf("run %s: %w", prog, err)
	}
	logging.Fatalf(os.Stderr, "tern-deliver", "--lmtp: %v; install tern-lmtpd beside tern-deliver", err)
	return sysexit.Unavailable
}

// forwarding is what ~/.forward's commands and re-injections run with:
// this environment without TERN_FORWARD (a command that runs tern-deliver
// itself means the plain Maildir), and tern-enqueue from TERN_ENQUEUE_PATH
// or beside this program. (TERN_ENQUEUE is tern-smtpd's filter: one name
// for one meaning, issue #19.)
func forwarding() mda.Forward {
	enq := os.Getenv("TERN_ENQUEUE_PATH")
	if enq == "" {
		self, _ := os.Executable()
		enq = filepath.Join(filepath.Dir(self), "tern-enqueue")
	}
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "TERN_FORWARD=") {
			env = append(env, e)
		}
	}
	return mda.Forward{Enqueue: enq, Env: env, Stderr: os.Stderr}
}

func folderName(f string) string {
	if f == "" {
		return "INBOX"
	}
	return f
}
