package tests

import (
	"fmt"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLMTPFromPostfix: a private Postfix takes mail over SMTP for a
// virtual domain and hands it to `tern-deliver --lmtp` on a unix socket,
// as virtual_transport = lmtp:unix:PATH does on a real host: the account's
// message lands in its Maildir with Postfix's Received line under tern's
// Return-Path and Delivered-To, and Postfix's log shows each recipient's
// own LMTP answer (250 delivered, 452 4.2.2 deferred, 550 5.1.1 bounced).
// The instance is its own (config, queue and data directories under the
// test's), as in remote_postfix_test.go, whose MX set-up this one follows
// with an LMTP transport in place of virtual(8).
func TestLMTPFromPostfix(t *testing.T) {
	NeedRoot(t) // master(8) must start as root
	if _, err := os.Stat("/usr/sbin/postfix"); err != nil {
		skipLoudly(t, "postfix is not installed (Debian: apt-get install postfix)")
	}
	r := NewRoot(t)
	bob, carol := lmtpAccounts(r)
	dir, err := os.MkdirTemp("", "tern-pf-lmtp-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	for _, d := range []string{"etc", "spool", "data"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	out, err := exec.Command("id", "-u", "postfix").Output()
	if err != nil {
		skipLoudly(t, "no postfix user: the postfix package is not installed properly (Debian: apt-get install postfix)")
	}
	pfUID, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	os.Chown(filepath.Join(dir, "data"), pfUID, -1)

	// tern's side: the LMTP server as root, delivering as the accounts;
	// Postfix's lmtp(8) runs as postfix and must be able to connect.
	sock := filepath.Join(dir, "tern-lmtp")
	lmtpd := r.Start(nil, nil, "tern-deliver", "--lmtp", "--listen", "unix:"+sock, "--socket-mode", "0666")
	Eventually(t, 10*time.Second, "tern-deliver --lmtp to listen", func() bool {
		_, err := os.Stat(sock)
		return err == nil
	})

	l, ip := listenLoopback(t, 0)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	etc := filepath.Join(dir, "etc")
	mainCF := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/spool
data_directory = %[1]s/data
myhostname = mx.postfix.test
mydestination =
inet_interfaces = all
inet_protocols = ipv4
smtpd_peername_lookup = no
mynetworks = 127.0.0.0/8
virtual_mailbox_domains = example.org
virtual_transport = lmtp:unix:%[2]s
smtpd_reject_unlisted_recipient = no
lmtp_destination_recipient_limit = 50
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s
`, dir, sock)
	masterCF := fmt.Sprintf(`%s:%d inet n - n - 10 smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
lmtp      unix - - n - - lmtp
smtp      unix - - n - - smtp
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
`, ip, port)
	os.WriteFile(filepath.Join(etc, "main.cf"), []byte(mainCF), 0o644)
	os.WriteFile(filepath.Join(etc, "master.cf"), []byte(masterCF), 0o644)
	postfix := func(args ...string) ([]byte, error) {
		cmd := exec.Command("/usr/sbin/postfix", append([]string{"-c", etc}, args...)...)
		cmd.Env = append(os.Environ(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin")
		return cmd.CombinedOutput()
	}
	maillog := func() string { b, _ := os.ReadFile(filepath.Join(dir, "maillog")); return string(b) }
	if out, err := postfix("start"); err != nil {
		t.Fatalf("postfix -c %s start: %v\n%s\n%s", etc, err, out, maillog())
	}
	t.Cleanup(func() {
		pidText, _ := os.ReadFile(filepath.Join(dir, "spool", "pid", "master.pid"))
		postfix("stop")
		if pid, err := strconv.Atoi(strings.TrimSpace(string(pidText))); err == nil {
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) && syscall.Kill(pid, 0) == nil {
				time.Sleep(50 * time.Millisecond)
			}
		}
		if t.Failed() {
			t.Logf("postfix's log:\n%s\ntern's log:\n%s", maillog(), lmtpd.Stderr())
		}
		os.RemoveAll(dir)
	})
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	Eventually(t, 15*time.Second, "postfix's smtpd to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	msg := "From: alice@example.net\r\nSubject: through postfix\r\nMessage-ID: <pf1@example.net>\r\n\r\nhello over LMTP\r\n"
	if err := smtp.SendMail(addr, nil, "alice@example.net", []string{"bob@example.org", "carol@example.org", "nosuch@example.org", "bob+lists@example.org"}, []byte(msg)); err != nil {
		t.Fatalf("send to postfix: %v\n%s", err, maillog())
	}
	Eventually(t, 30*time.Second, "bob's messages in INBOX and lists", func() bool {
		return len(files(t, filepath.Join(bob, "new"))) == 1 && len(files(t, filepath.Join(bob, ".lists", "new"))) == 1
	})
	got := readOnly(t, bob)
	if !strings.HasPrefix(got, "Return-Path: <alice@example.net>\nDelivered-To: bob@example.org\nReceived: from ") ||
		!strings.Contains(got, "\nSubject: through postfix\nMessage-ID: <pf1@example.net>\n") || !strings.HasSuffix(got, "\n\nhello over LMTP\n") {
		t.Errorf("bob's message:\n%s", got)
	}
	Eventually(t, 30*time.Second, "postfix to log each recipient's answer", func() bool {
		log := maillog()
		return strings.Contains(log, "to=<carol@example.org>") && strings.Contains(log, "to=<nosuch@example.org>") &&
			strings.Count(log, "status=sent") >= 2
	})
	log := maillog()
	relay := "mx.postfix.test[" + sock + "]"
	for _, want := range []string{
		"to=<bob@example.org>, relay=" + relay,
		"status=sent (250 2.0.0 <bob@example.org> delivered",
		"status=sent (250 2.0.0 <bob+lists@example.org> delivered",
		"dsn=4.2.2, status=deferred (host " + relay + " said: 452 4.2.2 <carol@example.org> mailbox is full",
		"dsn=5.1.1, status=bounced (host " + relay + " said: 550 5.1.1 no such user here (in reply to RCPT TO command)",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("postfix's log lacks %q", want)
		}
	}
	if n := len(visible(t, carol)); n != 0 {
		t.Errorf("carol, over quota, has %d messages", n)
	}
}
