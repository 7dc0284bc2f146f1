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
}

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
		},
		HideHelpCommand: true,
		Action:          action,
	}
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
	} {
		t.Run(strings.Join(tc.args, " ")+fmt.Sprint(tc.env), func(t *testing.T) {
			for _, k := range []string{"TERN_FOLDER", "SENDER", "TERN_FROM", "TERN_QUOTA_HARD", "TERN_MAX_SIZE", "TERN_VERBOSE"} {
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
				want = fmt.Sprintf("folder=%q from=%q quota-hard=%v max-size=%d verbose=%v args=%q",
					c.String("folder"), c.String("from"), c.Bool("quota-hard"), c.Int64("max-size"), c.Bool("verbose"), c.Args().Slice())
				return nil
			}), argv, &stderr)

			var got string
			var out, lstderr bytes.Buffer
			gotCode := Run(&App{Name: "tern-test", Flags: testFlags, Action: func(c *Context) error {
				got = fmt.Sprintf("folder=%q from=%q quota-hard=%v max-size=%d verbose=%v args=%q",
					c.String("folder"), c.String("from"), c.Bool("quota-hard"), c.Int64("max-size"), c.Bool("verbose"), c.Args())
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
	out, err := goList("github.com/tern-mail/tern/cmd/tern-deliver")
	if err != nil {
		// Without the list nothing is checked: that is a failure, not a
		// reason to pass.
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range []string{"github.com/urfave/cli/v2", "text/template", "net/url", "net/netip", "regexp"} {
		if strings.Contains("\n"+out, "\n"+pkg+"\n") {
			t.Errorf("tern-deliver links %s", pkg)
		}
	}
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
	for _, s := range []string{"-m\x00x\x00md", "--from=a\x00-v\x00--\x00-x", "--max-size\x000x1f", "-quota-hard=0\x00a\x00b", "--=x", "-\x00-m"} {
		f.Add(s)
	}
	for _, k := range []string{"TERN_FOLDER", "SENDER", "TERN_FROM", "TERN_QUOTA_HARD", "TERN_MAX_SIZE", "TERN_VERBOSE"} {
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
		argv := append([]string{"tern-test"}, args...)
		var want, got string
		var discard bytes.Buffer
		wantCode := command.Run(urfaveApp(func(c *cli.Context) error {
			want = fmt.Sprintf("folder=%q from=%q quota-hard=%v max-size=%d verbose=%v args=%q",
				c.String("folder"), c.String("from"), c.Bool("quota-hard"), c.Int64("max-size"), c.Bool("verbose"), c.Args().Slice())
			return nil
		}), argv, &discard)
		gotCode := Run(&App{Name: "tern-test", Flags: testFlags, Action: func(c *Context) error {
			got = fmt.Sprintf("folder=%q from=%q quota-hard=%v max-size=%d verbose=%v args=%q",
				c.String("folder"), c.String("from"), c.Bool("quota-hard"), c.Int64("max-size"), c.Bool("verbose"), c.Args())
			return nil
		}}, argv, os.LookupEnv, &discard, &discard)
		if gotCode != wantCode || got != want {
			t.Errorf("%q: lean %d %s\nurfave/cli %d %s", args, gotCode, got, wantCode, want)
		}
	})
}
