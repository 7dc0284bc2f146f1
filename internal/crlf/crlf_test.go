package crlf

import (
	"bytes"
	"testing"
)

func TestLFWriter(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"a\r\nb\r\n", "a\nb\n"},
		{"a\rb\r\n", "a\rb\n"},
		{"a\r", "a\r"},
		{"\r\r\n", "\r\n"},
		{"no line end", "no line end"},
	} {
		// Every split of the input into two writes gives the same.
		for i := 0; i <= len(c.in); i++ {
			var b bytes.Buffer
			w := &LFWriter{W: &b}
			w.Write([]byte(c.in[:i]))
			w.Write([]byte(c.in[i:]))
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			if b.String() != c.want {
				t.Errorf("%q split at %d: %q, want %q", c.in, i, b.String(), c.want)
			}
		}
	}
}
