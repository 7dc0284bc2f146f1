package serve

import (
	"os"
	"strings"
	"testing"

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
