package mta

import (
	"strings"
	"testing"
)

func TestXtext(t *testing.T) {
	for _, c := range []struct{ raw, enc string }{
		{"", ""},
		{"QQ314159", "QQ314159"},
		{"a b+c=d", "a+20b+2Bc+3Dd"},
		{"tab\there\n", "tab+09here+0A"},
		{"zoë", "zo+C3+AB"},
		{"\x00\xff~!", "+00+FF~!"},
	} {
		if got := EncodeXtext(c.raw); got != c.enc {
			t.Errorf("EncodeXtext(%q) = %q, want %q", c.raw, got, c.enc)
		}
		if got, err := DecodeXtext(c.enc); err != nil || got != c.raw {
			t.Errorf("DecodeXtext(%q) = %q, %v; want %q", c.enc, got, err, c.raw)
		}
	}
	for _, bad := range []string{"a b", "a=b", "+", "+4", "+4g", "+4a", "x\ty", "é"} {
		if got, err := DecodeXtext(bad); err == nil {
			t.Errorf("DecodeXtext(%q) = %q, no error", bad, got)
		}
	}
}

func FuzzXtext(f *testing.F) {
	for _, s := range []string{"", "a+20b", "+C3+AB", "+", "a=b", "+0a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// Whatever decodes, encodes to what decodes the same ("+21" and
		// "!" are both "!", RFC 3461 §4 allows either).
		if raw, err := DecodeXtext(s); err == nil {
			if again, err := DecodeXtext(EncodeXtext(raw)); err != nil || again != raw {
				t.Fatalf("DecodeXtext(%q) = %q, encoded %q, decoded %q, %v", s, raw, EncodeXtext(raw), again, err)
			}
		}
		// Whatever is encoded, decodes back, and holds no blank or line end.
		enc := EncodeXtext(s)
		if strings.ContainsAny(enc, " \t\r\n") {
			t.Fatalf("EncodeXtext(%q) = %q", s, enc)
		}
		if raw, err := DecodeXtext(enc); err != nil || raw != s {
			t.Fatalf("DecodeXtext(EncodeXtext(%q)) = %q, %v", s, raw, err)
		}
	})
}

func TestCheckEnvID(t *testing.T) {
	for v, ok := range map[string]bool{
		"QQ314159":               true,
		"with space and ~!":      true,
		strings.Repeat("x", 100): true,
		strings.Repeat("x", 101): false,
		"":                       false,
		"tab\t":                  false,
		"zoë":                    false,
	} {
		if err := CheckEnvID(v); (err == nil) != ok {
			t.Errorf("CheckEnvID(%q) = %v", v, err)
		}
	}
}

func TestCheckORcpt(t *testing.T) {
	for _, c := range []struct{ in, out string }{
		{"rfc822;bob@example.org", "RFC822;bob@example.org"},
		{"UTF-8;zoë@example.org", "UTF-8;zoë@example.org"},
		{"x400;a;b", "X400;a;b"},
		{"rfc822;" + strings.Repeat("x", 493), "RFC822;" + strings.Repeat("x", 493)},
		{"rfc822;" + strings.Repeat("x", 494), ""},
		{"bob@example.org", ""},
		{";bob@example.org", ""},
		{"rfc822;", ""},
		{"rfc 822;bob", ""},
		{"rfc822;bob\t@x", ""},
		{"rfc822;bob\u0085@x", ""},
		{"utf-8;bob\xff@x", ""},
	} {
		got, err := CheckORcpt(c.in)
		if (err == nil) != (c.out != "") || got != c.out {
			t.Errorf("CheckORcpt(%q) = %q, %v; want %q", c.in, got, err, c.out)
		}
	}
}
