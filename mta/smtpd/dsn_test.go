package smtpd

import (
	"bytes"
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tern-mail/tern/mta/enqueue"
	"github.com/tern-mail/tern/mta/queue"
	"github.com/tern-mail/tern/mta/transport"
)

// tlsScriptConn is a scriptConn that says it runs over TLS, as serve.Conn
// does after STARTTLS or on an implicit-TLS port.
type tlsScriptConn struct{ scriptConn }

func (*tlsScriptConn) TLSState() (tls.ConnectionState, bool) {
	return tls.ConnectionState{Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256}, true
}

func converseTLS(t testing.TB, cfg *Config, in string) string {
	c := &tlsScriptConn{scriptConn{in: bytes.NewReader([]byte(in))}}
	done := make(chan error, 1)
	go func() { done <- cfg.Serve(context.Background(), c, Peer{ID: "cid1"}) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("Serve did not return; input %q", in)
	}
	return c.out.String()
}

// TestDSNParametersKept: DSN is offered, and what MAIL and RCPT said
// (RET, ENVID, BODY, NOTIFY, ORCPT) reaches the queue with the message,
// with whether its text is 8-bit; the next transaction on the same
// connection starts from nothing.
func TestDSNParametersKept(t *testing.T) {
	cfg, q := testConfig(t)
	out := converse(t, cfg, []byte("EHLO c.example\r\n"+
		"MAIL FROM:<a@remote.example> RET=hdrs ENVID=QQ+2B314 BODY=8BITMIME\r\n"+
		"RCPT TO:<bob@example.org> NOTIFY=success,FAILURE ORCPT=rfc822;Bob+2Btag@example.org\r\n"+
		"RCPT TO:<postmaster> NOTIFY=NEVER\r\n"+
		"DATA\r\nSubject: caf\xc3\xa9\r\n\r\nhi\r\n.\r\n"+
		"MAIL FROM:<a@remote.example>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nSubject: plain\r\n\r\nhi\r\n.\r\nQUIT\r\n"))
	for _, want := range []string{"250-DSN\r\n", "250 2.0.0 ok: queued as q1\r\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "REQUIRETLS") {
		t.Errorf("REQUIRETLS offered without TLS:\n%s", out)
	}
	if len(q.envs) != 2 {
		t.Fatalf("%d messages queued:\n%s", len(q.envs), out)
	}
	env := q.envs[0]
	if want := (enqueue.Conversation{Body: "8BITMIME", EnvID: "QQ+314", Ret: "HDRS"}); env.Conversation != want || !env.EightBit {
		t.Errorf("first message: %+v, 8-bit %v; want %+v, 8-bit", env.Conversation, env.EightBit, want)
	}
	wantRcpts := []enqueue.Recipient{
		{Addr: "bob@example.org", Notify: transport.NotifySuccess | transport.NotifyFailure, ORcpt: "RFC822;Bob+tag@example.org"},
		{Addr: "postmaster", Notify: transport.NotifyNever},
	}
	if !reflect.DeepEqual(env.Recipients, wantRcpts) {
		t.Errorf("recipients %+v, want %+v", env.Recipients, wantRcpts)
	}
	checkQueueable(t, env)
	env = q.envs[1]
	if env.Conversation != (enqueue.Conversation{}) || env.EightBit || env.Recipients[0] != (enqueue.Recipient{Addr: "bob@example.org"}) {
		t.Errorf("second message kept something of the first: %+v", env)
	}
}

