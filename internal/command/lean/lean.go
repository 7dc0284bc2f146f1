// Package lean runs a command line the way package command does — flags
// with aliases, every flag also read from the environment, --help, usage
// errors with status 64, one "prog: fatal: ..." line and a sysexits
// status — without linking urfave/cli.
//
// It exists for the programs started once per message, where start-up is
// most of the cost: tern-deliver. urfave/cli imports text/template, which
// imports net/url and with it net/netip, and regexp, and it compiles a
// regexp at init; in tern-deliver that was 2.3 MB of its 6.3 MB binary
// and about 0.35 ms of every delivery's 1.8 ms on tmpfs (measured beside
// tests/bench/deliver.sh's messages). The programs that run once per connection or
// per person keep urfave/cli and package command.
//
// Parsing follows the standard flag package, which urfave/cli v2 uses
// underneath, so a command line means the same to both: -name and --name
// alike, "-name value" or "-name=value", a bool flag takes no separate
// value (-name=false turns it off), parsing stops at the first argument
// that is not a flag or at "--", and the last of repeated flags wins. A
// value from the command line wins over one from the environment; of
// several environment variables the first that is set wins, as urfave/cli
// does (an empty string set in the environment counts for a string flag and
// turns a bool flag off, and is ignored for an int flag).
package lean

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/tern-mail/tern/internal/sysexit"
)

// Kind is the type of a flag's value.
type Kind int

// The kinds of flags.
const (
	String Kind = iota
	Bool
	Int
)

// Flag is one command-line flag.
type Flag struct {
	Name    string   // the long name: --name
	Aliases []string // other names, usually one letter: -m
	EnvVars []string // read, first set wins, when the flag is not given
	Kind    Kind
	Value   string // the default
	// Usage is one line for --help; a word in `backquotes` names the
	// flag's value there.
	Usage string
}

// App is a program's command line.
type App struct {
	Name        string
	Usage       string // one line: what the program does
	UsageText   string // the synopsis
	Description string
	Flags       []Flag
	Action      func(*Context) error
}

// Context is a parsed command line.
type Context struct {
	flags  []Flag
	values []string // by index into flags
	args   []string
}

// Main runs app with the process's arguments, environment and standard
// streams, and exits with the status of its error.
func Main(app *App) {
	os.Exit(Run(app, os.Args, os.LookupEnv, os.Stdout, os.Stderr))
}

// Run runs app with args (args[0] is the program's name) and the
// environment lookupEnv gives, and returns the exit status; the error, if
// any, is written to stderr, --help to stdout.
func Run(app *App, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) int {
	c, help, err := parse(app.Flags, args[1:], lookupEnv)
	if help {
		writeHelp(stdout, app)
		return sysexit.OK
	}
	if err == nil {
		err = app.Action(c)
	}
	if err == nil {
		return sysexit.OK
	}
	code := sysexit.Code(err)
	fmt.Fprintf(stderr, "%s: fatal: %s\n", app.Name, oneLine(err.Error()))
	if code == sysexit.Usage {
		fmt.Fprintf(stderr, "%s: hint: see '%s --help'\n", app.Name, app.Name)
	}
	return code
}

func usageError(format string, args ...any) error {
	return sysexit.New(sysexit.Usage, format, args...)
}

func parse(flags []Flag, args []string, lookupEnv func(string) (string, bool)) (*Context, bool, error) {
	c := &Context{flags: flags, values: make([]string, len(flags))}
	given := make([]bool, len(flags))
	for len(args) > 0 {
		a := args[0]
		if len(a) < 2 || a[0] != '-' {
			break
		}
		args = args[1:]
		if a == "--" {
			break
		}
		name := a[1:]
		if name[0] == '-' {
			name = name[1:]
		}
		if name == "" || name[0] == '-' || name[0] == '=' {
			return nil, false, usageError("bad flag syntax: %s", a)
		}
		name, value, hasValue := strings.Cut(name, "=")
		i := c.index(name)
		if i < 0 {
			if name == "help" || name == "h" {
				return nil, true, nil
			}
			return nil, false, usageError("flag provided but not defined: -%s", name)
		}
		switch f := flags[i]; {
		case f.Kind == Bool && !hasValue:
			value = "true"
		case !hasValue:
			if len(args) == 0 {
				return nil, false, usageError("flag needs an argument: -%s", name)
			}
			value, args = args[0], args[1:]
		}
		if err := check(flags[i], value); err != nil {
			return nil, false, usageError("invalid value %q for flag -%s: %v", value, name, err)
		}
		c.values[i], given[i] = value, true
	}
	c.args = args
	for i, f := range flags {
		if given[i] {
			continue
		}
		c.values[i] = f.Value
		for _, e := range f.EnvVars {
			v, ok := lookupEnv(e)
			if !ok {
				continue
			}
			if v == "" && f.Kind == Int {
				break
			}
			if v == "" && f.Kind == Bool {
				v = "false"
			}
			if err := check(f, v); err != nil {
				return nil, false, usageError("could not parse %q from environment variable %s for flag %s: %v", v, e, f.Name, err)
			}
			c.values[i] = v
			break
		}
	}
	return c, false, nil
}

