package mda

import (
	"strings"
	"testing"
)

func TestParseForward(t *testing.T) {
	in := "# comment\n\n\"|/usr/bin/filter -a, b\"\n|exec procmail\n\\bob, ~/Maildir/.Junk/\ncarol@example.org, dave@example.org\n/var/mail/bob/\n"
	rules, err := ParseForward(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Rule{
		{RulePipe, "/usr/bin/filter -a, b", 3}, {RulePipe, "exec procmail", 4},
		{RuleSelf, "bob", 5}, {RuleMaildir, "~/Maildir/.Junk/", 5},
		{RuleAddress, "carol@example.org", 6}, {RuleAddress, "dave@example.org", 6},
		{RuleMaildir, "/var/mail/bob/", 7},
	}
	if len(rules) != len(want) {
		t.Fatalf("%d rules: %+v", len(rules), rules)
	}
	for i := range want {
		if rules[i] != want[i] {
			t.Errorf("rule %d: %+v, want %+v", i, rules[i], want[i])
		}
	}
	for _, bad := range []string{"/var/mail/bob\n", "\"|unterminated\n", "a b c@d\n", "|\n", strings.Repeat("x@y.example\n", MaxForwardRules+1)} {
		if _, err := ParseForward(strings.NewReader(bad)); err == nil {
			t.Errorf("%.40q: no error", bad)
		}
	}
}

func FuzzParseForward(f *testing.F) {
	f.Add("\"|cmd a, b\"\n\\bob, ~/Maildir/\nx@y.example\n")
	f.Add("# c\n|x\n/a/b/\n")
	f.Fuzz(func(t *testing.T, s string) {
		rules, err := ParseForward(strings.NewReader(s))
		if err != nil {
			return
		}
		if len(rules) > MaxForwardRules {
			t.Fatalf("%d rules", len(rules))
		}
		for _, r := range rules {
			if r.Kind == RulePipe && r.Value == "" {
				t.Fatalf("empty command from %q", s)
			}
			if r.Kind == RuleMaildir && !strings.HasSuffix(r.Value, "/") {
				t.Fatalf("Maildir without / from %q", s)
			}
		}
	})
}
