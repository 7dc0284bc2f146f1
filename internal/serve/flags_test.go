package serve

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// Every serving flag is documented in tern-serve(7), with its variable.
func TestFlagsInManPage(t *testing.T) {
	page, err := os.ReadFile("../../man/tern-serve.7")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range Flags() {
		name := f.Names()[0]
		if !strings.Contains(string(page), ".It Fl -"+name) {
			t.Errorf("tern-serve.7 does not describe --%s", name)
		}
		env := f.(interface{ GetEnvVars() []string }).GetEnvVars()
		if len(env) != 1 || env[0] != "TERN_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_")) {
			t.Errorf("--%s: environment %v", name, env)
		} else if !strings.Contains(string(page), ".Ev "+env[0]) {
			t.Errorf("tern-serve.7 does not name %s", env[0])
		}
	}
}

func TestFromCLI(t *testing.T) {
	var got Options
	app := &cli.App{Flags: Flags(), Action: func(c *cli.Context) error {
		got = FromCLI(c, Options{Idle: 5 * 60e9, Total: 7})
		return nil
	}}
	if err := app.Run([]string{"x", "--listen", "127.0.0.1:25", "--listen", "[::1]:25", "--tls", "--session-timeout", "2h", "--max-per-ip", "3"}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got.Listen, " ") != "127.0.0.1:25 [::1]:25" || !got.ImplicitTLS || got.MaxPerIP != 3 || got.MaxConns != DefaultMaxConns ||
		got.Idle != 5*60e9 || got.Total.String() != "2h0m0s" {
		t.Fatalf("FromCLI: %+v", got)
	}
}

// TestFlagsForDefaults: --help shows the server's own timeouts, and a 0
// says what it means.
func TestFlagsForDefaults(t *testing.T) {
	var out strings.Builder
	app := &cli.App{Name: "x", Flags: FlagsFor(Options{Idle: 5 * time.Minute}), Writer: &out}
	if err := app.Run([]string{"x", "--help"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"close a connection silent for DURATION; 0 for never (default: 5m0s)",
		"close any connection after DURATION; 0 for no limit (default: 0s)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, out.String())
		}
	}
}
