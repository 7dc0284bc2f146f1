// Package command runs a tern program's urfave/cli app and turns the error
// it returns into one "prog: fatal: ..." line and a sysexits status.
//
// urfave/cli calls os.Exit inside Run unless ExitErrHandler is replaced,
// which would skip every deferred cleanup (a tmp file left behind, a lock
// left held); so the handler is replaced here and the exit happens only in
// Main, after Run has returned.
package command

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/tern-mail/tern/internal/logging"
	"github.com/tern-mail/tern/internal/sysexit"
	"github.com/urfave/cli/v2"
)

// Main runs app with os.Args and exits with the status of its error.
func Main(app *cli.App) {
	os.Exit(Run(app, os.Args, os.Stderr))
}

// Run runs app with args and returns the exit status; the error, if any,
// is written to stderr.
func Run(app *cli.App, args []string, stderr io.Writer) int {
	app.ExitErrHandler = func(*cli.Context, error) {}
	app.ErrWriter = stderr
	if app.Writer == nil {
		app.Writer = os.Stdout
	}
	usage := func(_ *cli.Context, err error, _ bool) error { return sysexit.Wrap(sysexit.Usage, err) }
	app.OnUsageError = usage
	setUsage(app.Commands, usage)
	err := app.Run(args)
	if err == nil {
		return sysexit.OK
	}
	code := sysexit.Code(err)
	var ec cli.ExitCoder
	if !errors.As(err, new(*sysexit.Error)) && errors.As(err, &ec) {
		code = ec.ExitCode()
	}
	if msg := err.Error(); msg != "" {
		logging.Fatalf(stderr, app.Name, "%s", msg)
	}
	if code == sysexit.Usage {
		fmt.Fprintf(stderr, "%s: hint: see '%s --help'\n", app.Name, app.Name)
	}
	return code
}

func setUsage(cmds []*cli.Command, f cli.OnUsageErrorFunc) {
	for _, c := range cmds {
		if c.OnUsageError == nil {
			c.OnUsageError = f
		}
		setUsage(c.Subcommands, f)
	}
}

// UsageError returns an error with status 64 for a misused command line.
func UsageError(format string, args ...any) error {
	return sysexit.New(sysexit.Usage, format, args...)
}
