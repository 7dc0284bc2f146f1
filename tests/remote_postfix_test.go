package tests

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tern-mail/tern/internal/testcert"
)

// nobodyID is the uid and gid Postfix's virtual(8) delivers as.
const nobodyID = 65534

// postfixMX is a private Postfix instance acting as the MX host of a
// domain: smtpd on ip:port with STARTTLS, virtual(8) delivering every
// recipient of the domain into one Maildir. It never touches the
// system's instance: its own config_directory, queue_directory and
// data_directory, stopped with "postfix -c DIR stop" when the test ends.
type postfixMX struct {
	dir     string // config, queue, data and mail below it
	ip      string
	port    int
	maildir string
}

func startPostfixMX(t *testing.T, domain string) *postfixMX {
	t.Helper()
	NeedRoot(t) // master(8) must start as root
	for _, p := range []string{"postfix", "postconf"} {
		if _, err := exec.LookPath(p); err != nil {
			if _, err := os.Stat("/usr/sbin/" + p); err != nil {
				skipLoudly(t, "%s is not installed (Debian: apt-get install postfix; .ci/run does)", p)
			}
		}
	}
	// Postfix's processes run as postfix and nobody: every directory on
	// the way down must be theirs to pass through.
	dir, err := os.MkdirTemp("", "tern-pf-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	pf := &postfixMX{dir: dir, maildir: filepath.Join(dir, "mail", "box")}
	l, ip := listenLoopback(t, 0)
	pf.ip, pf.port = ip, l.Addr().(*net.TCPAddr).Port
	l.Close()
	for _, d := range []string{"etc", "spool", "data", "mail"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	testcert.Write(t, filepath.Join(dir, "etc"), 7)
	chown := func(p string, uid, gid int) {
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	chown(filepath.Join(dir, "mail"), nobodyID, nobodyID)
	out, err := exec.Command("id", "-u", "postfix").Output()
	if err != nil {
		skipLoudly(t, "no postfix user: the postfix package is not installed properly (Debian: apt-get install postfix)")
	}
	pfUID, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	chown(filepath.Join(dir, "data"), pfUID, -1)
	etc := filepath.Join(dir, "etc")
	mainCF := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/spool
data_directory = %[1]s/data
myhostname = mx.postfix.test
mydestination =
inet_interfaces = all
proxy_interfaces = %[2]s
inet_protocols = ipv4
smtpd_peername_lookup = no
virtual_mailbox_domains = %[3]s
virtual_mailbox_base = %[1]s/mail
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:%[4]d
virtual_gid_maps = static:%[4]d
smtpd_tls_security_level = may
smtpd_tls_cert_file = %[1]s/etc/tls.crt
smtpd_tls_key_file = %[1]s/etc/tls.key
smtpd_tls_received_header = yes
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s
`, dir, ip, domain, nobodyID)
	masterCF := fmt.Sprintf(`%s:%d inet n - n - 10 smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
tlsmgr    unix - - n 1000? 1 tlsmgr
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
virtual   unix - n n - - virtual
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
`, ip, pf.port)
	for name, text := range map[string]string{"main.cf": mainCF, "master.cf": masterCF} {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	postfix := func(args ...string) ([]byte, error) {
		cmd := exec.Command("postfix", append([]string{"-c", etc}, args...)...)
		cmd.Env = append(os.Environ(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin")
		return cmd.CombinedOutput()
	}
	if out, err := postfix("start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "maillog"))
		t.Fatalf("postfix -c %s start: %v\n%s\n%s", etc, err, out, log)
	}
	t.Cleanup(func() {
		pidText, _ := os.ReadFile(filepath.Join(dir, "spool", "pid", "master.pid"))
		postfix("stop")
		// master leaves a moment after "stop", and its children with it.
		if pid, err := strconv.Atoi(strings.TrimSpace(string(pidText))); err == nil {
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) && syscall.Kill(pid, 0) == nil {
				time.Sleep(50 * time.Millisecond)
			}
		}
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "maillog"))
			t.Logf("postfix's log:\n%s", log)
		}
		os.RemoveAll(dir)
	})
	Eventually(t, 15*time.Second, "postfix's smtpd to listen", func() bool {
		c, err := net.Dial("tcp", net.JoinHostPort(ip, strconv.Itoa(pf.port)))
		if err == nil {
			c.Close()
		}
		return err == nil
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
	w.args = append(w.args[:0:0], "--dns", w.dns.Addr, "--smtp-port", strconv.Itoa(pf.port))
	w.dns.MX("remote.example", 10, "mx.postfix.test")
	w.dns.A("mx.postfix.test", pf.ip)
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
	log, _ := os.ReadFile(filepath.Join(pf.dir, "maillog"))
	if !bytes.Contains(log, []byte("ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1")) {
		t.Errorf("postfix's log does not show EHLO, STARTTLS, EHLO, one transaction:\n%s", log)
	}
	w.wantEmpty()
}
