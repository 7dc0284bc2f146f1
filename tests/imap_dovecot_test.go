package tests

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestIMAPAfterDovecot: a Maildir that Debian's Dovecot served (its imap
// binary, preauthenticated on stdin as tern-imapd --preauth is) is served
// by tern-imapd with the same UIDVALIDITY, the same UIDs and the same
// flags and keywords, in INBOX and in a folder Dovecot made: a client
// that moves from Dovecot to tern downloads nothing again.
func TestIMAPAfterDovecot(t *testing.T) {
	const imapBin = "/usr/lib/dovecot/imap"
	if _, err := os.Stat(imapBin); err != nil {
		skipLoudly(t, "Dovecot's imap is not installed (Debian package dovecot-imapd)")
	}
	r := NewRoot(t)
	a := newPOPAccount(t, r)
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		uid, gid = 65534, 65534
	}
	conf := r.WriteFile("dovecot.conf", fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
mail_location = maildir:%[2]s
mail_uid = %[3]d
mail_gid = %[4]d
first_valid_uid = 1
first_valid_gid = 0
ssl = no
`, r.Path("dovecot"), a.maildir, uid, gid))
	msg := "Subject: kept in Work\r\n\r\nhello\r\n"
	dovecot := exec.Command(imapBin, "-c", conf)
	dovecot.Env = []string{"HOME=" + a.home, "USER=" + a.user, "PATH=/usr/bin:/bin"}
	dovecot.Stdin = strings.NewReader(fmt.Sprintf("a CREATE Work\r\nb APPEND Work (\\Flagged) {%d}\r\n%s\r\n"+
		"c STORE 1 +FLAGS (\\Seen)\r\n"+ // not selected: BAD, harmless
		"d SELECT INBOX\r\ne STORE 2 +FLAGS (\\Seen $Label1 Junk)\r\n"+
		"f UID FETCH 1:* (FLAGS)\r\ng SELECT Work\r\nh UID FETCH 1:* (FLAGS)\r\nz LOGOUT\r\n", len(msg), msg))
	out, err := dovecot.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "\ne OK") || !strings.Contains(string(out), "\nh OK") {
		skipLoudly(t, "Dovecot's imap did not serve the Maildir here (%v): %s", err, out)
	}
	chownAccount(t, a)

	tern := r.Cmd("tern-imapd", "--preauth", a.user)
	tern.Stdin = strings.NewReader("d SELECT INBOX\r\nf UID FETCH 1:* (FLAGS)\r\ng SELECT Work\r\nh UID FETCH 1:* (FLAGS)\r\nz LOGOUT\r\n")
	tout, err := tern.CombinedOutput()
	if err != nil {
		t.Fatalf("tern-imapd --preauth: %v\n%s", err, tout)
	}
	d, tn := mailboxFacts(string(out)), mailboxFacts(string(tout))
	t.Logf("what both servers showed:\n%s", strings.Join(tn, "\n"))
	if len(d) < 6 || !slices.Equal(d, tn) {
		t.Errorf("Dovecot and tern disagree:\nDovecot:\n%s\ntern:\n%s\n(Dovecot said:\n%s\ntern said:\n%s)",
			strings.Join(d, "\n"), strings.Join(tn, "\n"), out, tout)
	}
}

// mailboxFacts picks what a client caches out of the answers to SELECT
// and UID FETCH (FLAGS): UIDVALIDITY, and each message's UID and flags
// (sorted, without \Recent, which is per session).
func mailboxFacts(out string) []string {
	validity := regexp.MustCompile(`^\* OK \[UIDVALIDITY (\d+)\]`)
	fetch := regexp.MustCompile(`^\* \d+ FETCH \((?:UID (\d+) FLAGS \(([^)]*)\)|FLAGS \(([^)]*)\) UID (\d+))\)`)
	var facts []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimRight(l, "\r")
		if m := validity.FindStringSubmatch(l); m != nil {
			facts = append(facts, "UIDVALIDITY "+m[1])
			continue
		}
		if m := fetch.FindStringSubmatch(l); m != nil {
			uid, flags := m[1], m[2]
			if uid == "" {
				uid, flags = m[4], m[3]
			}
			fs := slices.DeleteFunc(strings.Fields(flags), func(f string) bool { return f == `\Recent` })
			slices.Sort(fs)
			facts = append(facts, "UID "+uid+" "+strings.Join(fs, " "))
		}
	}
	return facts
}
