package maildir

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestIndexFromRealDovecot lets Debian's Dovecot serve a Maildir first (its
// imap binary, preauthenticated on stdin, as tern-imapd --preauth is):
// SELECT gives UIDs, a STORE sets keywords. tern then makes its index from
// what Dovecot left, and keeps the UIDVALIDITY, every UID and every
// keyword Dovecot's client saw.
func TestIndexFromRealDovecot(t *testing.T) {
	const imapBin = "/usr/lib/dovecot/imap"
	if _, err := os.Stat(imapBin); err != nil {
		t.Skip("Dovecot's imap is not installed (Debian package dovecot-imapd)")
	}
	home := t.TempDir()
	os.Chmod(home, 0o755)
	os.Chmod(filepath.Dir(home), 0o755) // the test's own directory, for the account
	s, err := Create(filepath.Join(home, "Maildir"), 0)
	if err != nil {
		t.Fatal(err)
	}
	// Delivered by tern, before Dovecot ever looked: Dovecot gives the
	// UIDs.
	ms := deliverN(t, s.Inbox(), 3, time.Unix(1700000000, 0))
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		// Dovecot will not serve mail as root.
		uid, gid = 65534, 65534
		filepath.Walk(home, func(p string, _ os.FileInfo, _ error) error { return os.Chown(p, uid, gid) })
	}
	conf := filepath.Join(home, "dovecot.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
mail_location = maildir:%[1]s/Maildir
mail_uid = %[2]d
mail_gid = %[3]d
first_valid_uid = 1
first_valid_gid = 0
ssl = no
`, home, uid, gid)), 0o644)
	cmd := exec.Command(imapBin, "-c", conf)
	cmd.Env = []string{"HOME=" + home, "USER=tern-test", "PATH=/usr/bin:/bin"}
	cmd.Stdin = strings.NewReader("a SELECT INBOX\r\nb STORE 2 +FLAGS (Junk \\Seen $Label1)\r\nc UID FETCH 1:* (FLAGS)\r\nd LOGOUT\r\n")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "\na OK") || !strings.Contains(string(out), "\nb OK") {
		t.Skipf("Dovecot's imap did not serve the Maildir here (%v): %s", err, out)
	}
	var validity uint32
	for _, line := range strings.Split(string(out), "\n") {
		fmt.Sscanf(line, "* OK [UIDVALIDITY %d]", &validity)
	}
	if validity == 0 {
		t.Fatalf("no UIDVALIDITY from Dovecot:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(s.Root, dovecotUIDList)); err != nil {
		t.Fatalf("Dovecot left no %s: %v", dovecotUIDList, err)
	}

	msgs, err := s.Inbox().Messages()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range msgs {
		got = append(got, fmt.Sprintf("%d %s %v", m.UID, m.Unique, m.Flags))
	}
	want := []string{
		fmt.Sprintf("1 %s []", ms[0].Unique),
		fmt.Sprintf("2 %s [\\Seen Junk $Label1]", ms[1].Unique),
		fmt.Sprintf("3 %s []", ms[2].Unique),
	}
	if !slices.Equal(got, want) {
		t.Errorf("tern after Dovecot: %q, want %q\nDovecot said:\n%s", got, want, out)
	}
	l, err := s.Inbox().UIDList()
	if err != nil || l.Validity != validity || l.Next != 4 {
		t.Errorf("tern's UIDVALIDITY %d next %d (%v), Dovecot's %d and 4", l.Validity, l.Next, err, validity)
	}
}
