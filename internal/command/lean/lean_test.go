package lean

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tern-mail/tern/internal/command"
	"github.com/tern-mail/tern/internal/sysexit"
	"github.com/urfave/cli/v2"
)

var testFlags = []Flag{
	{Name: "folder", Aliases: []string{"m"}, EnvVars: []string{"TERN_FOLDER"}, Usage: "deliver into `FOLDER`"},
	{Name: "from", Aliases: []string{"f"}, EnvVars: []string{"SENDER", "TERN_FROM"}, Usage: "envelope `SENDER`"},
	{Name: "quota-hard", Kind: Bool, EnvVars: []string{"TERN_QUOTA_HARD"}, Usage: "refuse for good"},
	{Name: "max-size", Kind: Int, Value: "100", EnvVars: []string{"TERN_MAX_SIZE"}, Usage: "refuse over `BYTES`"},
	{Name: "verbose", Aliases: []string{"v"}, Kind: Bool, EnvVars: []string{"TERN_VERBOSE"}, Usage: "say more"},
	{Name: "to", Aliases: []string{"t"}, Kind: Strings, EnvVars: []string{"TERN_TO"}, Usage: "a `TO` address (repeatable)"},
}

var testEnv = []string{"TERN_FOLDER", "SENDER", "TERN_FROM", "TERN_QUOTA_HARD", "TERN_MAX_SIZE", "TERN_VERBOSE", "TERN_TO"}

// urfaveApp is testFlags as package command's programs declare them.
func urfaveApp(action cli.ActionFunc) *cli.App {
	return &cli.App{
		Name: "tern-test",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "folder", Aliases: []string{"m"}, EnvVars: []string{"TERN_FOLDER"}},
			&cli.StringFlag{Name: "from", Aliases: []string{"f"}, EnvVars: []string{"SENDER", "TERN_FROM"}},
			&cli.BoolFlag{Name: "quota-hard", EnvVars: []string{"TERN_QUOTA_HARD"}},
			&cli.Int64Flag{Name: "max-size", Value: 100, EnvVars: []string{"TERN_MAX_SIZE"}},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, EnvVars: []string{"TERN_VERBOSE"}},
			&cli.StringSliceFlag{Name: "to", Aliases: []string{"t"}, EnvVars: []string{"TERN_TO"}},
		},
		HideHelpCommand:           true,
		DisableSliceFlagSeparator: true,
		Action:                    action,
	}
}

// urfaveValues and leanValues print what each parsed, alike.
func urfaveValues(c *cli.Context) string {
	return fmt.Sprintf("folder=%q from=%q quota-hard=%v max-size=%d verbose=%v to=%q args=%q",
		c.String("folder"), c.String("from"), c.Bool("quota-hard"), c.Int64("max-size"), c.Bool("verbose"), c.StringSlice("to"), c.Args().Slice())
}

func leanValues(c *Context) string {
	return fmt.Sprintf("folder=%q from=%q quota-hard=%v max-size=%d verbose=%v to=%q args=%q",
		c.String("folder"), c.String("from"), c.Bool("quota-hard"), c.Int64("max-size"), c.Bool("verbose"), c.Strings("to"), c.Args())
}

