package main

import (
	"slices"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/tern-mail/tern/internal/clitest"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){"tern-deliver": main})
}

// TestScripts runs testdata/script/*.txtar: tern-deliver's command line.
func TestScripts(t *testing.T) { clitest.Run(t) }

func TestLMTPArgs(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
		ok   bool
	}{
		{[]string{"--lmtp"}, []string{}, true},
		{[]string{"-lmtp", "--listen", "unix:/s"}, []string{"--listen", "unix:/s"}, true},
		{[]string{"--listen", "unix:/s", "--lmtp=true", "--quota-hard"}, []string{"--listen", "unix:/s", "--quota-hard"}, true},
		{[]string{"-f", "a@b", "-r", "c@d", "/home/c/Maildir"}, nil, false},
		{[]string{"-m", "x", "--", "--lmtp"}, nil, false},
		{[]string{"/home/c/Maildir", "--lmtp"}, nil, false}, // MAILDIR ends the flags
		{[]string{"--lmtp=false"}, nil, false},
	} {
		got, ok := lmtpArgs(tc.in)
		if ok != tc.ok || (ok && !slices.Equal(got, tc.want)) {
			t.Errorf("lmtpArgs(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
