package mta

import (
	"strings"
	"testing"
)

func TestCheckAddress(t *testing.T) {
	for _, c := range []struct{ in, out, err string }{
		{"bob@example.org", "bob@example.org", ""},
		{"<Bob@Example.ORG>", "Bob@example.org", ""},
		{"bob", "bob", ""},
		{"bob+lists@example.org.", "bob+lists@example.org", ""},
		{`"john doe"@example.org`, `"john doe"@example.org`, ""},
		{"bob@[192.0.2.1]", "bob@[192.0.2.1]", ""},
		{"bob@bücher.example", "bob@xn--bcher-kva.example", ""},
		{"bob@BÜCHER.example", "bob@xn--bcher-kva.example", ""},
		{"jörg@example.org", "jörg@example.org", ""},
		{"", "", "empty address"},
		{"bob@", "", "empty domain"},
		{"@example.org", "", "empty local part"},
		{"a..b@example.org", "", "empty atom"},
		{".a@example.org", "", "empty atom"},
		{"a b@example.org", "", "needs quoting"},
		{"bob@exa mple.org", "", "only letters"},
		{"bob@-x.org", "", "only letters"},
		{"bob@x..org", "", "empty label"},
		{"bob@exa\nmple.org", "", "control"},
		{strings.Repeat("a", 65) + "@x.org", "", "64 octets"},
		{"a@" + strings.Repeat("b", 64) + ".org", "", "63 octets"},
		{`"unterminated@x.org`, "", "unterminated"},
		{"bob@[1.2.3.4", "", "unterminated"},
		{"\xff@x.org", "", "UTF-8"},
	} {
		got, err := CheckAddress(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("CheckAddress(%q) = %q, %v; want an error with %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.out {
			t.Errorf("CheckAddress(%q) = %q, %v; want %q", c.in, got, err, c.out)
		}
	}
}

// TestPunycode: the samples of RFC 3492 §7.1 that are plain code points,
// lower-cased, and IDNA examples.
func TestPunycode(t *testing.T) {
	for in, want := range map[string]string{
		"bücher":                 "xn--bcher-kva",
		"münchen":                "xn--mnchen-3ya",
		"例え":                     "xn--r8jz45g",
		"ليهمابتكلموشعربي؟":      "xn--egbpdaj6bu4bxfgehfvwxn",
		"他们为什么不说中文":              "xn--ihqwcrb4cv8a8dqg056pqjye",
		"pročprostěnemluvíčesky": "xn--proprostnemluvesky-uyb24dma41a",
		"ascii":                  "ascii",
	} {
		got, err := ToALabel(in)
		if err != nil || got != want {
			t.Errorf("ToALabel(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func FuzzCheckAddress(f *testing.F) {
	for _, s := range []string{"bob@example.org", `"a b"@x`, "bob@bücher.example", "x@[1.2.3.4]", "a..b@c", "<>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := CheckAddress(s)
		if err != nil {
			return
		}
		// What is accepted is stable: checking it again gives it back.
		b, err := CheckAddress(a)
		if err != nil || a != b {
			t.Fatalf("CheckAddress(%q) = %q, then %q, %v", s, a, b, err)
		}
		if strings.ContainsAny(a, "\r\n\t\x00") {
			t.Fatalf("control character accepted in %q", a)
		}
	})
}