func check(f Flag, v string) error {
	var err error
	switch f.Kind {
	case Bool:
		_, err = strconv.ParseBool(v)
	case Int:
		_, err = strconv.ParseInt(v, 0, 64)
	}
	if err != nil {
		return err.(*strconv.NumError).Err
	}
	return nil
}

func (c *Context) index(name string) int {
	for i, f := range c.flags {
		if f.Name == name {
			return i
		}
		for _, a := range f.Aliases {
			if a == name {
				return i
			}
		}
	}
	return -1
}

func (c *Context) value(name string, kind Kind) string {
	i := c.index(name)
	if i < 0 || c.flags[i].Kind != kind {
		panic("lean: no " + name + " flag of that kind") // a mistake in the program, not in its input
	}
	return c.values[i]
}

// String returns the value of the string flag called name.
func (c *Context) String(name string) string { return c.value(name, String) }

// Bool returns the value of the bool flag called name.
func (c *Context) Bool(name string) bool {
	b, _ := strconv.ParseBool(c.value(name, Bool)) // checked while parsing
	return b
}

// Int64 returns the value of the int flag called name.
func (c *Context) Int64(name string) int64 {
	n, _ := strconv.ParseInt(c.value(name, Int), 0, 64) // checked while parsing
	return n
}

// Args returns the arguments after the flags.
func (c *Context) Args() []string { return c.args }

// NArg returns how many arguments follow the flags.
func (c *Context) NArg() int { return len(c.args) }

// writeHelp writes --help in urfave/cli's layout, so that every tern
// program's help reads alike (and tests/manpages_test.go finds the flags).
func writeHelp(w io.Writer, app *App) {
	var b strings.Builder
	fmt.Fprintf(&b, "NAME:\n   %s - %s\n\nUSAGE:\n   %s\n", app.Name, app.Usage, app.UsageText)
	if app.Description != "" {
		fmt.Fprintf(&b, "\nDESCRIPTION:\n   %s\n", strings.ReplaceAll(app.Description, "\n", "\n   "))
	}
	b.WriteString("\nGLOBAL OPTIONS:\n")
	var names, usages []string
	width := 0
	for _, f := range app.Flags {
		arg, usage := valueName(f)
		var ns []string
		for _, n := range append([]string{f.Name}, f.Aliases...) {
			dash := "--"
			if len(n) == 1 {
				dash = "-"
			}
			ns = append(ns, dash+n+arg)
		}
		if f.Value != "" && f.Kind != String {
			usage += " (default: " + f.Value + ")"
		}
		if len(f.EnvVars) > 0 {
			usage += " [$" + strings.Join(f.EnvVars, ", $") + "]"
		}
		names = append(names, strings.Join(ns, ", "))
		usages = append(usages, usage)
		width = max(width, len(names[len(names)-1]))
	}
	names, usages = append(names, "--help, -h"), append(usages, "show help")
	for i := range names {
		fmt.Fprintf(&b, "   %-*s  %s\n", width, names[i], usages[i])
	}
	io.WriteString(w, b.String())
}

// valueName takes the `NAME` out of a usage line, as urfave/cli does.
func valueName(f Flag) (arg, usage string) {
	usage = f.Usage
	if i := strings.IndexByte(usage, '`'); i >= 0 {
		if j := strings.IndexByte(usage[i+1:], '`'); j >= 0 {
			arg = usage[i+1 : i+1+j]
			usage = usage[:i] + arg + usage[i+2+j:]
		}
	}
	if arg == "" && f.Kind != Bool {
		arg = "value"
	}
	if arg != "" {
		arg = " " + arg
	}
	return arg, usage
}

// oneLine keeps an error on one line whatever it carries (as
// logging.Fatalf does; that package is not linked here, for its log/slog).
func oneLine(s string) string {
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(s)
}

// UsageError returns an error with status 64 for a misused command line.
func UsageError(format string, args ...any) error { return usageError(format, args...) }
