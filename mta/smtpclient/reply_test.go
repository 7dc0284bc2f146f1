package smtpclient

import (
	"bufio"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

func TestReadReply(t *testing.T) {
	tests := []struct {
		name, in string
		want     Reply
		err      bool
	}{
		{"one line", "250 ok\r\n", Reply{Code: 250, Lines: []string{"ok"}}, false},
		{"enhanced", "550 5.1.1 no such user\r\n", Reply{Code: 550, Enhanced: smtp.EnhancedCode{5, 1, 1}, Lines: []string{"no such user"}}, false},
		{"multi-line enhanced on each", "451-4.3.0 one\r\n451-4.3.0 two\r\n451 4.3.0 three\r\n",
			Reply{Code: 451, Enhanced: smtp.EnhancedCode{4, 3, 0}, Lines: []string{"one", "two", "three"}}, false},
		{"code alone", "250\r\n", Reply{Code: 250, Lines: []string{""}}, false},
		{"bare LF", "220 mx.test ESMTP\n", Reply{Code: 220, Lines: []string{"mx.test ESMTP"}}, false},
		{"enhanced of another class is text", "550 4.1.1 odd\r\n", Reply{Code: 550, Lines: []string{"4.1.1 odd"}}, false},
		{"three-digit detail", "554 5.7.130 x\r\n", Reply{Code: 554, Enhanced: smtp.EnhancedCode{5, 7, 130}, Lines: []string{"x"}}, false},
		{"four digits is text", "554 5.7.1300 x\r\n", Reply{Code: 554, Lines: []string{"5.7.1300 x"}}, false},
		{"enhanced alone", "250 2.0.0\r\n", Reply{Code: 250, Enhanced: smtp.EnhancedCode{2, 0, 0}, Lines: []string{""}}, false},
		{"no code", "hello\r\n", Reply{}, true},
		{"code changes", "250-a\r\n550 b\r\n", Reply{}, true},
		{"bad separator", "250xok\r\n", Reply{}, true},
		{"class 6", "650 what\r\n", Reply{}, true},
		{"cut short", "250-a\r\n", Reply{}, true},
		{"too many lines", strings.Repeat("250-x\r\n", 200) + "250 x\r\n", Reply{}, true},
		{"line too long", "250 " + strings.Repeat("x", MaxReplyLine) + "\r\n", Reply{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readReply(bufio.NewReaderSize(strings.NewReader(tt.in), MaxReplyLine), DefaultMaxReplyLines)
			if (err != nil) != tt.err {
				t.Fatalf("err = %v, want error %v", err, tt.err)
			}
			if !tt.err && !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestReplyString(t *testing.T) {
	r := Reply{Code: 451, Enhanced: smtp.EnhancedCode{4, 3, 0}, Lines: []string{"one", "two"}}
	if got := r.String(); got != "451 4.3.0 one two" {
		t.Errorf("String = %q", got)
	}
	if r.Status() != "4.3.0" || !r.Temporary() {
		t.Errorf("Status = %q, Temporary = %v", r.Status(), r.Temporary())
	}
	if got := (Reply{Code: 554}).Status(); got != "5.0.0" {
		t.Errorf("derived Status = %q, want 5.0.0 (RFC 3463 §3.1)", got)
	}
	var se *smtp.SMTPError
	if !errors.As(r.Err(), &se) || se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 0}) {
		t.Errorf("Err = %#v", r.Err())
	}
}

func TestParseEHLO(t *testing.T) {
	r, err := readReply(bufio.NewReader(strings.NewReader("250-mx.test greets you\r\n250-SIZE 10240000\r\n250-PIPELINING\r\n"+
		"250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250-AUTH=CRAM-MD5 plain\r\n"+
		"250-REQUIRETLS\r\n250-X-UNKNOWN a b\r\n250-LIMITS MAILMAX=10 RCPTMAX=50\r\n250 ENHANCEDSTATUSCODES\r\n")), 100)
	if err != nil {
		t.Fatal(err)
	}
	got := parseEHLO(r)
	want := Extensions{EHLO: true, Size: 10240000, SizeOffered: true, Pipelining: true, EightBitMIME: true, SMTPUTF8: true,
		DSN: true, StartTLS: true, RequireTLS: true, EnhancedStatusCodes: true, Auth: []string{"PLAIN", "LOGIN", "CRAM-MD5"}, RcptMax: 50}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	for _, tt := range []struct {
		line string
		size int64
	}{{"SIZE", 0}, {"SIZE 0", 0}, {"SIZE x", 0}, {"size 100", 100}, {"SIZE -5", 0}} {
		e := parseEHLO(Reply{Code: 250, Lines: []string{"hi", tt.line}})
		if !e.SizeOffered || e.Size != tt.size {
			t.Errorf("%q: SizeOffered %v Size %d, want true %d", tt.line, e.SizeOffered, e.Size, tt.size)
		}
	}
	if e := parseEHLO(Reply{Code: 250, Lines: []string{"hi"}}); e.Pipelining || !e.EHLO {
		t.Errorf("greeting line alone: %+v", e)
	}
}

func TestXText(t *testing.T) {
	for in, want := range map[string]string{
		"plain@example.org": "plain@example.org",
		"a+b=c":             "a+2Bb+3Dc",
		"sp ace":            "sp+20ace",
		"ü":                 "+C3+BC",
		"":                  "",
	} {
		if got := XText(in); got != want {
			t.Errorf("XText(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUTF8AddrXText(t *testing.T) {
	for _, tt := range []struct {
		in      string
		unitext bool
		want    string
	}{
		{"a@b.example", false, "a@b.example"},
		{"dörte@b.example", false, `d\x{F6}rte@b.example`},
		{"dörte@b.example", true, "dörte@b.example"},
		{"a+b=c\\d e", true, `a\x{2B}b\x{3D}c\x{5C}d\x{20}e`},
	} {
		if got := UTF8AddrXText(tt.in, tt.unitext); got != tt.want {
			t.Errorf("UTF8AddrXText(%q, %v) = %q, want %q", tt.in, tt.unitext, got, tt.want)
		}
	}
}

func FuzzReadReply(f *testing.F) {
	for _, s := range []string{"250 ok\r\n", "250-a\r\n250 b\r\n", "550 5.1.1 x\r\n", "250 2.0.0\r\n", "421-4.3.2 a\r\n421 4.3.2 b\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := readReply(bufio.NewReaderSize(strings.NewReader(string(in)), 64), 8)
		if err != nil {
			return
		}
		if r.Code < 200 || r.Code > 599 || len(r.Lines) == 0 || len(r.Lines) > 8 {
			t.Fatalf("accepted a reply out of bounds: %+v", r)
		}
		if r.Enhanced != smtp.EnhancedCodeNotSet && r.Enhanced[0] != r.Code/100 {
			t.Fatalf("enhanced class %d for code %d", r.Enhanced[0], r.Code)
		}
		_ = r.String()
	})
}

func FuzzParseEHLO(f *testing.F) {
	f.Add([]byte("250-mx\r\n250-SIZE 100\r\n250-AUTH PLAIN\r\n250 PIPELINING\r\n"))
	f.Add([]byte("250-mx\r\n250-AUTH=LOGIN\r\n250 SIZE\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := readReply(bufio.NewReaderSize(strings.NewReader(string(in)), 256), 100)
		if err != nil {
			return
		}
		e := parseEHLO(r)
		if e.Size < 0 || len(e.Auth) > maxAuthMechs || e.RcptMax < 0 {
			t.Fatalf("out of bounds: %+v", e)
		}
	})
}
