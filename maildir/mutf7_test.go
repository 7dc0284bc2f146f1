package maildir

import (
	"errors"
	"testing"
	"unicode/utf8"
)

func TestMUTF7Table(t *testing.T) {
	for _, tc := range []struct{ utf8, mutf7 string }{
		{"INBOX", "INBOX"},
		{"Entwürfe", "Entw&APw-rfe"},
		{"~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"},
		{"Tom & Jerry", "Tom &- Jerry"},
		{"&", "&-"},
		{"&&", "&-&-"},
		{"", ""},
		{"😀", "&2D3eAA-"},
		{"Lists.Go", "Lists.Go"},
		{"日本語&x", "&ZeVnLIqe-&-x"},
		{"a\tb", "a&AAk-b"},
	} {
		got, err := EncodeMUTF7(tc.utf8)
		if err != nil || got != tc.mutf7 {
			t.Errorf("EncodeMUTF7(%q) = %q, %v; want %q", tc.utf8, got, err, tc.mutf7)
		}
		back, err := DecodeMUTF7(tc.mutf7)
		if err != nil || back != tc.utf8 {
			t.Errorf("DecodeMUTF7(%q) = %q, %v; want %q", tc.mutf7, back, err, tc.utf8)
		}
	}
}

func TestMUTF7Refuses(t *testing.T) {
	for _, s := range []string{
		"&",             // unterminated
		"&U,BTFw",       // unterminated
		"&AGE-",         // encoded printable ASCII "a"
		"&ZeVnLA-&Iqe-", // adjacent runs (and not canonical)
		"&2D0-",         // lone high surrogate
		"&3gA-",         // lone low surrogate
		"&APx-",         // leftover bits
		"&A-",           // one base64 digit
		"&U/BTFw-",      // "/" is not modified base64
		"Entwürfe",      // 8-bit byte
		"a\x01b",        // control byte
	} {
		if got, err := DecodeMUTF7(s); err == nil {
			t.Errorf("DecodeMUTF7(%q) = %q, want an error", s, got)
		} else if !errors.Is(err, ErrBadMUTF7) {
			t.Errorf("DecodeMUTF7(%q) error %v does not wrap ErrBadMUTF7", s, err)
		}
	}
	if _, err := EncodeMUTF7("\xff"); err == nil {
		t.Error("EncodeMUTF7 of invalid UTF-8 gave no error")
	}
}

func FuzzMUTF7(f *testing.F) {
	for _, s := range []string{"Entwürfe", "~peter/mail/&U,BTFw-/&ZeVnLIqe-", "&-", "😀x&", "&AGE-", "&2D3eAA-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if utf8.ValidString(s) {
			enc, err := EncodeMUTF7(s)
			if err != nil {
				t.Fatalf("EncodeMUTF7(%q): %v", s, err)
			}
			dec, err := DecodeMUTF7(enc)
			if err != nil || dec != s {
				t.Fatalf("round trip %q -> %q -> %q, %v", s, enc, dec, err)
			}
		}
		// Whatever decodes is canonical: encoding it gives it back.
		if dec, err := DecodeMUTF7(s); err == nil {
			enc, err := EncodeMUTF7(dec)
			if err != nil || enc != s {
				t.Fatalf("DecodeMUTF7(%q) = %q, which encodes to %q, %v", s, dec, enc, err)
			}
		}
	})
}