// TestDSNParametersRefused: bad values get RFC 3461's 501 5.5.4,
// REQUIRETLS without TLS 530 5.7.10, an address that is not ASCII
// without SMTPUTF8 553 5.6.7; nothing is queued.
func TestDSNParametersRefused(t *testing.T) {
	for _, c := range []struct{ mail, rcpt, want string }{
		{"MAIL FROM:<a@remote.example> RET=ALL", "", "501 5.5.4"},
		{"MAIL FROM:<a@remote.example> ENVID=" + strings.Repeat("x", 101), "", "501 5.5.4"},
		{"MAIL FROM:<a@remote.example> ENVID=a+0Ab", "", "501 5.5.4"},
		{"MAIL FROM:<a@remote.example> ENVID=a+zz", "", "501 5.5.4"},
		{"MAIL FROM:<a@remote.example> BODY=9BIT", "", "501 5.5.4"},
		{"MAIL FROM:<a@remote.example> REQUIRETLS", "", "530 5.7.10"},
		{"MAIL FROM:<zoë@remote.example>", "", "553 5.6.7"},
		{"MAIL FROM:<a@remote.example>", "RCPT TO:<bob@example.org> NOTIFY=NEVER,SUCCESS", "501 5.5.4"},
		{"MAIL FROM:<a@remote.example>", "RCPT TO:<bob@example.org> NOTIFY=SOMETIMES", "501 5.5.4"},
		{"MAIL FROM:<a@remote.example>", "RCPT TO:<bob@example.org> ORCPT=bob@example.org", "501 5.5.4"},
		{"MAIL FROM:<a@remote.example>", "RCPT TO:<bob@example.org> ORCPT=rfc822;bob+0A@example.org", "501 5.5.4"},
		{"MAIL FROM:<a@remote.example>", `RCPT TO:<bob@example.org> ORCPT=utf-8;bob\x{9}x@example.org`, "501 5.5.4"},
		{"MAIL FROM:<a@remote.example>", "RCPT TO:<bob@example.org> ORCPT=rfc822;" + strings.Repeat("x", 500), "501 5.5.4"},
		{"MAIL FROM:<a@remote.example>", "RCPT TO:<zoë@example.org>", "553 5.6.7"},
	} {
		cfg, q := testConfig(t)
		in := "EHLO c.example\r\n" + c.mail + "\r\n"
		if c.rcpt != "" {
			in += c.rcpt + "\r\n"
		} else {
			in += "RCPT TO:<bob@example.org>\r\n"
		}
		in += "DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n"
		out := converse(t, cfg, []byte(in))
		if !strings.Contains(out, "\r\n"+c.want+" ") {
			t.Errorf("%s / %s: no %q in\n%s", c.mail, c.rcpt, c.want, out)
		}
		if len(q.msgs) != 0 {
			t.Errorf("%s / %s: queued", c.mail, c.rcpt)
		}
	}
	// With SMTPUTF8, the same addresses are taken, and kept so.
	cfg, q := testConfig(t)
	out := converse(t, cfg, []byte("EHLO c.example\r\nMAIL FROM:<zoë@remote.example> SMTPUTF8\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n"))
	if len(q.envs) != 1 || !q.envs[0].SMTPUTF8 || !strings.Contains(q.msgs[0], "with UTF8SMTP") {
		t.Errorf("SMTPUTF8 message: %+v\n%s", q.envs, out)
	}
}

// TestRequireTLS: over TLS, REQUIRETLS is offered, taken and kept.
func TestRequireTLS(t *testing.T) {
	cfg, q := testConfig(t)
	out := converseTLS(t, cfg, "EHLO c.example\r\nMAIL FROM:<a@remote.example> REQUIRETLS\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n")
	if !strings.Contains(out, "250-REQUIRETLS\r\n") {
		t.Errorf("REQUIRETLS not offered over TLS:\n%s", out)
	}
	if len(q.envs) != 1 || !q.envs[0].RequireTLS {
		t.Fatalf("queued %+v\n%s", q.envs, out)
	}
}

