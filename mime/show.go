package mime

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"unicode"

	"github.com/tern-mail/tern/internal/sysexit"
)

// Tree writes the structure of the message on r to out, one part a line,
// indented two spaces a level:
//
//   - multipart/mixed
//     1 text/plain charset=utf-8 encoding=quoted-printable size=1234
//     2 application/pdf encoding=base64 size=20480 name=report.pdf
//
// The number is what Show takes; "-" marks a multipart IMAP gives no
// number. Sizes are decoded sizes, so the whole message is decoded once.
func Tree(r io.Reader, out io.Writer, log *slog.Logger) error {
	bw := bufio.NewWriter(out)
	line := func(p *Part, size int64) {
		num := p.Number
		if num == "" {
			num = "-"
		}
		fmt.Fprintf(bw, "%s%s %s", strings.Repeat("  ", p.Depth), num, p.Type)
		if p.Charset != "" && (p.Leaf || p.Params["charset"] != "") {
			fmt.Fprintf(bw, " charset=%s", quoteField(p.Charset))
		}
		if p.Encoding != "" {
			fmt.Fprintf(bw, " encoding=%s", quoteField(p.Encoding))
		}
		if p.Leaf {
			fmt.Fprintf(bw, " size=%d", size)
		}
		if p.Disposition != "" {
			fmt.Fprintf(bw, " disposition=%s", quoteField(p.Disposition))
		}
		if p.Filename != "" {
			fmt.Fprintf(bw, " name=%s", quoteField(p.Filename))
		}
		bw.WriteByte('\n')
	}
	w := &walker{
		leaf: func(p *Part, body io.Reader) error {
			n, err := io.Copy(io.Discard, body)
			line(p, n)
			return err
		},
		container: func(p *Part) { line(p, 0) },
		warn:      warner(log),
	}
	err := w.walk(r)
	if ferr := bw.Flush(); err == nil && ferr != nil {
		err = sysexit.Wrap(sysexit.IOErr, fmt.Errorf("write the structure: %w", ferr))
	}
	if err != nil {
		return sysexit.Wrap(sysexit.IOErr, err)
	}
	if w.leaves == 0 || w.topFields == 0 && w.content == 0 {
		return sysexit.New(sysexit.DataErr, "nothing usable in the message: no parts")
	}
	return nil
}

// quoteField quotes a value with spaces, quotes, '=' or control characters
// so that a line of Tree splits back into its fields.
func quoteField(s string) string {
	for _, r := range s {
		if r <= ' ' || r == '"' || r == '=' || r == '\\' || !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// maxWarnings bounds what a hostile message can make us write to stderr.
const maxWarnings = 100

func warner(log *slog.Logger) func(part, msg string, args ...any) {
	n := 0
	return func(part, msg string, args ...any) {
		n++
		switch {
		case log == nil || n > maxWarnings+1:
		case n == maxWarnings+1:
			log.Warn("too many warnings; the rest are not shown", "part", label(part))
		default:
			log.Warn(msg, append([]any{"part", label(part)}, args...)...)
		}
	}
}

// Show writes one part of the message on r to out, decoded: the part
// numbered num, or with num "" the first text part that is not an
// attachment. Text is converted to UTF-8 from its charset; an unknown
// charset is reported and its bytes written as they are.
func Show(r io.Reader, out io.Writer, num string, log *slog.Logger) error {
	warn := warner(log)
	found := false
	var werr, composite error
	w := &walker{warn: warn}
	w.leaf = func(p *Part, body io.Reader) error {
		if num == "" && !p.Text() || num != "" && p.Number != num {
			return nil
		}
		found = true
		var src io.Reader = body
		if strings.HasPrefix(p.Type, "text/") {
			switch p.Charset {
			case "", "us-ascii", "utf-8", "utf8":
			default:
				cr, err := charsetReader(p.Charset, body)
				if err != nil {
					warn(p.Number, "unknown charset; shown as it is", "charset", p.Charset)
				} else {
					src = cr
				}
			}
		}
		if _, err := io.Copy(out, src); err != nil {
			werr = err
		}
		return errStop
	}
	if num != "" {
		w.container = func(p *Part) {
			if p.Number == num && !found {
				found = true
				composite = sysexit.New(sysexit.DataErr, "part %s is %s: see its parts with show -t", num, p.Type)
			}
		}
	}
	if err := w.walk(r); err != nil {
		return sysexit.Wrap(sysexit.IOErr, err)
	}
	if composite != nil {
		return composite
	}
	if werr != nil {
		return sysexit.New(sysexit.IOErr, "write part %s: %w", label(num), werr)
	}
	if !found {
		if num == "" {
			return sysexit.New(sysexit.DataErr, "no text part in the message")
		}
		return sysexit.New(sysexit.DataErr, "no part %s in the message", num)
	}
	return nil
}
