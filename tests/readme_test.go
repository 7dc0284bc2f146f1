package tests

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReadme holds the README to what a newcomer does with it: the Go
// version is go.mod's, every man page it links exists and tern(7) is among
// them, the folders it names exist, and delivery commands it gives to
// procmail, maildrop and fetchmail are full paths (their PATH has no sbin).
func TestReadme(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)

	goLine := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(string(gomod))
	if goLine == nil {
		t.Fatal("go.mod has no go line")
	}
	if !strings.Contains(text, "Go "+goLine[1]+" or newer") {
		t.Errorf("README does not ask for go.mod's Go, %q or newer", goLine[1])
	}

	links := regexp.MustCompile(`\]\((man/[^)]+)\)`).FindAllStringSubmatch(text, -1)
	seen := map[string]bool{}
	for _, l := range links {
		seen[l[1]] = true
		if _, err := os.Stat(filepath.Join(root, l[1])); err != nil {
			t.Errorf("README links %s: %v", l[1], err)
		}
	}
	pages, _ := filepath.Glob(filepath.Join(root, "man", "*.[1-8]"))
	for _, p := range pages {
		if rel := "man/" + filepath.Base(p); !seen[rel] {
			t.Errorf("README does not link %s", rel)
		}
	}

	layout := text[strings.Index(text, "## Layout"):]
	for _, m := range regexp.MustCompile("`([a-z0-9]+)/`").FindAllStringSubmatch(layout, -1) {
		if fi, err := os.Stat(filepath.Join(root, m[1])); err != nil || !fi.IsDir() {
			t.Errorf("README's layout names %s/, which is not there", m[1])
		}
	}

	// Only examples: lines in fenced blocks, or indented four spaces.
	bare := regexp.MustCompile(`(\|\s*|--mda\s+["']?)tern-deliver`)
	fenced := false
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
			continue
		}
		if (fenced || strings.HasPrefix(line, "    ")) && bare.MatchString(line) {
			t.Errorf("README runs a bare tern-deliver where the caller's PATH may not reach sbin: %s", line)
		}
	}
}