// TestSameAsUrfave parses each command line and environment with
// urfave/cli (through package command) and with lean, and wants the same
// values, arguments and success or usage error from both.
func TestSameAsUrfave(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
	}{
		{args: nil},
		{args: []string{"md"}},
		{args: []string{"-m", "Lists.Go", "md"}},
		{args: []string{"--folder", "Lists.Go", "md"}},
		{args: []string{"--folder=Lists.Go", "-f=a@b", "md"}},
		{args: []string{"-folder", "x", "--from", "", "md"}},
		{args: []string{"-f", "a@b", "-f", "c@d"}},
		{args: []string{"-v", "--quota-hard", "md", "-f", "a@b"}},
		{args: []string{"--quota-hard=false", "-v=true"}},
		{args: []string{"--quota-hard=maybe"}},
		{args: []string{"--max-size", "0x10"}},
		{args: []string{"--max-size=12", "a", "b"}},
		{args: []string{"--max-size", "twelve"}},
		{args: []string{"--max-size"}},
		{args: []string{"--bogus", "md"}},
		{args: []string{"---folder", "x"}},
		{args: []string{"--", "-m", "x"}},
		{args: []string{"-", "x"}},
		{args: []string{"-m", "-v"}},
		{args: nil, env: map[string]string{"SENDER": "s@x", "TERN_FROM": "t@x", "TERN_FOLDER": "F"}},
		{args: nil, env: map[string]string{"TERN_FROM": "t@x"}},
		{args: nil, env: map[string]string{"SENDER": "", "TERN_FROM": "t@x"}},
		{args: []string{"-f", "c@x"}, env: map[string]string{"SENDER": "s@x"}},
		{args: nil, env: map[string]string{"TERN_QUOTA_HARD": "1", "TERN_VERBOSE": ""}},
		{args: []string{"--quota-hard=false"}, env: map[string]string{"TERN_QUOTA_HARD": "true"}},
		{args: nil, env: map[string]string{"TERN_MAX_SIZE": "0"}},
		{args: nil, env: map[string]string{"TERN_MAX_SIZE": ""}},
		{args: []string{"--max-size", "7"}, env: map[string]string{"TERN_MAX_SIZE": "9"}},
		{args: []string{"-t", "a@x", "-t", " b@x ", "-t=c@x, d@x"}},
		{args: []string{"--to", "a@x", "-to", " b@x "}},
		{args: []string{"-t", "a@x"}, env: map[string]string{"TERN_TO": "e@x"}},
		{args: nil, env: map[string]string{"TERN_TO": " e@x, f@x "}},
		{args: nil, env: map[string]string{"TERN_TO": ""}},
		{args: []string{"--to"}},
	} {
		t.Run(strings.Join(tc.args, " ")+fmt.Sprint(tc.env), func(t *testing.T) {
			for _, k := range testEnv {
				t.Setenv(k, "")
				os.Unsetenv(k)
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			argv := append([]string{"tern-test"}, tc.args...)

			var want string
			var stderr bytes.Buffer
			wantCode := command.Run(urfaveApp(func(c *cli.Context) error {
				want = urfaveValues(c)
				return nil
			}), argv, &stderr)

			var got string
			var out, lstderr bytes.Buffer
			gotCode := Run(&App{Name: "tern-test", Flags: testFlags, Action: func(c *Context) error {
				got = leanValues(c)
				return nil
			}}, argv, os.LookupEnv, &out, &lstderr)

			// urfave/cli reports a bad value in the environment as an
			// unclassified error; lean calls it a usage error.
			if gotCode != wantCode && !(wantCode != 0 && gotCode == sysexit.Usage) {
				t.Errorf("status %d, urfave/cli %d (stderr %q, urfave/cli's %q)", gotCode, wantCode, lstderr.String(), stderr.String())
			}
			if got != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
}

func TestStatusesAndMessages(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		err    error
		code   int
		stderr string
	}{
		{[]string{"tern-test"}, nil, 0, ""},
		{[]string{"tern-test", "--bogus"}, nil, 64, "tern-test: fatal: flag provided but not defined: -bogus\ntern-test: hint: see 'tern-test --help'\n"},
		{[]string{"tern-test"}, UsageError("one MAILDIR at most"), 64, "tern-test: fatal: one MAILDIR at most\ntern-test: hint: see 'tern-test --help'\n"},
		{[]string{"tern-test"}, sysexit.New(sysexit.NoUser, "no such user: bob"), 67, "tern-test: fatal: no such user: bob\n"},
		{[]string{"tern-test"}, sysexit.New(sysexit.TempFail, "two\nlines"), 75, "tern-test: fatal: two\\nlines\n"},
		{[]string{"tern-test"}, fmt.Errorf("who knows"), sysexit.Code(fmt.Errorf("who knows")), "tern-test: fatal: who knows\n"},
	} {
		var stdout, stderr bytes.Buffer
		code := Run(&App{Name: "tern-test", Flags: testFlags, Action: func(*Context) error { return tc.err }}, tc.args, os.LookupEnv, &stdout, &stderr)
		if code != tc.code || stderr.String() != tc.stderr {
			t.Errorf("%v, %v: status %d stderr %q, want %d and %q", tc.args, tc.err, code, stderr.String(), tc.code, tc.stderr)
		}
	}
}

// TestHelp wants --help and -h on standard output with status 0, the
// action not run, and every flag listed with its value's name and its
// environment variables, as urfave/cli shows them.
func TestHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h", "-help"} {
		var stdout, stderr bytes.Buffer
		ran := false
		code := Run(&App{Name: "tern-test", Usage: "test things", UsageText: "tern-test [-m FOLDER]", Flags: testFlags,
			Action: func(*Context) error { ran = true; return nil }}, []string{"tern-test", "-v", arg, "md"}, os.LookupEnv, &stdout, &stderr)
		if code != 0 || ran || stderr.Len() != 0 {
			t.Errorf("%s: status %d, action run %v, stderr %q", arg, code, ran, stderr.String())
		}
		for _, re := range []string{
			`(?m)^NAME:\n   tern-test - test things\n`,
			`(?m)^USAGE:\n   tern-test \[-m FOLDER\]\n`,
			`(?m)^   --folder FOLDER, -m FOLDER +deliver into FOLDER \[\$TERN_FOLDER\]$`,
			`(?m)^   --from SENDER, -f SENDER +envelope SENDER \[\$SENDER, \$TERN_FROM\]$`,
			`(?m)^   --quota-hard +refuse for good \[\$TERN_QUOTA_HARD\]$`,
			`(?m)^   --max-size BYTES +refuse over BYTES \(default: 100\) \[\$TERN_MAX_SIZE\]$`,
			`(?m)^   --verbose, -v +say more \[\$TERN_VERBOSE\]$`,
			`(?m)^   --help, -h +show help$`,
		} {
			if !regexp.MustCompile(re).MatchString(stdout.String()) {
				t.Errorf("%s: help does not match %s:\n%s", arg, re, stdout.String())
			}
		}
	}
}

