// Package lean runs a command line the way package command does — flags
// with aliases, every flag also read from the environment, subcommands,
// --help, usage errors with status 64, one "prog: fatal: ..." line and a
// sysexits status — without linking urfave/cli.
//
// It exists for the programs started once per message, where start-up is
// much of the cost: tern-deliver (run by tern-queue, procmail or fetchmail
// for every message) and tern-mime (run by scripts once per message, as
// munpack is). urfave/cli imports text/template, which imports net/url and
// with it net/netip, and regexp, and it compiles regexps and formats
// strings at init; every start pays for that whether a flag is read or
// not. tests/bench/mime.sh's "start" rows and tests/bench/deliver.sh show
// what it costs a process. The programs that run once per connection or per
// person keep urfave/cli and package command.
//
// Parsing follows the standard flag package, which urfave/cli v2 uses
// underneath, so a command line means the same to both: -name and --name
// alike, "-name value" or "-name=value", a bool flag takes no separate
// value (-name=false turns it off), parsing stops at the first argument
// that is not a flag or at "--", and the last of repeated flags wins (a
// Strings flag keeps them all, each with its spaces trimmed). A value from
// the command line wins over one from the environment; of several
// environment variables the first that is set wins, as urfave/cli does (an
// empty string set in the environment counts for a string flag, turns a
// bool flag off, is ignored for an int flag and is one empty item of a
// Strings flag). A subcommand is the first argument after the program's
// own flags, and its flags follow it, as with urfave/cli's Commands.
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
	Strings // repeatable: every occurrence is kept, in order
)

// Flag is one command-line flag.
type Flag struct {
	Name    string   // the long name: --name
	Aliases []string // other names, usually one letter: -m
	EnvVars []string // read, first set wins, when the flag is not given
	Kind    Kind
	Value   string // the default (none for Strings)
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
	// Commands are the subcommands; with them, Action runs only when the
	// first argument names none (to say so).
	Commands []Command
	Action   func(*Context) error
}

// Command is a subcommand: "prog NAME [flags] [args]".
type Command struct {
	Name      string
	Usage     string // one line: what it does
	ArgsUsage string // what follows the flags, for --help
	Flags     []Flag
	Action    func(*Context) error
}

// Context is a parsed command line.
type Context struct {
	flags  []Flag
	values []string   // by index into flags
	lists  [][]string // by index into flags, for Strings flags
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
	action := app.Action
	if cmd := app.command(c, err); cmd != nil {
		c, help, err = parse(cmd.Flags, c.args[1:], lookupEnv)
		if help {
			writeCommandHelp(stdout, app, cmd)
			return sysexit.OK
		}
		action = cmd.Action
	}
	if err == nil {
		err = action(c)
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

// command returns the subcommand the parsed arguments c name, if any.
func (app *App) command(c *Context, err error) *Command {
	if err != nil || len(c.args) == 0 {
		return nil
	}
	for i := range app.Commands {
		if app.Commands[i].Name == c.args[0] {
			return &app.Commands[i]
		}
	}
	return nil
}

func usageError(format string, args ...any) error {
	return sysexit.New(sysexit.Usage, format, args...)
}

func parse(flags []Flag, args []string, lookupEnv func(string) (string, bool)) (*Context, bool, error) {
	c := &Context{flags: flags, values: make([]string, len(flags)), lists: make([][]string, len(flags))}
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
		if flags[i].Kind == Strings {
			c.lists[i] = append(c.lists[i], strings.TrimSpace(value))
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
			if f.Kind == Strings {
				// One item, commas and all: addresses have commas of their own.
				c.lists[i] = []string{strings.TrimSpace(v)}
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

// Strings returns every value of the Strings flag called name.
func (c *Context) Strings(name string) []string {
	c.value(name, Strings)
	return c.lists[c.index(name)]
}

// Args returns the arguments after the flags.
func (c *Context) Args() []string { return c.args }

// NArg returns how many arguments follow the flags.
func (c *Context) NArg() int { return len(c.args) }

// writeHelp writes --help in urfave/cli's layout, so that every tern
// program's help reads alike (and tests/manpages_test.go finds the flags).
func writeHelp(w io.Writer, app *App) {
	var b strings.Builder
	fmt.Fprintf(&b, "NAME:\n   %s - %s\n\nUSAGE:\n   %s\n", app.Name, app.Usage, strings.ReplaceAll(app.UsageText, "\n", "\n   "))
	if app.Description != "" {
		fmt.Fprintf(&b, "\nDESCRIPTION:\n   %s\n", strings.ReplaceAll(app.Description, "\n", "\n   "))
	}
	if len(app.Commands) > 0 {
		b.WriteString("\nCOMMANDS:\n")
		width := 0
		for _, cmd := range app.Commands {
			width = max(width, len(cmd.Name))
		}
		for _, cmd := range app.Commands {
			fmt.Fprintf(&b, "   %-*s  %s\n", width, cmd.Name, cmd.Usage)
		}
	}
	b.WriteString("\nGLOBAL OPTIONS:\n")
	writeFlags(&b, app.Flags)
	io.WriteString(w, b.String())
}

// writeCommandHelp writes a subcommand's --help, as urfave/cli lays it out.
func writeCommandHelp(w io.Writer, app *App, cmd *Command) {
	var b strings.Builder
	fmt.Fprintf(&b, "NAME:\n   %s %s - %s\n\nUSAGE:\n   %s\n\nOPTIONS:\n",
		app.Name, cmd.Name, cmd.Usage, strings.TrimSpace(app.Name+" "+cmd.Name+" [command options] "+cmd.ArgsUsage))
	writeFlags(&b, cmd.Flags)
	io.WriteString(w, b.String())
}

func writeFlags(b *strings.Builder, flags []Flag) {
	var names, usages []string
	width := 0
	for _, f := range flags {
		arg, usage := valueName(f)
		var ns []string
		for _, n := range append([]string{f.Name}, f.Aliases...) {
			dash := "--"
			if len(n) == 1 {
				dash = "-"
			}
			ns = append(ns, dash+n+arg)
		}
		switch {
		case f.Value != "" && f.Kind == String:
			usage += fmt.Sprintf(" (default: %q)", f.Value)
		case f.Value != "":
			usage += " (default: " + f.Value + ")"
		}
		if len(f.EnvVars) > 0 {
			usage += " [$" + strings.Join(f.EnvVars, ", $") + "]"
		}
		name := strings.Join(ns, ", ")
		if f.Kind == Strings {
			name += " [ " + name + " ]"
		}
		names = append(names, name)
		usages = append(usages, usage)
		width = max(width, len(name))
	}
	names, usages = append(names, "--help, -h"), append(usages, "show help")
	for i := range names {
		fmt.Fprintf(b, "   %-*s  %s\n", width, names[i], usages[i])
	}
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
