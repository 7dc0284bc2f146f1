package tests

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// submission returns the envelope of the submission qid in the queue's
// incoming/ (tern-queue is not running in these tests): the lines before
// the first empty one.
func submission(t *testing.T, r *Root, qid string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.Queue, "incoming", qid))
	if err != nil {
		t.Fatalf("the submission %s: %v", qid, err)
	}
	env, _, ok := strings.Cut(string(b), "\n\n")
	if !ok {
		t.Fatalf("submission %s has no empty line:\n%s", qid, b)
	}
	// A message written into a prepared entry (tern-smtpd serving every
	// connection in one process, as it does when not root) has a seal line
	// after the version (tern-queue(5)); what the tests read is the rest.
	env = sealLine.ReplaceAllString(env, "$1")
	return env + "\n"
}

var sealLine = regexp.MustCompile(`^(tern-queue \d+\n)seal [0-9a-f]+ [0-9a-f]+\n`)

func wantLines(t *testing.T, env string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(env, l) {
			t.Errorf("envelope lacks %q:\n%s", l, env)
		}
	}
}

// dsnClient is python3's smtplib sending one message with the DSN
// parameters of RFC 3461 (RET, ENVID on MAIL; NOTIFY, ORCPT on RCPT,
// different for each recipient), BODY=8BITMIME and 8-bit text; it prints
// the queue ID from the 250.
const dsnClient = `
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), local_hostname="client.example", timeout=20)
s.ehlo()
assert s.has_extn("dsn"), s.esmtp_features
assert not s.has_extn("requiretls"), "REQUIRETLS offered in the clear"
code, msg = s.mail("a@remote.example", ["RET=HDRS", "ENVID=QQ+2B314", "BODY=8BITMIME"])
assert code == 250, (code, msg)
code, msg = s.rcpt("bob@example.org", ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Bob+2Btag@example.org"])
assert code == 250, (code, msg)
code, msg = s.rcpt("alice@example.org", ["NOTIFY=NEVER"])
assert code == 250, (code, msg)
code, msg = s.rcpt("sales@example.org")
assert code == 250, (code, msg)
code, msg = s.data("Subject: caf\u00e9\r\n\r\nsm\u00f8rbr\u00f8d\r\n".encode())
print(code, msg.decode())
code, msg = s.mail("a@remote.example", ["ENVID=" + "x" * 101])
print("long envid", code, msg.decode()[:5])
s.rset()
s.mail("a@remote.example")
code, msg = s.rcpt("bob@example.org", ["NOTIFY=NEVER,SUCCESS"])
print("bad notify", code, msg.decode()[:5])
code, msg = s.mail("a@remote.example", ["REQUIRETLS"])
print("requiretls", code, msg.decode()[:6])
s.quit()
`

// TestIntakeDSNSmtplib: what a client says in MAIL and RCPT (RET, ENVID,
// BODY; NOTIFY and ORCPT per recipient) and whether the text is 8-bit
// reach the queued envelope, both when tern-smtpd queues in its own
// process and through the pipe to tern-enqueue; bad values get 501 5.5.4,
// REQUIRETLS in the clear 530 5.7.10.
func TestIntakeDSNSmtplib(t *testing.T) {
	Need(t, "python3")
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"in-process", nil},
		{"pipe", []string{"--enqueue", Bin("tern-enqueue")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := smtpdRoot(t)
			_, addr := startSmtpd(t, r, nil, append([]string{"--greet-delay", "0", "--rdns=false"}, tc.args...)...)
			host, port, _ := net.SplitHostPort(addr)
			res := python(t, r, dsnClient, host, port)
			if res.Code != 0 {
				t.Fatalf("smtplib: %v", res)
			}
			m := regexp.MustCompile(`250 2\.0\.0 ok: queued as (\S+)`).FindStringSubmatch(res.Stdout)
			if m == nil {
				t.Fatalf("no queue ID in:\n%s", res.Stdout)
			}
			for _, want := range []string{"long envid 501 5.5.4", "bad notify 501 5.5.4", "requiretls 530 5.7.10"} {
				if !strings.Contains(res.Stdout, want) {
					t.Errorf("no %q in:\n%s", want, res.Stdout)
				}
			}
			env := submission(t, r, m[1])
			if !strings.HasPrefix(env, "tern-queue 2\n8bit\n") {
				t.Errorf("not a version 2 envelope of an 8-bit message:\n%s", env)
			}
			wantLines(t, env,
				"\nbody 8BITMIME\n", "\nenvid QQ+2B314\n", "\nret HDRS\n",
				"\tbob@example.org\t-\t-\tnotify=SUCCESS,FAILURE\torcpt=RFC822;Bob+2Btag@example.org\n",
				"\talice@example.org\t-\t-\tnotify=NEVER\n",
				"\tsales@example.org\t-\t-\n",
			)
			for _, no := range []string{"smtputf8", "requiretls"} {
				if strings.Contains(env, "\n"+no+"\n") {
					t.Errorf("envelope has %s:\n%s", no, env)
				}
			}
		})
	}
}

