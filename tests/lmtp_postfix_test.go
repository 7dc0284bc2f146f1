package tests

import (
	"fmt"
	"net/smtp"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLMTPFromPostfix: a private Postfix takes mail over SMTP for a
// virtual domain and hands it to `tern-deliver --lmtp` on a unix socket,
// as virtual_transport = lmtp:unix:PATH does on a real host: the account's
// message lands in its Maildir with Postfix's Received line under tern's
// Return-Path and Delivered-To, and Postfix's log shows each recipient's
// own LMTP answer (250 delivered, 452 4.2.2 deferred, 550 5.1.1 bounced).
// The instance is its own (startPrivatePostfix), with an LMTP transport
// where remote_postfix_test.go's has virtual(8).
func TestLMTPFromPostfix(t *testing.T) {
	r := NewRoot(t)
	bob, carol := lmtpAccounts(r)
	var sock string
	var lmtpd *Proc
	pf := startPrivatePostfix(t, func(dir string) postfixConfig {
		// tern's side: the LMTP server as root, delivering as the
		// accounts; Postfix's lmtp(8) runs as postfix and must be able
		// to connect.
		sock = filepath.Join(dir, "tern-lmtp")
		lmtpd = r.Start(nil, nil, "tern-deliver", "--lmtp", "--listen", "unix:"+sock, "--socket-mode", "0666")
		Eventually(t, 10*time.Second, "tern-deliver --lmtp to listen", func() bool {
			_, err := os.Stat(sock)
			return err == nil
		})
		return postfixConfig{
			Main: fmt.Sprintf(`mynetworks = 127.0.0.0/8
virtual_mailbox_domains = example.org
virtual_transport = lmtp:unix:%s
smtpd_reject_unlisted_recipient = no
lmtp_destination_recipient_limit = 50
`, sock),
			Services: `lmtp      unix - - n - - lmtp
smtp      unix - - n - - smtp
`,
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("tern's log:\n%s", lmtpd.Stderr())
		}
	})
	addr, maillog := pf.Addr(), pf.Log
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
