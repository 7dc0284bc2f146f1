package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestIMAPGoIMAPClientSuite runs go-imap's own client tests against
// tern-imapd: with GOIMAP_TEST_DOVECOT=1 they start "doveadm exec imap"
// and talk IMAP to it on its stdin and stdout; a doveadm of ours on PATH
// runs tern-imapd --preauth on a fresh Maildir instead. It is a test
// suite nobody on this project wrote.
//
// TestList is skipped: it expects Dovecot as go-imap's test configures
// it, with "/" as the hierarchy separator and no \HasNoChildren, where
// tern's Maildir++ folders have "." and tern offers CHILDREN.
func TestIMAPGoIMAPClientSuite(t *testing.T) {
	Need(t, "go")
	base := t.TempDir()
	for d := base; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755) // the account (nobody, under root) must reach its Maildir
	}
	standin := filepath.Join(base, "bin")
	if err := os.Mkdir(standin, 0o755); err != nil {
		t.Fatal(err)
	}
	script := `#!/bin/sh
# doveadm -c CONF exec imap, as go-imap's tests run it: tern-imapd
# preauthenticated on a fresh Maildir, owned by nobody when run as root.
d=$(mktemp -d ` + base + `/m.XXXXXX) || exit 75
chmod 755 "$d"
if [ "$(id -u)" = 0 ]; then chown 65534:65534 "$d"; fi
exec ` + Bin("tern-imapd") + ` --preauth "$USER" --maildir "$d/Maildir" 2>>` + base + `/imapd.log
`
	if err := os.WriteFile(filepath.Join(standin, "doveadm"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "test", "-count=1", "-skip", "^TestList$", "github.com/emersion/go-imap/v2/imapclient")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOIMAP_TEST_DOVECOT=1", "PATH="+standin+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		logs, _ := os.ReadFile(filepath.Join(base, "imapd.log"))
		t.Fatalf("go-imap's client tests against tern-imapd: %v\n%s\ntern-imapd said:\n%s", err, out, logs)
	}
	if !strings.Contains(string(out), "ok") {
		t.Fatalf("go test said:\n%s", out)
	}
	t.Logf("%s", strings.TrimSpace(string(out)))
}
