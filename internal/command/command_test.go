package command

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tern-mail/tern/internal/sysexit"
	"github.com/urfave/cli/v2"
)

func app(action cli.ActionFunc) *cli.App {
	return &cli.App{
		Name:   "tern-test",
		Flags:  []cli.Flag{&cli.StringFlag{Name: "folder", Aliases: []string{"m"}}},
		Action: action,
	}
}

func TestStatuses(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		err    error
		code   int
		stderr string
	}{
		{[]string{"tern-test"}, nil, 0, ""},
		{[]string{"tern-test", "--bogus"}, nil, 64, "tern-test: hint: see 'tern-test --help'"},
		{[]string{"tern-test"}, sysexit.New(sysexit.NoUser, "no such user: bob"), 67, "tern-test: fatal: no such user: bob\n"},
		{[]string{"tern-test"}, cli.Exit("bye", 3), 3, "tern-test: fatal: bye\n"},
	} {
		var stderr bytes.Buffer
		code := Run(app(func(*cli.Context) error { return tc.err }), tc.args, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.stderr) {
			t.Errorf("%v: code %d stderr %q, want %d and %q", tc.args, code, stderr.String(), tc.code, tc.stderr)
		}
	}
}
