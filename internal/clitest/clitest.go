// Package clitest runs a program's command-line scripts: testscript files
// (testdata/script/*.txtar beside the program's main package) that run the
// real program with flags, environment and standard input, and check its
// exit status, standard output and standard error, as age's and the go
// command's tests do. A program's test calls testscript.Main with its main
// function in TestMain, and Run in a test.
package clitest

import (
	"errors"
	"os/exec"
	"strconv"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// Run runs every script in testdata/script. Besides testscript's own
// commands the scripts have
//
//	status N PROGRAM [ARG...]
//
// which runs PROGRAM as exec does and fails unless it exits N: the
// sysexits.h statuses (64 usage, 65 bad data, 73 cannot create...) are the
// interface callers such as MTAs and shell scripts rely on, and exec alone
// tells only zero from non-zero.
func Run(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Cmds:                map[string]func(*testscript.TestScript, bool, []string){"status": status},
		Setup: func(e *testscript.Env) error {
			// A home of its own: the programs read $HOME (tern-deliver's
			// default Maildir), and the scripts' environment holds no
			// TERN_ variable but those a script sets.
			e.Setenv("HOME", e.WorkDir)
			return nil
		},
	})
}

func status(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("status does not take !: say which status")
	}
	if len(args) < 2 {
		ts.Fatalf("usage: status N PROGRAM [ARG...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("status %q: not a number", args[0])
	}
	got := 0
	var exit *exec.ExitError
	if err := ts.Exec(args[1], args[2:]...); errors.As(err, &exit) {
		got = exit.ExitCode()
	} else if err != nil {
		ts.Fatalf("%s: %v", args[1], err)
	}
	if got != want {
		ts.Fatalf("%s exited %d, want %d", args[1], got, want)
	}
}
