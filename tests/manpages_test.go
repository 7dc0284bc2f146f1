package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestManPagesCoverFlags checks that every program has a man page and that
// every long flag its --help shows is documented there.
func TestManPagesCoverFlags(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	progs, err := os.ReadDir(filepath.Join(root, "cmd"))
	if err != nil {
		t.Fatal(err)
	}
	flagRE := regexp.MustCompile(`(?m)^\s+--([a-z][a-z0-9-]*)`)
	for _, p := range progs {
		pages, _ := filepath.Glob(filepath.Join(root, "man", p.Name()+".[18]"))
		if len(pages) != 1 {
			t.Errorf("%s: want one man page in man/ (section 1 or 8), found %v", p.Name(), pages)
			continue
		}
		page, err := os.ReadFile(pages[0])
		if err != nil {
			t.Fatal(err)
		}
		out, _ := exec.Command(Bin(p.Name()), "--help").CombinedOutput()
		flags := flagRE.FindAllStringSubmatch(string(out), -1)
		if len(flags) == 0 {
			t.Errorf("%s --help shows no flags:\n%s", p.Name(), out)
		}
		for _, f := range flags {
			if f[1] == "help" {
				continue
			}
			if !strings.Contains(string(page), "Fl -"+f[1]) {
				t.Errorf("%s: flag --%s is not in %s", p.Name(), f[1], filepath.Base(pages[0]))
			}
		}
	}
}

// TestHelpDefaults reads every program's and subcommand's --help as a
// newcomer does: a default is stated once, and a zero default says what
// zero means.
func TestHelpDefaults(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	progs, err := os.ReadDir(filepath.Join(root, "cmd"))
	if err != nil {
		t.Fatal(err)
	}
	commandRE := regexp.MustCompile(`(?m)^   ([a-z]+)  `)
	zeroRE := regexp.MustCompile(`\(default: (0|0s)\)`)
	for _, p := range progs {
		out, _ := exec.Command(Bin(p.Name()), "--help").CombinedOutput()
		helps := map[string]string{p.Name(): string(out)}
		if _, cmds, ok := strings.Cut(string(out), "\nCOMMANDS:\n"); ok {
			cmds, _, _ = strings.Cut(cmds, "\n\n")
			for _, m := range commandRE.FindAllStringSubmatch(cmds, -1) {
				sub, _ := exec.Command(Bin(p.Name()), m[1], "--help").CombinedOutput()
				helps[p.Name()+" "+m[1]] = string(sub)
			}
		}
		for name, help := range helps {
			for _, line := range strings.Split(help, "\n") {
				if strings.Count(strings.ToLower(line), "default") > 1 {
					t.Errorf("%s --help states a default twice: %s", name, strings.TrimSpace(line))
				}
				if zeroRE.MatchString(line) && !strings.Contains(line, "0 for ") {
					t.Errorf("%s --help has a zero default it does not explain: %s", name, strings.TrimSpace(line))
				}
			}
		}
	}
}

// TestManPageReferences: every tern page a page points to (.Xr) is one of
// ours, in the section named.
func TestManPageReferences(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	pages, err := filepath.Glob(filepath.Join(root, "man", "*.[1-8]"))
	if err != nil || len(pages) == 0 {
		t.Fatalf("no man pages in man/: %v", err)
	}
	xr := regexp.MustCompile(`\bXr (tern[a-z0-9.-]*) ([1-9])`)
	for _, p := range pages {
		src, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range xr.FindAllStringSubmatch(string(src), -1) {
			if _, err := os.Stat(filepath.Join(root, "man", m[1]+"."+m[2])); err != nil {
				t.Errorf("%s points to %s(%s), which is not in man/", filepath.Base(p), m[1], m[2])
			}
		}
	}
}
