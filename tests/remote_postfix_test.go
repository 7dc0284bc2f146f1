package tests

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tern-mail/tern/internal/testcert"
)

// nobodyID is the uid and gid Postfix's virtual(8) delivers as.
const nobodyID = 65534

// postfixMX is a private Postfix acting as the MX host of a domain:
// smtpd with STARTTLS, virtual(8) delivering every recipient of the domain
// into one Maildir.
type postfixMX struct {
	*privatePostfix
	maildir string
}

func startPostfixMX(t *testing.T, domain string) *postfixMX {
	t.Helper()
	pf := &postfixMX{}
	pf.privatePostfix = startPrivatePostfix(t, func(dir string) postfixConfig {
		pf.maildir = filepath.Join(dir, "mail", "box")
		if err := os.MkdirAll(filepath.Join(dir, "mail"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(filepath.Join(dir, "mail"), nobodyID, nobodyID); err != nil {
			t.Fatal(err)
		}
		testcert.Write(t, filepath.Join(dir, "etc"), 7)
		return postfixConfig{
			Main: fmt.Sprintf(`virtual_mailbox_domains = %[2]s
virtual_mailbox_base = %[1]s/mail
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:%[3]d
virtual_gid_maps = static:%[3]d
smtpd_tls_security_level = may
smtpd_tls_cert_file = %[1]s/etc/tls.crt
smtpd_tls_key_file = %[1]s/etc/tls.key
smtpd_tls_received_header = yes
`, dir, domain, nobodyID),
			Services: `tlsmgr    unix - - n 1000? 1 tlsmgr
virtual   unix - n n - - virtual
`,
		}
	})
	return pf
}

// TestRemoteToPostfix: tern-queue delivers over STARTTLS to a Postfix MX,
// whose virtual(8) puts the message into a Maildir: the file is Postfix's
// own trace headers on top of the queued text, byte for byte, and its
// Received line says TLS was used.
func TestRemoteToPostfix(t *testing.T) {
	w := newMXWorld(t)
	pf := startPostfixMX(t, "remote.example")
	w.args = append(w.args[:0:0], "--dns", w.dns.Addr, "--smtp-port", strconv.Itoa(pf.Port))
	w.dns.MX("remote.example", 10, "mx.postfix.test")
	w.dns.A("mx.postfix.test", pf.IP)
	msg := remoteMsg + "8-bit too: Grüße\n"
	text := bytes.ReplaceAll(w.send(msg, "bob@example.org", "someone@remote.example"), []byte("\r\n"), []byte("\n"))
	q := w.queue(nil)
	if !strings.Contains(q.Stderr, "status=sent") || !strings.Contains(q.Stderr, "tls=TLSv1") {
		t.Fatalf("tern-queue did not send over TLS:\n%s", q.Stderr)
	}
	var got []byte
	Eventually(t, 20*time.Second, "postfix to deliver into its Maildir", func() bool {
		names, _ := filepath.Glob(filepath.Join(pf.maildir, "new", "*"))
		if len(names) == 0 {
			return false
		}
		var err error
		got, err = os.ReadFile(names[0])
		return err == nil
	})
	head, ok := bytes.CutSuffix(got, text)
	if !ok {
		t.Fatalf("the delivered file does not end with the queued text:\n%s\nwant the end\n%s", got, text)
	}
	for _, line := range strings.Split(strings.TrimSuffix(string(head), "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "Return-Path: <bob@example.org>"),
			strings.HasPrefix(line, "Delivered-To: someone@remote.example"),
			strings.HasPrefix(line, "X-Original-To: someone@remote.example"),
			strings.HasPrefix(line, "Received: "),
			strings.HasPrefix(line, "\t"), strings.HasPrefix(line, " "):
		default:
			t.Errorf("postfix added %q, not a trace header", line)
		}
	}
	if !bytes.Contains(head, []byte("using TLSv1.")) || !bytes.Contains(head, []byte("Received: from mx.example.org ")) {
		t.Errorf("postfix's Received line does not show our EHLO name over TLS:\n%s", head)
	}
	// Postfix counts the commands of a session: EHLO before and after
	// STARTTLS, one transaction.
	if log := pf.Log(); !strings.Contains(log, "ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1") {
		t.Errorf("postfix's log does not show EHLO, STARTTLS, EHLO, one transaction:\n%s", log)
	}
	w.wantEmpty()
}
