// tern-dkim makes the DKIM keys tern signs outgoing mail with and says
// what a domain must publish in DNS for its mail to be trusted: the key
// records, SPF and DMARC. Signing needs no setting beyond a key: a key in
// the control directory's dkim/DOMAIN/ is what turns it on, so this tool
// only writes files and reads DNS.
package main

import (
	"context"
	"fmt"
	"time"

	"github.com/tern-mail/tern/internal/command"
	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/internal/resolver"
	"github.com/tern-mail/tern/internal/sysexit"
	"github.com/tern-mail/tern/mta/msgauth"
	"github.com/urfave/cli/v2"
)

func keygen(c *cli.Context) error {
	if c.NArg() != 2 {
		return command.UsageError("keygen takes DOMAIN and SELECTOR, got %d arguments", c.NArg())
	}
	domain, selector := c.Args().Get(0), c.Args().Get(1)
	t := c.String("type")
	if t != msgauth.KeyEd25519 && t != msgauth.KeyRSA {
		return command.UsageError("--type %q: want ed25519 or rsa", t)
	}
	if !msgauth.ValidDomain(domain) {
		return command.UsageError("domain %q: want a domain name such as example.org, IDNs as A-labels", domain)
	}
	if !msgauth.ValidSelector(selector) {
		return command.UsageError("selector %q: want letters, digits and hyphens, such as s2026", selector)
	}
	path, rec, err := msgauth.GenerateKey(c.String("conf"), domain, selector, t)
	if err != nil {
		return sysexit.Wrap(sysexit.CantCreate, err)
	}
	fmt.Fprintf(c.App.ErrWriter, "tern-dkim: info: wrote key=%s\n", path)
	return msgauth.WriteZone(c.App.Writer, []msgauth.DNSRecord{{Kind: "DKIM", Name: selector + "._domainkey." + domain, Value: rec}})
}

func dns(c *cli.Context) error {
	if c.NArg() != 1 {
		return command.UsageError("dns takes one DOMAIN, got %d arguments", c.NArg())
	}
	domain := c.Args().First()
	cf, err := conf.Load(c.String("conf"))
	if err != nil {
		return err
	}
	recs, err := msgauth.RecommendedRecords(cf.Dir, domain, cf.Hostname)
	if err != nil {
		return sysexit.Wrap(sysexit.Config, err)
	}
	if len(recs) == 2 {
		fmt.Fprintf(c.App.ErrWriter, "tern-dkim: hint: %s has no DKIM key: make one with 'tern-dkim keygen %s SELECTOR'\n", domain, domain)
	}
	if !c.Bool("offline") {
		cfg := resolver.Config{Timeout: 3 * time.Second, Attempts: 2}
		if s := c.String("dns"); s != "" {
			server, err := resolver.ParseServer(s)
			if err != nil {
				return sysexit.Wrap(sysexit.Usage, err)
			}
			cfg.Servers = []string{server}
		}
		cl, err := resolver.New(cfg)
		if err != nil {
			return sysexit.Wrap(sysexit.Config, err)
		}
		ctx, cancel := context.WithTimeout(c.Context, 30*time.Second)
		defer cancel()
		msgauth.CompareDNS(ctx, cl, recs)
	}
	if err := msgauth.WriteZone(c.App.Writer, recs); err != nil {
		return sysexit.Wrap(sysexit.IOErr, err)
	}
	for _, r := range recs {
		switch r.State {
		case msgauth.RecordUnknown:
			return sysexit.New(sysexit.TempFail, "DNS lookup of %s failed: try again later", r.Name)
		case msgauth.RecordMissing, msgauth.RecordDiffers:
			// As diff(1): 1 says DNS differs from what tern suggests.
			return cli.Exit("", 1)
		}
	}
	return nil
}

func main() {
	confFlag := &cli.StringFlag{Name: "conf", EnvVars: []string{"TERN_CONF"}, Value: conf.DefaultDir, Usage: "control `DIR`ectory; keys are DIR/dkim/DOMAIN/SELECTOR.key"}
	command.Main(&cli.App{
		Name:            "tern-dkim",
		Usage:           "make DKIM keys and show the DNS records a mail domain publishes",
		UsageText:       "tern-dkim [--conf DIR] keygen [--type ed25519|rsa] DOMAIN SELECTOR\n   tern-dkim [--conf DIR] dns [--dns ADDR:PORT] [--offline] DOMAIN",
		HideHelpCommand: true,
		Flags:           []cli.Flag{confFlag},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return command.UsageError("unknown command %q", c.Args().First())
			}
			return command.UsageError("a command is required: keygen or dns")
		},
		Commands: []*cli.Command{
			{
				Name:      "keygen",
				Usage:     "make a key pair for DOMAIN and print its DNS record",
				UsageText: "tern-dkim keygen [--type ed25519|rsa] DOMAIN SELECTOR",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "type", Aliases: []string{"t"}, EnvVars: []string{"TERN_TYPE"}, Value: msgauth.KeyEd25519, Usage: "key `TYPE`: ed25519 (RFC 8463) or rsa (2048 bits)"},
				},
				Action: keygen,
			},
			{
				Name:      "dns",
				Usage:     "print the DKIM, SPF and DMARC records DOMAIN should publish, and how DNS differs",
				UsageText: "tern-dkim dns [--dns ADDR:PORT] [--offline] DOMAIN",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "dns", EnvVars: []string{"TERN_DNS"}, Usage: "ask the DNS server at `ADDR:PORT` (default: /etc/resolv.conf's)"},
					&cli.BoolFlag{Name: "offline", EnvVars: []string{"TERN_OFFLINE"}, Usage: "print the records without looking at DNS"},
				},
				Action: dns,
			},
		},
	})
}