// TestNoUrfave keeps the point of the package: a program that uses it
// does not link urfave/cli or what urfave/cli brings.
func TestNoUrfave(t *testing.T) {
	for prog, heavy := range map[string][]string{
		"tern-deliver": {"github.com/urfave/cli/v2", "text/template", "net/url", "net/netip", "regexp"},
		// go-message brings net/mail and with it net/netip.
		"tern-mime": {"github.com/urfave/cli/v2", "text/template", "net/url", "regexp"},
	} {
		out, err := goList("github.com/tern-mail/tern/cmd/" + prog)
		if err != nil {
			// Without the list nothing is checked: that is a failure, not a
			// reason to pass.
			t.Fatalf("go list -deps: %v", err)
		}
		for _, pkg := range heavy {
			if strings.Contains("\n"+out, "\n"+pkg+"\n") {
				t.Errorf("%s links %s", prog, pkg)
			}
		}
	}
}

// TestCommandsSameAsUrfave: a program with subcommands finds the same
// command, flags and arguments with lean as with urfave/cli's Commands,
// and an unknown or missing command reaches the program's own action.
func TestCommandsSameAsUrfave(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"unpack"},
		{"unpack", "-m", "F", "x", "-v"},
		{"unpack", "--to", "a@x", "--to", "b@x", "--", "-v"},
		{"unpack", "--bogus"},
		{"pack", "x"},
		{"-v", "unpack"},
		{"--", "unpack"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			for _, k := range testEnv {
				t.Setenv(k, "")
				os.Unsetenv(k)
			}
			argv := append([]string{"tern-test"}, args...)
			var want, got string
			var stderr, lstdout, lstderr bytes.Buffer
			app := urfaveApp(func(c *cli.Context) error { want = "top " + strings.Join(c.Args().Slice(), " "); return nil })
			app.Flags = nil
			app.Commands = []*cli.Command{{Name: "unpack", Flags: urfaveApp(nil).Flags, Action: func(c *cli.Context) error {
				want = "unpack " + urfaveValues(c)
				return nil
			}}}
			wantCode := command.Run(app, argv, &stderr)
			gotCode := Run(&App{Name: "tern-test",
				Action: func(c *Context) error { got = "top " + strings.Join(c.Args(), " "); return nil },
				Commands: []Command{{Name: "unpack", Flags: testFlags, Action: func(c *Context) error {
					got = "unpack " + leanValues(c)
					return nil
				}}},
			}, argv, os.LookupEnv, &lstdout, &lstderr)
			if gotCode != wantCode || got != want {
				t.Errorf("lean %d %q (stderr %q)\nurfave/cli %d %q (stderr %q)", gotCode, got, lstderr.String(), wantCode, want, stderr.String())
			}
		})
	}
}