// requireTLSClient starts TLS, sees REQUIRETLS offered, and sends with it
// from an address that is not ASCII (SMTPUTF8).
const requireTLSClient = `
import smtplib, ssl, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), local_hostname="client.example", timeout=20)
s.starttls(context=ssl._create_unverified_context())
s.ehlo()
assert s.has_extn("requiretls"), s.esmtp_features
code, msg = s.mail("zo\u00eb@remote.example", ["REQUIRETLS", "SMTPUTF8"])
assert code == 250, (code, msg)
code, msg = s.rcpt("bob@example.org")
assert code == 250, (code, msg)
code, msg = s.data(b"Subject: x\r\n\r\nplain\r\n")
print(code, msg.decode())
s.quit()
`

// TestIntakeRequireTLS: over STARTTLS, REQUIRETLS is offered, and a
// message sent with it is queued with it, on both ways of queueing.
func TestIntakeRequireTLS(t *testing.T) {
	Need(t, "python3")
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"in-process", nil},
		{"pipe", []string{"--enqueue", Bin("tern-enqueue")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := smtpdRoot(t)
			smtpdTLS(t, r)
			_, addr := startSmtpd(t, r, nil, append([]string{"--greet-delay", "0", "--rdns=false"}, tc.args...)...)
			host, port, _ := net.SplitHostPort(addr)
			res := python(t, r, requireTLSClient, host, port)
			m := regexp.MustCompile(`250 2\.0\.0 ok: queued as (\S+)`).FindStringSubmatch(res.Stdout)
			if res.Code != 0 || m == nil {
				t.Fatalf("smtplib: %v", res)
			}
			env := submission(t, r, m[1])
			// The client's text has no From: the one added names the
			// sender, who is not ASCII, so the text is 8-bit.
			if !strings.HasPrefix(env, "tern-queue 2\n8bit\n") {
				t.Errorf("the added From is 8-bit:\n%s", env)
			}
			wantLines(t, env, "\nrequiretls\n", "\nsmtputf8\n", "\nsender zoë@remote.example\n")
		})
	}
}