// TestDirectKeepsParameters: in process, the parameters and the
// checker's 8-bit verdict reach the queue's envelope; the text is not
// looked at again (the verdict is taken as given).
func TestDirectKeepsParameters(t *testing.T) {
	dir := t.TempDir()
	d := &Direct{Queue: dir, Now: time.Now, Host: func() string { return "mx.test" }}
	defer d.Close()
	env := Envelope{
		Sender: "a@remote.example",
		Recipients: []enqueue.Recipient{
			{Addr: "bob@example.org", Notify: transport.NotifyDelay, ORcpt: "RFC822;bob@example.org"},
			{Addr: "carol@example.org"},
		},
		Conversation: enqueue.Conversation{SMTPUTF8: true, Body: "8BITMIME", EnvID: "e 1", Ret: "FULL", RequireTLS: true},
		EightBit:     true,
	}
	qid, err := d.Enqueue(context.Background(), env, strings.NewReader("Subject: x\n\nplain ASCII\n"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, queue.Incoming, qid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	e, _, err := queue.ParseEnvelope(f)
	if err != nil {
		t.Fatal(err)
	}
	if !e.SMTPUTF8 || e.Body != "8BITMIME" || e.EnvID != "e 1" || e.Ret != "FULL" || !e.RequireTLS || !e.EightBit {
		t.Errorf("queued envelope %+v", e)
	}
	r := e.Recipients
	if len(r) != 2 || r[0].Notify != transport.NotifyDelay || r[0].ORcpt != "RFC822;bob@example.org" || r[1].Notify != 0 || r[1].ORcpt != "" {
		t.Errorf("queued recipients %+v %+v", r[0], r[1])
	}
}

// TestPipeArgs: the enqueue program's command line carries every
// parameter, a recipient's in one argument that enqueue.ParseRecipient
// reads back as it was.
func TestPipeArgs(t *testing.T) {
	env := Envelope{
		Sender: "a@remote.example",
		Recipients: []enqueue.Recipient{
			{Addr: "bob@example.org", Notify: transport.NotifySuccess | transport.NotifyDelay, ORcpt: "UTF-8;zoë x@example.org"},
			{Addr: "carol@example.org"},
		},
		Conversation: enqueue.Conversation{SMTPUTF8: true, Body: "7BIT", EnvID: "-x --y", Ret: "HDRS", RequireTLS: true},
	}
	got := strings.Join(pipeArgs(env), "|")
	want := "-v|-f|a@remote.example|--smtputf8|--body=7BIT|--envid=-x --y|--ret=HDRS|--requiretls|--|<bob@example.org> NOTIFY=SUCCESS,DELAY ORCPT=UTF-8;zo+C3+AB+20x@example.org|carol@example.org"
	if got != want {
		t.Errorf("args\n%s\nwant\n%s", got, want)
	}
	for i, r := range env.Recipients {
		back, err := enqueue.ParseRecipient(r.Arg())
		if err != nil || back != r {
			t.Errorf("recipient %d: %q read back as %+v, %v", i, r.Arg(), back, err)
		}
	}
	if args := pipeArgs(Envelope{Sender: "", Recipients: []enqueue.Recipient{{Addr: "bob@example.org"}}}); strings.Join(args, "|") != "-v|-f||--|bob@example.org" {
		t.Errorf("plain message: %q", args)
	}
}

// TestPipeEnvironment: the enqueue program gets tern-smtpd's environment
// without the variables that would set a message's envelope.
func TestPipeEnvironment(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "enq")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\ncat >/dev/null\nenv > \"$OUT\"\necho qid=x\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "env")
	p := &Pipe{Command: prog, Env: []string{"OUT=" + out, "PATH=/usr/bin:/bin", "TERN_ENVID=leak", "TERN_READ_RECIPIENTS=1", "TERN_NOTIFY=never", "TERN_QUEUE=/q"}}
	if _, err := p.Enqueue(context.Background(), Envelope{Recipients: []enqueue.Recipient{{Addr: "bob@example.org"}}, Env: []string{"TERN_CID=c1"}}, strings.NewReader("x\n")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"TERN_ENVID", "TERN_READ_RECIPIENTS", "TERN_NOTIFY"} {
		if strings.Contains(string(b), v+"=") {
			t.Errorf("%s reached the enqueue program:\n%s", v, b)
		}
	}
	for _, v := range []string{"TERN_QUEUE=/q", "TERN_CID=c1"} {
		if !strings.Contains(string(b), v) {
			t.Errorf("%s did not reach the enqueue program:\n%s", v, b)
		}
	}
}

// TestPipeFailureLine: a refusal carries the line of the enqueue
// program's standard error that says what failed, not the hint after it,
// nor a filter's chatter before it.
func TestPipeFailureLine(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name, stderr string
		status       int
		want         string
	}{
		{"usage", "tern-enqueue: fatal: recipient argument \"<x\": no > after the address\ntern-enqueue: hint: see 'tern-enqueue --help'\n", 64, `tern-enqueue: fatal: recipient argument "<x": no > after the address`},
		{"filter chatter first", strings.Repeat("spamc: info: scanning\n", 400) + "tern-enqueue: fatal: header larger than 1048576 bytes\n", 65, "tern-enqueue: fatal: header larger than 1048576 bytes"},
		{"error word", "filter: error: spamd said no\nfilter: note: see the log\n", 65, "filter: error: spamd said no"},
		{"plain last line", "first\nrefused: too spammy\n", 65, "refused: too spammy"},
		{"nothing", "", 65, "exited 65"},
	} {
		prog := filepath.Join(dir, "enq-"+strings.ReplaceAll(c.name, " ", "-"))
		errf := prog + ".err"
		if err := os.WriteFile(errf, []byte(c.stderr), 0o644); err != nil {
			t.Fatal(err)
		}
		script := "#!/bin/sh\ncat >/dev/null\ncat '" + errf + "' >&2\nexit " + strconv.Itoa(c.status) + "\n"
		if err := os.WriteFile(prog, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		p := &Pipe{Command: prog, Env: []string{"PATH=/usr/bin:/bin"}}
		_, err := p.Enqueue(context.Background(), Envelope{Recipients: []enqueue.Recipient{{Addr: "bob@example.org"}}}, strings.NewReader("x\n"))
		if err == nil || !strings.HasSuffix(err.Error(), c.want) || strings.Contains(err.Error(), "hint:") {
			t.Errorf("%s: %v, want it to end in %q", c.name, err, c.want)
		}
	}
}