// TestCommandHelp: --help lists the commands, and a command's --help its
// flags, as urfave/cli lays them out.
func TestCommandHelp(t *testing.T) {
	app := &App{Name: "tern-test", Usage: "test things", UsageText: "tern-test unpack [-m FOLDER]\ntern-test pack FILE...",
		Action: func(*Context) error { return nil },
		Commands: []Command{
			{Name: "unpack", Usage: "take apart", Flags: testFlags, Action: func(*Context) error { t.Error("action run"); return nil }},
			{Name: "pack", Usage: "put together", ArgsUsage: "FILE...", Flags: []Flag{{Name: "dir", Aliases: []string{"C"}, Value: ".", Usage: "into `DIR`"}}},
		}}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{
			`(?m)^USAGE:\n   tern-test unpack \[-m FOLDER\]\n   tern-test pack FILE\.\.\.\n`,
			`(?m)^COMMANDS:\n   unpack  take apart\n   pack    put together\n`,
			`(?m)^GLOBAL OPTIONS:\n   --help, -h +show help$`,
		}},
		{[]string{"unpack", "-h"}, []string{
			`(?m)^NAME:\n   tern-test unpack - take apart\n`,
			`(?m)^USAGE:\n   tern-test unpack \[command options\]\n`,
			`(?m)^   --to TO, -t TO \[ --to TO, -t TO \] +a TO address \(repeatable\) \[\$TERN_TO\]$`,
			`(?m)^   --max-size BYTES +refuse over BYTES \(default: 100\) \[\$TERN_MAX_SIZE\]$`,
		}},
		{[]string{"pack", "--help"}, []string{
			`(?m)^USAGE:\n   tern-test pack \[command options\] FILE\.\.\.\n`,
			`(?m)^   --dir DIR, -C DIR +into DIR \(default: "\."\)$`,
		}},
	} {
		var stdout, stderr bytes.Buffer
		code := Run(app, append([]string{"tern-test"}, tc.args...), os.LookupEnv, &stdout, &stderr)
		if code != 0 || stderr.Len() != 0 {
			t.Errorf("%v: status %d, stderr %q", tc.args, code, stderr.String())
		}
		for _, re := range tc.want {
			if !regexp.MustCompile(re).MatchString(stdout.String()) {
				t.Errorf("%v: help does not match %s:\n%s", tc.args, re, stdout.String())
			}
		}
	}
}

// TestMixedForms: lean takes -t and --to of one repeatable flag together,
// where urfave/cli refuses them ("two forms of the same flag"); nothing is
// gained by refusing "tern-mime pack -t a --to b".
func TestMixedForms(t *testing.T) {
	t.Setenv("TERN_TO", "")
	os.Unsetenv("TERN_TO")
	var got string
	var stdout, stderr bytes.Buffer
	code := Run(&App{Name: "tern-test", Flags: testFlags, Action: func(c *Context) error { got = fmt.Sprintf("%q", c.Strings("to")); return nil }},
		[]string{"tern-test", "-t", "a@x", "--to", "b@x"}, os.LookupEnv, &stdout, &stderr)
	if code != 0 || got != `["a@x" "b@x"]` {
		t.Errorf("status %d, to=%s, stderr %q", code, got, stderr.String())
	}
}

// mixesForms says whether args name the repeatable flag both ways (see
// TestMixedForms), where lean and urfave/cli differ on purpose.
func mixesForms(args []string) bool {
	var short, long bool
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		short = short || (strings.HasPrefix(a, "-") && name == "t")
		long = long || (strings.HasPrefix(a, "-") && name == "to")
	}
	return short && long
}

func goList(pkg string) (string, error) {
	out, err := exec.Command("go", "list", "-deps", pkg).Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(exit.Stderr))
	}
	return string(out), err
}

// FuzzSameAsUrfave: for any command line (arguments separated by NUL in
// the fuzzed string), lean and urfave/cli agree on success and on every
// value.
func FuzzSameAsUrfave(f *testing.F) {
	for _, s := range []string{"-m\x00x\x00md", "--from=a\x00-v\x00--\x00-x", "-t\x00a\x00-t= b \x00c", "--max-size\x000x1f", "-quota-hard=0\x00a\x00b", "--=x", "-\x00-m"} {
		f.Add(s)
	}
	for _, k := range testEnv {
		f.Setenv(k, "")
		os.Unsetenv(k)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, "\x00")
		for _, a := range args {
			// Both print help and stop; the help texts differ by design.
			if a == "-h" || a == "--help" || a == "-help" || strings.HasPrefix(a, "-h=") || strings.HasPrefix(a, "--help=") || strings.HasPrefix(a, "-help=") {
				return
			}
		}
		// urfave/cli passes a repeatable flag's values through JSON, which
		// turns bytes that are not UTF-8 into U+FFFD; lean keeps them.
		if mixesForms(args) || !utf8.ValidString(s) {
			return
		}
		argv := append([]string{"tern-test"}, args...)
		var want, got string
		var discard bytes.Buffer
		wantCode := command.Run(urfaveApp(func(c *cli.Context) error {
			want = urfaveValues(c)
			return nil
		}), argv, &discard)
		gotCode := Run(&App{Name: "tern-test", Flags: testFlags, Action: func(c *Context) error {
			got = leanValues(c)
			return nil
		}}, argv, os.LookupEnv, &discard, &discard)
		if gotCode != wantCode || got != want {
			t.Errorf("%q: lean %d %s\nurfave/cli %d %s", args, gotCode, got, wantCode, want)
		}
	})
}