// TestIntakeEnqueueFlags: tern-enqueue's own command line takes the same
// parameters (sendmail's -N, -R, -V and recipients in RCPT form), finds
// the 8-bit text itself, and refuses bad values with 64.
func TestIntakeEnqueueFlags(t *testing.T) {
	r := NewRoot(t)
	res := r.Run("Subject: x\n\nna\xefve\n", nil, "tern-enqueue", "-v", "-f", "joe@example.org",
		"-N", "failure,delay", "-R", "hdrs", "-V", "-report 42", "--body", "8bitmime", "--requiretls",
		"--", "<bob@example.org> NOTIFY=success ORCPT=rfc822;bob@example.org", "carol@example.org", "zoë@example.org")
	if res.Code != 0 {
		t.Fatalf("tern-enqueue: %v", res)
	}
	qid := strings.TrimPrefix(strings.TrimSpace(res.Stdout), "qid=")
	env := submission(t, r, qid)
	if !strings.HasPrefix(env, "tern-queue 2\n8bit\n") {
		t.Errorf("8-bit text not found:\n%s", env)
	}
	wantLines(t, env, "\nsmtputf8\n", "\nbody 8BITMIME\n", "\nenvid -report+2042\n", "\nret HDRS\n", "\nrequiretls\n",
		"\tbob@example.org\t-\t-\tnotify=SUCCESS\torcpt=RFC822;bob@example.org\n",
		"\tcarol@example.org\t-\t-\tnotify=FAILURE,DELAY\n",
		"\tzoë@example.org\t-\t-\tnotify=FAILURE,DELAY\n")

	res = r.Run("Subject: x\n\nplain\n", nil, "tern-enqueue", "-v", "-f", "joe@example.org", "--", "bob@example.org")
	if res.Code != 0 {
		t.Fatalf("tern-enqueue: %v", res)
	}
	env = submission(t, r, strings.TrimPrefix(strings.TrimSpace(res.Stdout), "qid="))
	if !strings.HasPrefix(env, "tern-queue 2\n7bit\n") || strings.Contains(env, "notify=") || strings.Contains(env, "smtputf8") {
		t.Errorf("a plain message:\n%s", env)
	}

	for _, args := range [][]string{
		{"-N", "never,success", "--", "bob@example.org"},
		{"-R", "all", "--", "bob@example.org"},
		{"-V", strings.Repeat("x", 101), "--", "bob@example.org"},
		{"--body", "binarymime", "--", "bob@example.org"},
		{"--", "<bob@example.org> ORCPT=bob", "bob@example.org"},
		{"--", "<bob@example.org> SIZE=1"},
	} {
		res := r.Run("Subject: x\n\nx\n", nil, "tern-enqueue", append([]string{"-f", "joe@example.org"}, args...)...)
		if res.Code != 64 || !strings.Contains(res.Stderr, "tern-enqueue: ") {
			t.Errorf("%q: %v, want exit 64 with the reason", args, res)
		}
	}
}

// TestIntakePipeKeepsCause: when the enqueue program refuses a message,
// tern-smtpd's log keeps the line that says why (tern-enqueue's "fatal:"
// line), not the hint that follows it.
func TestIntakePipeKeepsCause(t *testing.T) {
	r, _ := smtpdRoot(t)
	wrapper := r.WriteFile("bin/bad-filter", "#!/bin/sh\nexec "+Bin("tern-enqueue")+" --no-such-flag \"$@\"\n")
	if err := os.Chmod(wrapper, 0o755); err != nil {
		t.Fatal(err)
	}
	p, addr := startSmtpd(t, r, nil, "--greet-delay", "0", "--rdns=false", "--enqueue", wrapper)
	c := smtpDial(t, addr)
	c.expectReply("220 ")
	c.transaction("a@remote.example", "bob@example.org")
	c.expect("Subject: x\r\n\r\nx\r\n.", "554 5.3.0")
	Eventually(t, 5*time.Second, "the refusal is logged", func() bool { return strings.Contains(p.Stderr(), "rejected") })
	log := p.Stderr()
	if !strings.Contains(log, "fatal: flag provided but not defined: -no-such-flag") || strings.Contains(log, "hint:") {
		t.Errorf("the log does not keep the cause:\n%s", log)
	}
}

