package mime

import (
	"bufio"
	"io"
	"strings"

	"github.com/tern-mail/tern/internal/sysexit"
)

// ErrNoField is returned by Fields when none of the named fields is in the
// header; the command exits 1 for it, as grep does, so that scripts can
// test for a field with `if tern-mime header X-Spam < msg`.
var ErrNoField = sysexit.New(1, "")

// FieldOptions says how Fields prints.
type FieldOptions struct {
	Decode bool // decode RFC 2047 encoded words into UTF-8
	All    bool // every occurrence of a field, not only the first
}

// Fields writes the values of the named header fields of the message on r
// to out, one a line, in the order the names are given (and, with All, in
// message order within a name). A value is unfolded (RFC 5322 §2.2.3);
// decoded, any control character in it becomes a space, so that an encoded
// newline cannot forge a second line for the script that reads it.
func Fields(r io.Reader, out io.Writer, names []string, o FieldOptions) error {
	hd, err := readHeader(bufio.NewReaderSize(r, entityBuf))
	if err != nil {
		return sysexit.New(sysexit.IOErr, "read the header: %w", err)
	}
	bw := bufio.NewWriter(out)
	found := false
	for _, name := range names {
		for _, f := range hd.fields {
			if !strings.EqualFold(f.Name, name) {
				continue
			}
			found = true
			v := f.Value
			if o.Decode {
				v = decodeWords(v)
			}
			bw.WriteString(oneLine(v))
			bw.WriteByte('\n')
			if !o.All {
				break
			}
		}
	}
	if err := bw.Flush(); err != nil {
		return sysexit.New(sysexit.IOErr, "write fields: %w", err)
	}
	if !found {
		return ErrNoField
	}
	return nil
}

// DecodeHeader decodes the RFC 2047 encoded words of a field value into
// UTF-8, with control characters made spaces.
func DecodeHeader(v string) string { return oneLine(decodeWords(v)) }

func oneLine(s string) string {
	if !strings.ContainsFunc(s, isControl) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if isControl(r) {
			return ' '
		}
		return r
	}, s)
}

func isControl(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }
