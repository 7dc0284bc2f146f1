package address

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
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
		{"bob@bücher..org", "", "empty label"},
		{"bob@bücher_x.org", "", "internationalised domain"},
		{"bob@exa\nmple.org", "", "control"},
		{strings.Repeat("a", 65) + "@x.org", "", "64 octets"},
		{"a@" + strings.Repeat("b", 64) + ".org", "", "63 octets"},
		{`"unterminated@x.org`, "", "unterminated"},
		{"bob@[1.2.3.4", "", "unterminated"},
		{"\xff@x.org", "", "UTF-8"},
	} {
		got, err := Check(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Check(%q) = %q, %v; want an error with %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.out {
			t.Errorf("Check(%q) = %q, %v; want %q", c.in, got, err, c.out)
		}
	}
}

// TestASCIIDomain: IDNA's lookup profile for names that are not ASCII
// (samples of RFC 3492 §7.1 and IDNA examples, UTS #46 mapping of case and
// width, refusals of RFC 5891 §5.4), lower-casing alone for ASCII names.
func TestASCIIDomain(t *testing.T) {
	for in, want := range map[string]string{
		"bücher.example":            "xn--bcher-kva.example",
		"BÜCHER.Example.":           "xn--bcher-kva.example",
		"münchen.de":                "xn--mnchen-3ya.de",
		"例え.jp":                     "xn--r8jz45g.jp",
		"他们为什么不说中文":                 "xn--ihqwcrb4cv8a8dqg056pqjye",
		"pročprostěnemluvíčesky.cz": "xn--proprostnemluvesky-uyb24dma41a.cz",
		"ｅｘａｍｐｌｅ．ｃｏｍ.ü":             "example.com.xn--tda",
		"ASCII.Example":             "ascii.example",
		"_dmarc.Example":            "_dmarc.example",
		"xn--bcher-kva.example":     "xn--bcher-kva.example",
		"faß.de":                    "xn--fa-hia.de",
		"bücher_x.example":          "",
		"-bücher.example":           "",
		"\u200dbücher.example":      "",
	} {
		got, err := ASCIIDomain(in)
		if want == "" {
			if err == nil {
				t.Errorf("ASCIIDomain(%q) = %q, want an error", in, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("ASCIIDomain(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func FuzzCheck(f *testing.F) {
	for _, s := range []string{"bob@example.org", `"a b"@x`, "bob@bücher.example", "x@[1.2.3.4]", "a..b@c", "<>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := Check(s)
		if err != nil {
			return
		}
		// What is accepted is stable: checking it again gives it back.
		b, err := Check(a)
		if err != nil || a != b {
			t.Fatalf("Check(%q) = %q, then %q, %v", s, a, b, err)
		}
		if strings.ContainsAny(a, "\r\n\t\x00") {
			t.Fatalf("control character accepted in %q", a)
		}
	})
}
