// tern-passwd makes password hashes and edits tern's users file, the way
// doveadm pw and htpasswd do for theirs. Every edit is made under a lock
// and written whole to a new file that is renamed into place, so the
// servers reading the file see the old version or the new one, never a
// half-written one.
package main

import (
	"os"
	"path/filepath"

	"github.com/tern-mail/tern/internal/auth"
	"github.com/tern-mail/tern/internal/command"
	"github.com/tern-mail/tern/internal/conf"
	"github.com/urfave/cli/v2"
)

func passwd(c *cli.Context) *auth.Passwd {
	users := c.String("users")
	if users == "" {
		users = filepath.Join(c.String("conf"), "users")
	}
	return &auth.Passwd{Users: users, Stdin: os.Stdin, Stdout: c.App.Writer, Prompt: os.Stderr, Scheme: c.String("scheme")}
}

// oneUser returns the USER argument of add, set and del.
func oneUser(c *cli.Context) (string, error) {
	if c.NArg() != 1 {
		return "", command.UsageError("%s takes one USER, got %d arguments", c.Command.Name, c.NArg())
	}
	return c.Args().First(), nil
}

func main() {
	scheme := &cli.StringFlag{Name: "scheme", Aliases: []string{"s"}, EnvVars: []string{"TERN_SCHEME"}, Value: auth.SchemeArgon2id, Usage: "password `SCHEME`: ARGON2ID, BLF-CRYPT, SHA512-CRYPT or SHA256-CRYPT"}
	command.Main(&cli.App{
		Name:            "tern-passwd",
		Usage:           "make password hashes and edit the users file",
		UsageText:       "tern-passwd [--conf DIR] [--users FILE] hash|add|set|del|list [options] [USER]",
		HideHelpCommand: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "conf", EnvVars: []string{"TERN_CONF"}, Value: conf.DefaultDir, Usage: "control `DIR`ectory; the users file is DIR/users"},
			&cli.StringFlag{Name: "users", Aliases: []string{"u"}, EnvVars: []string{"TERN_USERS"}, Usage: "the users `FILE` (default: DIR/users)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return command.UsageError("unknown command %q", c.Args().First())
			}
			return command.UsageError("a command is required: hash, add, set, del or list")
		},
		Commands: []*cli.Command{
			{
				Name:      "hash",
				Usage:     "read a password and print its hash",
				UsageText: "tern-passwd hash [--scheme SCHEME] < password",
				Flags:     []cli.Flag{scheme},
				Action: func(c *cli.Context) error {
					if c.NArg() != 0 {
						return command.UsageError("hash takes no arguments")
					}
					return passwd(c).Hash()
				},
			},
			{
				Name:      "add",
				Usage:     "add an account with a new password",
				UsageText: "tern-passwd add --home DIR [--uid N] [--gid N] [--create] [--scheme SCHEME] USER",
				Flags: []cli.Flag{
					scheme,
					&cli.StringFlag{Name: "home", EnvVars: []string{"TERN_HOME"}, Usage: "the account's home `DIR`; mail goes to DIR/Maildir/"},
					&cli.IntFlag{Name: "uid", EnvVars: []string{"TERN_UID"}, Value: -1, DefaultText: "the servers' own", Usage: "numeric user id `N` the servers run as for this account"},
					&cli.IntFlag{Name: "gid", EnvVars: []string{"TERN_GID"}, Value: -1, DefaultText: "the servers' own", Usage: "numeric group id `N`"},
					&cli.BoolFlag{Name: "create", Aliases: []string{"c"}, EnvVars: []string{"TERN_CREATE"}, Usage: "create the home and its Maildir, mode 0700, owned by uid:gid"},
				},
				Action: func(c *cli.Context) error {
					user, err := oneUser(c)
					if err != nil {
						return err
					}
					if c.Int("uid") < -1 || c.Int("gid") < -1 {
						return command.UsageError("--uid and --gid take a number from 0 up")
					}
					return passwd(c).Add(auth.NewUser{Name: user, UID: c.Int("uid"), GID: c.Int("gid"), Home: c.String("home"), Create: c.Bool("create")})
				},
			},
			{
				Name:      "set",
				Usage:     "give an account a new password",
				UsageText: "tern-passwd set [--scheme SCHEME] USER",
				Flags:     []cli.Flag{scheme},
				Action: func(c *cli.Context) error {
					user, err := oneUser(c)
					if err != nil {
						return err
					}
					return passwd(c).Set(user)
				},
			},
			{
				Name:      "del",
				Usage:     "remove an account (its mail stays)",
				UsageText: "tern-passwd del USER",
				Action: func(c *cli.Context) error {
					user, err := oneUser(c)
					if err != nil {
						return err
					}
					return passwd(c).Del(user)
				},
			},
			{
				Name:      "list",
				Usage:     "list the accounts: name, uid, gid, home",
				UsageText: "tern-passwd list",
				Action: func(c *cli.Context) error {
					if c.NArg() != 0 {
						return command.UsageError("list takes no arguments")
					}
					return passwd(c).List()
				},
			},
		},
	})
}
