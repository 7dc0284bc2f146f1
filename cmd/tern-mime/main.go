// tern-mime builds messages from files and takes them apart again, for
// people and shell scripts: what mpack, munpack and ripmime do, with RFC 2231
// names, bounded memory on any input, and names that cannot escape the
// output directory. The work is done by package mime; this file only wires
// flags to it, through package lean rather than urfave/cli: scripts start
// tern-mime once per message, as they start munpack, and urfave/cli's
// start-up would cost more than unpacking an ordinary message does
// (tests/bench/mime.sh's "ordinary" and "start" rows).
package main

import (
	"crypto/rand"
	"os"
	"time"

	"github.com/tern-mail/tern/internal/command/lean"
	"github.com/tern-mail/tern/internal/logging"
	"github.com/tern-mail/tern/mime"
)

func main() {
	log := logging.New("tern-mime", os.Stderr, nil)
	lean.Main(&lean.App{
		Name:  "tern-mime",
		Usage: "pack files into a message, unpack its parts into files, show its structure, print its header fields",
		UsageText: "tern-mime pack [-s SUBJECT] [-f FROM] [-t TO]... [-c CC]... [-b BODYFILE] [--html HTMLFILE] FILE... > message\n" +
			"tern-mime unpack [-C DIR] [--text] [--all] < message\n" +
			"tern-mime show [-t] [PART] < message\n" +
			"tern-mime header [-d] [-a] NAME... < message",
		Description: "Exit status: 0 done; 1 no such header field; 64 usage; 65 nothing usable in the message;\n66 a file to pack is missing; 73 cannot create a file; 74 I/O error. See tern-mime(1).",
		Action: func(c *lean.Context) error {
			if c.NArg() > 0 {
				return lean.UsageError("unknown command %q: use pack, unpack, show or header", first(c.Args()))
			}
			return lean.UsageError("a command is needed: pack, unpack, show or header")
		},
		Commands: []lean.Command{
			{
				Name:      "pack",
				Usage:     "write a message with a text part and one attachment per FILE on standard output",
				ArgsUsage: "FILE...",
				Flags: []lean.Flag{
					{Name: "subject", Aliases: []string{"s"}, EnvVars: []string{"TERN_SUBJECT"}, Usage: "the `SUBJECT`"},
					{Name: "from", Aliases: []string{"f"}, EnvVars: []string{"TERN_FROM"}, Usage: "the `FROM` address"},
					{Name: "to", Aliases: []string{"t"}, Kind: lean.Strings, EnvVars: []string{"TERN_TO"}, Usage: "a `TO` address (repeatable)"},
					{Name: "cc", Aliases: []string{"c"}, Kind: lean.Strings, EnvVars: []string{"TERN_CC"}, Usage: "a `CC` address (repeatable)"},
					{Name: "body", Aliases: []string{"b"}, EnvVars: []string{"TERN_BODY"}, Usage: "the text part from `BODYFILE` (default: standard input when it is not a terminal)"},
					{Name: "html", EnvVars: []string{"TERN_HTML"}, Usage: "an HTML alternative of the text from `HTMLFILE`"},
					{Name: "crlf", Kind: lean.Bool, EnvVars: []string{"TERN_CRLF"}, Usage: "end lines with CRLF instead of LF"},
				},
				Action: func(c *lean.Context) error {
					host, _ := os.Hostname()
					o := mime.PackOptions{
						Subject:  c.String("subject"),
						From:     c.String("from"),
						To:       c.Strings("to"),
						Cc:       c.Strings("cc"),
						HTML:     c.String("html"),
						Files:    c.Args(),
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
							return lean.UsageError("open body file: %v", err)
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
				Flags: []lean.Flag{
					{Name: "dir", Aliases: []string{"C"}, EnvVars: []string{"TERN_DIR"}, Value: ".", Usage: "write the files into `DIR`, made when missing"},
					{Name: "text", Kind: lean.Bool, EnvVars: []string{"TERN_TEXT"}, Usage: "write the text parts too"},
					{Name: "all", Kind: lean.Bool, EnvVars: []string{"TERN_ALL"}, Usage: "write every leaf part"},
				},
				Action: func(c *lean.Context) error {
					if c.NArg() > 0 {
						return lean.UsageError("unpack reads the message from standard input; unexpected argument %q", first(c.Args()))
					}
					_, err := mime.Unpack(os.Stdin, mime.UnpackOptions{Dir: c.String("dir"), Text: c.Bool("text"), All: c.Bool("all"), Out: os.Stdout, Log: log})
					return err
				},
			},
			{
				Name:      "show",
				Usage:     "print the structure of the message (-t), or one part of it decoded",
				ArgsUsage: "[PART]",
				Flags: []lean.Flag{
					{Name: "tree", Kind: lean.Bool, Aliases: []string{"t"}, EnvVars: []string{"TERN_TREE"}, Usage: "print the structure as an indented tree"},
				},
				Action: func(c *lean.Context) error {
					if c.NArg() > 1 {
						return lean.UsageError("show takes one PART at most, got %d", c.NArg())
					}
					if c.Bool("tree") {
						if c.NArg() > 0 {
							return lean.UsageError("show -t takes no PART")
						}
						return mime.Tree(os.Stdin, os.Stdout, log)
					}
					return mime.Show(os.Stdin, os.Stdout, first(c.Args()), log)
				},
			},
			{
				Name:      "header",
				Usage:     "print the values of the named header fields",
				ArgsUsage: "NAME...",
				Flags: []lean.Flag{
					{Name: "decode", Kind: lean.Bool, Aliases: []string{"d"}, EnvVars: []string{"TERN_DECODE"}, Usage: "decode RFC 2047 encoded words into UTF-8"},
					{Name: "all", Kind: lean.Bool, Aliases: []string{"a"}, EnvVars: []string{"TERN_ALL"}, Usage: "print every occurrence of a field, not only the first"},
				},
				Action: func(c *lean.Context) error {
					if c.NArg() == 0 {
						return lean.UsageError("header needs at least one field NAME")
					}
					return mime.Fields(os.Stdin, os.Stdout, c.Args(), mime.FieldOptions{Decode: c.Bool("decode"), All: c.Bool("all")})
				},
			},
		},
	})
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func first(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return args[0]
}