// TestIntakeQueueKeepsParameters: once tern-queue has taken a message in
// and tried it, its live envelope (env/ID) still carries what the
// submission said: the parameters survive take-in and rewriting.
func TestIntakeQueueKeepsParameters(t *testing.T) {
	r := newQueueRoot(t)
	r.forwardFile("bob", "|exit 75\n")
	res := r.enqueue("Subject: x\n\nna\xefve\n", "-v", "-f", "carol@example.org", "-R", "hdrs", "-V", "qq-1", "--body", "8bitmime", "--requiretls",
		"--", "<bob@example.org> NOTIFY=SUCCESS ORCPT=rfc822;bob@example.org")
	qid := strings.TrimPrefix(strings.TrimSpace(res.Stdout), "qid=")
	r.runQueue()
	b, err := os.ReadFile(filepath.Join(r.Queue, "env", qid))
	if err != nil {
		t.Fatalf("the live envelope: %v", err)
	}
	env := string(b)
	if !strings.HasPrefix(env, "tern-queue 2\n8bit\n") {
		t.Errorf("live envelope:\n%s", env)
	}
	wantLines(t, env, "\nbody 8BITMIME\n", "\nenvid qq-1\n", "\nret HDRS\n", "\nrequiretls\n",
		"\nrcpt\tdeferred\t1\t", "\tnotify=SUCCESS\torcpt=RFC822;bob@example.org")
}

// TestIntakeReadsVersion1Queue: a queue a version 1 tern-queue left
// behind (a submission not yet taken in, and a live entry whose remote
// recipient waited in the state "remote") is read by this one: both
// messages reach the local recipient, the remote one is tried (the test's
// DNS answers nothing, so it is deferred, no longer "remote"), and the
// live envelope is written back as version 2.
func TestIntakeReadsVersion1Queue(t *testing.T) {
	r := newQueueRoot(t)
	for _, d := range []string{"incoming", "env", "mess"} {
		if err := os.MkdirAll(filepath.Join(r.Queue, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	const sub, live = "18eb658cb4105cbc00001", "18eb658cb4105cbc00002"
	// An hour ago: well within the queue's lifetime.
	arrived := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	r.WriteFile("spool/incoming/"+sub, "tern-queue 1\nid "+sub+"\narrived "+arrived+"\nsender carol@example.org\n"+
		"rcpt\tqueued\t0\t-\t-\tbob@example.org\t-\t-\n\nSubject: submitted by version 1\n\nbody\n")
	envText := "tern-queue 1\nid " + live + "\narrived " + arrived + "\nsender carol@example.org\nuid 0\n"
	msg := "Subject: queued by version 1\n\nbody\n"
	head := "tern-queue 1\nid " + live + "\narrived " + arrived + "\nsender carol@example.org\nrcpt\tqueued\t0\t-\t-\tbob@example.org\t-\t-\n\n"
	envText += fmt.Sprintf("offset %d\nsize %d\n", len(head), len(msg)) +
		"rcpt\tqueued\t0\t-\t-\tbob@example.org\t-\t-\n" +
		"rcpt\tremote\t1\t-\t4.3.2\tsomeone@elsewhere.example\t-\twaiting for remote delivery, which this version of tern-queue does not do yet\n"
	r.WriteFile("spool/env/"+live, envText)
	r.WriteFile("spool/mess/"+live, head+msg)
	if !strings.HasSuffix(r.Queue, "spool") {
		t.Fatalf("the queue is %s, not the spool this test wrote", r.Queue)
	}
	res := r.runQueue()
	got := strings.Join(inbox(t, filepath.Join(r.home("bob"), "Maildir")), "\n")
	for _, s := range []string{"Subject: submitted by version 1", "Subject: queued by version 1"} {
		if !strings.Contains(got, s) {
			t.Errorf("bob did not get %q:\n%s\n%s", s, got, res.Stderr)
		}
	}
	b, err := os.ReadFile(filepath.Join(r.Queue, "env", live))
	if err != nil {
		t.Fatalf("the live entry with the remote recipient: %v\n%s", err, res.Stderr)
	}
	env := string(b)
	if !strings.HasPrefix(env, "tern-queue 2\n8bit\n") || !strings.Contains(env, "\nrcpt\tdeferred\t2\t") || strings.Contains(env, "\trcpt\tremote") {
		t.Errorf("written back:\n%s", env)
	}
	if bad, _ := os.ReadDir(filepath.Join(r.Queue, "bad")); len(bad) != 0 {
		t.Errorf("moved aside: %v\n%s", bad, res.Stderr)
	}
}
