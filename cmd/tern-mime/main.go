// tern-mime builds messages from files and takes them apart again, for
// people and shell scripts: what mpack, munpack and ripmime do, with RFC 2231
// names, bounded memory on any input, and names that cannot escape the
// output directory. The work is done by package mime; this file only wires
// flags to it.
package main

import (
	"crypto/rand"
	"os"
	"time"

	"github.com/tern-mail/tern/internal/command"
	"github.com/tern-mail/tern/internal/logging"
	"github.com/tern-mail/tern/mime"
	"github.com/urfave/cli/v2"
)

func main() {
	log := logging.New("tern-mime", os.Stderr, nil)
	command.Main(&cli.App{
		Name:  "tern-mime",
		Usage: "pack files into a message, unpack its parts into files, show its structure, print its header fields",
		UsageText: "tern-mime pack [-s SUBJECT] [-f FROM] [-t TO]... [-c CC]... [-b BODYFILE] [--html HTMLFILE] FILE... > message\n" +
			"tern-mime unpack [-C DIR] [--text] [--all] < message\n" +
			"tern-mime show [-t] [PART] < message\n" +
			"tern-mime header [-d] [-a] NAME... < message",
		Description:               "Exit status: 0 done; 1 no such header field; 64 usage; 65 nothing usable in the message;\n66 a file to pack is missing; 73 cannot create a file; 74 I/O error. See tern-mime(1).",
		HideHelpCommand:           true,
		DisableSliceFlagSeparator: true, // addresses have commas of their own
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return command.UsageError("unknown command %q: use pack, unpack, show or header", c.Args().First())
			}
			return command.UsageError("a command is needed: pack, unpack, show or header")
		},
		Commands: []*cli.Command{
			{
				Name:      "pack",
				Usage:     "write a message with a text part and one attachment per FILE on standard output",
				ArgsUsage: "FILE...",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "subject", Aliases: []string{"s"}, EnvVars: []string{"TERN_SUBJECT"}, Usage: "the `SUBJECT`"},
					&cli.StringFlag{Name: "from", Aliases: []string{"f"}, EnvVars: []string{"TERN_FROM"}, Usage: "the `FROM` address"},
					&cli.StringSliceFlag{Name: "to", Aliases: []string{"t"}, EnvVars: []string{"TERN_TO"}, Usage: "a `TO` address (repeatable)"},
					&cli.StringSliceFlag{Name: "cc", Aliases: []string{"c"}, EnvVars: []string{"TERN_CC"}, Usage: "a `CC` address (repeatable)"},
					&cli.StringFlag{Name: "body", Aliases: []string{"b"}, EnvVars: []string{"TERN_BODY"}, Usage: "the text part from `BODYFILE` (default: standard input when it is not a terminal)"},
					&cli.StringFlag{Name: "html", EnvVars: []string{"TERN_HTML"}, Usage: "an HTML alternative of the text from `HTMLFILE`"},
					&cli.BoolFlag{Name: "crlf", EnvVars: []string{"TERN_CRLF"}, Usage: "end lines with CRLF instead of LF"},
				},
				Action: func(c *cli.Context) error {
					host, _ := os.Hostname()
					o := mime.PackOptions{
						Subject:  c.String("subject"),
						From:     c.String("from"),
						To:       c.StringSlice("to"),
						Cc:       c.StringSlice("cc"),
						HTML:     c.String("html"),
						Files:    c.Args().Slice(),
						Now:      time.Now(),
						Hostname: host,
						Rand:     rand.Reader,
						TempDir:  os.TempDir(),
						CRLF:     c.Bool("crlf"),
					}
					switch b := c.String("body"); {
					case b == "-":
						o.Body = os.Stdin
					case b != "":
						f, err := os.Open(b)
						if err != nil {
							return command.UsageError("open body file: %v", err)
						}
						defer f.Close()
						o.Body = f
					case !isTerminal(os.Stdin):
						o.Body = os.Stdin
					}
					return mime.Pack(os.Stdout, o)
				},
			},
			{
				Name:  "unpack",
				Usage: "write the attachments of the message on standard input into files",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "dir", Aliases: []string{"C"}, EnvVars: []string{"TERN_DIR"}, Value: ".", Usage: "write the files into `DIR`, made when missing"},
					&cli.BoolFlag{Name: "text", EnvVars: []string{"TERN_TEXT"}, Usage: "write the text parts too"},
					&cli.BoolFlag{Name: "all", EnvVars: []string{"TERN_ALL"}, Usage: "write every leaf part"},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() > 0 {
						return command.UsageError("unpack reads the message from standard input; unexpected argument %q", c.Args().First())
					}
					_, err := mime.Unpack(os.Stdin, mime.UnpackOptions{Dir: c.String("dir"), Text: c.Bool("text"), All: c.Bool("all"), Out: os.Stdout, Log: log})
					return err
				},
			},
			{
				Name:      "show",
				Usage:     "print the structure of the message (-t), or one part of it decoded",
				ArgsUsage: "[PART]",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "tree", Aliases: []string{"t"}, EnvVars: []string{"TERN_TREE"}, Usage: "print the structure as an indented tree"},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() > 1 {
						return command.UsageError("show takes one PART at most, got %d", c.NArg())
					}
					if c.Bool("tree") {
						if c.NArg() > 0 {
							return command.UsageError("show -t takes no PART")
						}
						return mime.Tree(os.Stdin, os.Stdout, log)
					}
					return mime.Show(os.Stdin, os.Stdout, c.Args().First(), log)
				},
			},
			{
				Name:      "header",
				Usage:     "print the values of the named header fields",
				ArgsUsage: "NAME...",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "decode", Aliases: []string{"d"}, EnvVars: []string{"TERN_DECODE"}, Usage: "decode RFC 2047 encoded words into UTF-8"},
					&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, EnvVars: []string{"TERN_ALL"}, Usage: "print every occurrence of a field, not only the first"},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() == 0 {
						return command.UsageError("header needs at least one field NAME")
					}
					return mime.Fields(os.Stdin, os.Stdout, c.Args().Slice(), mime.FieldOptions{Decode: c.Bool("decode"), All: c.Bool("all")})
				},
			},
		},
	})
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
