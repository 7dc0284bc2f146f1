package smtpclient

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"mime/quotedprintable"
	"strings"
	"testing"

	"github.com/emersion/go-message/textproto"
)

func TestDotWriter(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ".\r\n"},
		{"a\n", "a\r\n.\r\n"},
		{"a", "a\r\n.\r\n"},
		{".\n", "..\r\n.\r\n"},
		{"a\n.b\n..c\n", "a\r\n..b\r\n...c\r\n.\r\n"},
		{"crlf\r\nstays\r\n", "crlf\r\nstays\r\n.\r\n"},
		{"mixed\r\n.x\nend", "mixed\r\n..x\r\nend\r\n.\r\n"},
		{"\n\n.\n", "\r\n\r\n..\r\n.\r\n"},
		{"a.\n b.c\n", "a.\r\n b.c\r\n.\r\n"},
		{"ends in CR\r", "ends in CR\r\n.\r\n"},
		{"bare\rcr\n", "bare\rcr\r\n.\r\n"},
	}
	for _, tt := range tests {
		// Every split into two writes must give the same stream: state
		// crosses Write calls.
		for cut := 0; cut <= len(tt.in); cut++ {
			var buf bytes.Buffer
			bw := bufio.NewWriter(&buf)
			dw := newDotWriter(bw)
			dw.Write([]byte(tt.in[:cut]))
			dw.Write([]byte(tt.in[cut:]))
			dw.Close()
			bw.Flush()
			if buf.String() != tt.want {
				t.Errorf("%q cut at %d: got %q, want %q", tt.in, cut, buf.String(), tt.want)
			}
		}
	}
}

// undot reverses the DATA encoding: what a server stores.
func undot(s string) string {
	s = strings.TrimSuffix(s, ".\r\n")
	var b strings.Builder
	for _, l := range strings.SplitAfter(s, "\r\n") {
		b.WriteString(strings.TrimPrefix(l, "."))
	}
	return b.String()
}

func FuzzDotWriter(f *testing.F) {
	f.Add([]byte("a\n.b\r\n"), 3)
	f.Fuzz(func(t *testing.T, in []byte, cut int) {
		if cut < 0 || cut > len(in) {
			cut = len(in) / 2
		}
		var buf bytes.Buffer
		bw := bufio.NewWriter(&buf)
		dw := newDotWriter(bw)
		dw.Write(in[:cut])
		dw.Write(in[cut:])
		dw.Close()
		bw.Flush()
		out := buf.String()
		if !strings.HasSuffix(out, "\r\n.\r\n") && out != ".\r\n" {
			t.Fatalf("not terminated: %q", out)
		}
		body := out[:len(out)-3]
		if strings.Contains(body, "\r\n.\r\n") || strings.HasPrefix(body, ".\r\n") {
			t.Fatalf("terminator inside the text: %q", out)
		}
		for i := 0; i < len(body); i++ {
			if body[i] == '\n' && (i == 0 || body[i-1] != '\r') {
				t.Fatalf("bare LF at %d: %q", i, out)
			}
		}
		// The text comes back, with CRLF line ends.
		want := strings.ReplaceAll(strings.ReplaceAll(string(in), "\r\n", "\n"), "\n", "\r\n")
		if want != "" && !strings.HasSuffix(want, "\r\n") {
			if strings.HasSuffix(want, "\r") {
				want += "\n"
			} else {
				want += "\r\n"
			}
		}
		if got := undot(out); got != want {
			t.Fatalf("round trip: got %q, want %q", got, want)
		}
	})
}

func TestTo7Bit(t *testing.T) {
	tests := []struct {
		name, in string
		err      error
		check    func(t *testing.T, out string)
	}{
		{name: "8-bit text body", in: "From: a@b.example\nSubject: hi\n\nCaf\xc3\xa9 au lait\n.a dot line\n", check: func(t *testing.T, out string) {
			h, body := readMessage(t, out)
			if h.Get("Content-Transfer-Encoding") != "quoted-printable" || h.Get("Mime-Version") != "1.0" {
				t.Errorf("header: %v", h.Map())
			}
			got, _ := io.ReadAll(quotedprintable.NewReader(strings.NewReader(body)))
			if string(got) != "Caf\xc3\xa9 au lait\r\n.a dot line\r\n" {
				t.Errorf("decoded body %q", got)
			}
		}},
		{name: "multipart", in: "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=XX\nContent-Transfer-Encoding: 8bit\n\npreamble\n--XX\n" +
			"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n\xc3\xbcber\n--XX\n" +
			"Content-Type: application/octet-stream\nContent-Transfer-Encoding: binary\n\n\x00\xff\xfe\n--XX\n" +
			"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\nYWJj\n--XX--\n", check: func(t *testing.T, out string) {
			h, body := readMessage(t, out)
			if h.Get("Content-Transfer-Encoding") != "7bit" {
				t.Errorf("multipart CTE %q", h.Get("Content-Transfer-Encoding"))
			}
			mr := textproto.NewMultipartReader(strings.NewReader(body), "XX")
			var parts []string
			for {
				p, err := mr.NextPart()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(p)
				parts = append(parts, p.Header.Get("Content-Transfer-Encoding")+": "+strings.TrimSpace(string(b)))
			}
			want := []string{"quoted-printable: =C3=BCber", "base64: AP/+", "base64: YWJj"}
			if strings.Join(parts, "|") != strings.Join(want, "|") {
				t.Errorf("parts %q, want %q", parts, want)
			}
		}},
		{name: "8-bit header", in: "Subject: caf\xc3\xa9\n\nbody\xff\n", err: ErrHeader8Bit},
		{name: "8-bit part header", in: "Content-Type: multipart/mixed; boundary=B\n\n--B\nContent-Description: \xff\n\nx\n--B--\n", err: ErrHeader8Bit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := To7Bit(&buf, strings.NewReader(tt.in))
			if tt.err != nil {
				var ce *ConversionError
				if !errors.As(err, &ce) || !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want a ConversionError of %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, c := range buf.Bytes() {
				if c >= 0x80 {
					t.Fatalf("8-bit octet at %d of %q", i, buf.String())
				}
			}
			tt.check(t, buf.String())
		})
	}
}

func readMessage(t *testing.T, s string) (textproto.Header, string) {
	t.Helper()
	br := bufio.NewReader(strings.NewReader(s))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(br)
	return h, string(b)
}

func FuzzTo7Bit(f *testing.F) {
	f.Add([]byte("Subject: x\n\n\xff\n"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=B\n\n--B\nContent-Type: message/rfc822\n\nSubject: y\n\n\xc3\xa9\n--B--\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var buf bytes.Buffer
		if err := To7Bit(&buf, bytes.NewReader(in)); err != nil {
			return
		}
		for i, c := range buf.Bytes() {
			if c >= 0x80 {
				t.Fatalf("8-bit octet at %d after conversion of %q: %q", i, in, buf.Bytes())
			}
		}
	})
}
