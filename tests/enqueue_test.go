package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// asName makes a symbolic link called name to tern-enqueue, as make
// install does for sendmail and mailq, and returns its directory.
func asName(t *testing.T, name string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Symlink(Bin("tern-enqueue"), filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, name)
}

func TestEnqueueSendmailBcc(t *testing.T) {
	r := newQueueRoot(t)
	sendmail := asName(t, "sendmail")
	msg := "From: Bob <bob@example.org>\nTo: carol@example.org\nCc: \"Dave D.\" <dave@example.org>\nBcc: alice@example.org,\n undisclosed-recipients:;\nSubject: sendmail -t\n\nline one\n.\nafter the dot\n"
	cmd := r.Cmd("tern-enqueue")
	cmd.Path = sendmail
	cmd.Args = []string{sendmail, "-t", "-oi", "-oem", "-odb", "-f", "bob@example.org", "-oQ/tmp/x"}
	res := RunCmd(t, cmd, msg)
	if res.Code != 0 {
		t.Fatalf("sendmail -t: %v", res)
	}
	if !strings.Contains(res.Stderr, "sendmail: note: option -oQ/tmp/x ignored") {
		t.Errorf("no note for an ignored -o option: %q", res.Stderr)
	}
	r.runQueue()
	// alice is an alias of bob: Bcc'd, bob gets it too.
	for _, u := range []string{"bob", "carol", "dave"} {
		got := onlyMessage(t, filepath.Join(r.home(u), "Maildir"))
		if strings.Contains(got, "Bcc") || strings.Contains(got, "alice") {
			t.Errorf("%s's copy shows the Bcc:\n%s", u, got)
		}
		if !strings.Contains(got, "\n.\nafter the dot\n") {
			t.Errorf("-oi: the dot line ended the message:\n%s", got)
		}
	}
}

func TestEnqueueSendmailDot(t *testing.T) {
	r := newQueueRoot(t)
	sendmail := asName(t, "sendmail")
	cmd := r.Cmd("tern-enqueue")
	cmd.Path, cmd.Args = sendmail, []string{sendmail, "-fjoe@example.net", "-Fjoe", "bob@example.org"}
	if res := RunCmd(t, cmd, "Subject: dot\n\nbefore\n.\nafter\n"); res.Code != 0 {
		t.Fatal(res)
	}
	r.runQueue()
	got := onlyMessage(t, filepath.Join(r.home("bob"), "Maildir"))
	if !strings.Contains(got, "\nbefore\n") || strings.Contains(got, "after") {
		t.Errorf("without -i a dot line ends the message:\n%s", got)
	}
	if !strings.Contains(got, "From: \"joe\" <joe@example.net>\n") && !strings.Contains(got, "From: joe <joe@example.net>\n") {
		t.Errorf("-F: From not added with the name:\n%s", got)
	}
	// tern-enqueue itself does not stop at a dot: tern-smtpd's contract.
	r.enqueue("Subject: dot\n\nbefore\n.\nafter\n", "-f", "joe@example.net", "--", "carol@example.org")
	r.runQueue()
	if got := onlyMessage(t, filepath.Join(r.home("carol"), "Maildir")); !strings.Contains(got, "\n.\nafter\n") {
		t.Errorf("tern-enqueue stopped at a dot line:\n%s", got)
	}
}

func TestEnqueueMailq(t *testing.T) {
	r := newQueueRoot(t)
	res := r.enqueue(plainMsg, "-v", "-f", "joe@example.net", "--", "far@elsewhere.example")
	id := strings.TrimPrefix(strings.TrimSpace(res.Stdout), "qid=")
	r.runQueue()
	for _, args := range [][]string{{"mailq"}, {"sendmail", "-bp"}} {
		prog := asName(t, args[0])
		cmd := r.Cmd("tern-enqueue")
		cmd.Path, cmd.Args = prog, append([]string{prog}, args[1:]...)
		res := RunCmd(t, cmd, "")
		if res.Code != 0 || !strings.Contains(res.Stdout, id) || !strings.Contains(res.Stdout, "<joe@example.net>") || !strings.Contains(res.Stdout, "deferred  far@elsewhere.example") {
			t.Errorf("%v: %v", args, res)
		}
	}
	// sendmail -q asks for a flush: the request file appears in incoming/.
	prog := asName(t, "sendmail")
	cmd := r.Cmd("tern-enqueue")
	cmd.Path, cmd.Args = prog, []string{prog, "-q"}
	if res := RunCmd(t, cmd, ""); res.Code != 0 {
		t.Fatal(res)
	}
	if _, err := os.Stat(filepath.Join(r.Queue, "incoming", ".flush")); err != nil {
		t.Errorf("sendmail -q: %v", err)
	}
}

// TestEnqueueHelpByName: sendmail --help and mailq --help print help under
// the name they were called by, exit 0, and touch no queue.
func TestEnqueueHelpByName(t *testing.T) {
	r := NewRoot(t)
	for name, want := range map[string]string{
		"sendmail":     "sendmail [-t] [-i | -oi] [-f SENDER]",
		"mailq":        "list the mail queue",
		"tern-enqueue": "tern-enqueue [-f SENDER]",
	} {
		prog := asName(t, name)
		cmd := r.Cmd("tern-enqueue")
		cmd.Path, cmd.Args = prog, []string{prog, "--help"}
		cmd.Env = append(cmd.Env, "TERN_QUEUE="+r.Path("no-queue"))
		res := RunCmd(t, cmd, "")
		if res.Code != 0 || !strings.HasPrefix(res.Stdout, "NAME:\n   "+name+" - ") || !strings.Contains(res.Stdout, want) || !strings.Contains(res.Stdout, "--from SENDER, -f SENDER") {
			t.Errorf("%s --help:\n%v", name, res)
		}
	}
}

func TestEnqueueHeadersAndAddresses(t *testing.T) {
	r := newQueueRoot(t)
	res := r.enqueue("Subject: bare\n\nbody\n", "-v", "-f", "joe@Bücher.Example", "--", "bob@example.org", "<x@BÜCHER.example>", "BOB@example.org")
	id := strings.TrimPrefix(strings.TrimSpace(res.Stdout), "qid=")
	l := r.list()
	if len(l) != 1 {
		t.Fatalf("%+v", l)
	}
	r.runQueue() // take it in
	l = r.list()
	if l[0].Sender != "joe@xn--bcher-kva.example" {
		t.Errorf("sender %q, want the A-label", l[0].Sender)
	}
	var rcpts []string
	for _, rc := range l[0].Recipients {
		rcpts = append(rcpts, rc.Address)
	}
	if strings.Join(rcpts, " ") != "bob@example.org x@xn--bcher-kva.example" {
		t.Errorf("recipients %v", rcpts)
	}
	got := onlyMessage(t, filepath.Join(r.home("bob"), "Maildir"))
	for _, want := range []string{"\nDate: ", "\nMessage-ID: <" + id + "@mx.example.org>\n", "\nFrom: joe@xn--bcher-kva.example\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("added header lacks %q:\n%s", want, got)
		}
	}
	// CRLF in, LF stored.
	r.enqueue("Subject: crlf\r\n\r\nline\r\n", "-f", "joe@example.net", "--", "carol@example.org")
	r.runQueue()
	if got := onlyMessage(t, filepath.Join(r.home("carol"), "Maildir")); strings.Contains(got, "\r") {
		t.Errorf("CR kept: %q", got)
	}
}

func TestEnqueueRefusals(t *testing.T) {
	r := newQueueRoot(t)
	for _, c := range []struct {
		name  string
		msg   string
		args  []string
		code  int
		words string
	}{
		{"bad recipient", plainMsg, []string{"-f", "a@b.example", "--", "bob@@example.org"}, 64, "recipient argument"},
		{"double dot", plainMsg, []string{"-f", "a@b.example", "--", "bob..x@example.org"}, 64, "empty atom"},
		{"bad domain", plainMsg, []string{"-f", "a@b.example", "--", "bob@exa_mple.org"}, 64, "only letters"},
		{"bad sender", plainMsg, []string{"-f", "a b@c", "--", "bob@example.org"}, 64, "sender"},
		{"no recipients", plainMsg, []string{"-f", "a@b.example"}, 64, "no recipients"},
		{"-t without any", "Subject: x\n\nb\n", []string{"-t", "-f", "a@b.example"}, 65, "no recipients in the To"},
		{"-t bad To", "To: <<bad\n\nb\n", []string{"-t", "-f", "a@b.example"}, 65, "To header"},
		{"too big", plainMsg + strings.Repeat("x", 2000), []string{"--max-size", "1000", "-f", "a@b.example", "--", "bob@example.org"}, 65, "larger than the limit"},
		{"unknown option", plainMsg, []string{"--frobnicate"}, 64, "frobnicate"},
	} {
		res := r.Run(c.msg, nil, "tern-enqueue", c.args...)
		if res.Code != c.code || !strings.Contains(res.Stderr, c.words) || !strings.HasPrefix(res.Stderr, "tern-enqueue: fatal: ") {
			t.Errorf("%s: %v, want %d and %q", c.name, res, c.code, c.words)
		}
	}
	if n := files(t, filepath.Join(r.Queue, "incoming")); len(n) != 0 {
		t.Errorf("refused messages left %v in incoming/", n)
	}
	// A queue that is not there is a temporary failure.
	res := r.Run(plainMsg, []string{"TERN_QUEUE=" + r.Path("nonexistent")}, "tern-enqueue", "-f", "a@b.example", "--", "bob@example.org")
	if res.Code != 75 {
		t.Errorf("missing queue: %v, want 75", res)
	}
	prog := asName(t, "sendmail")
	cmd := r.Cmd("tern-enqueue")
	cmd.Path, cmd.Args = prog, []string{prog, "-bs"}
	if res := RunCmd(t, cmd, ""); res.Code != 64 || !strings.Contains(res.Stderr, "-bs is not supported") {
		t.Errorf("sendmail -bs: %v", res)
	}
}

// TestEnqueueDiskFull: a full disk is 75, and nothing half-written stays.
func TestEnqueueDiskFull(t *testing.T) {
	r := newQueueRoot(t)
	spool := r.Path("small")
	mountTmpfs(t, spool, "size=64k")
	big := "Subject: big\n\n" + strings.Repeat(strings.Repeat("y", 99)+"\n", 2000)
	// By default the reserve (1.5 x --max-size free) refuses first.
	res := r.Run(big, []string{"TERN_QUEUE=" + spool}, "tern-enqueue", "-f", "a@b.example", "--", "bob@example.org")
	if res.Code != 75 || !strings.Contains(res.Stderr, "below its reserve") {
		t.Errorf("small disk: %v, want 75 naming the reserve", res)
	}
	// Without a size limit there is no reserve: the disk fills mid-copy.
	res = r.Run(big, []string{"TERN_QUEUE=" + spool}, "tern-enqueue", "--max-size", "0", "-f", "a@b.example", "--", "bob@example.org")
	if res.Code != 75 || !strings.Contains(res.Stderr, "no space left") {
		t.Errorf("full disk: %v, want 75 naming ENOSPC", res)
	}
	ents, _ := os.ReadDir(filepath.Join(spool, "incoming"))
	if len(ents) != 0 {
		t.Errorf("left in incoming/: %v", ents)
	}
}

// TestEnqueueAsUser: a user who is not the queue's owner can submit but
// cannot list or read incoming/; tern-queue records who it was.
func TestEnqueueAsUser(t *testing.T) {
	NeedRoot(t)
	r := newQueueRoot(t)
	for d := r.Dir; d != "/tmp" && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r.runQueue() // makes the queue's directories
	cmd := r.Cmd("tern-enqueue", "-f", "nobody@example.org", "--", "bob@example.org")
	cmd.SysProcAttr = nobodyAttr()
	if res := RunCmd(t, cmd, plainMsg); res.Code != 0 {
		t.Fatalf("as nobody: %v", res)
	}
	cmd = r.Cmd("tern-queue", "--list")
	cmd.SysProcAttr = nobodyAttr()
	if res := RunCmd(t, cmd, ""); res.Code != 77 || !strings.Contains(res.Stderr, "run this as root") {
		t.Errorf("nobody listing the queue: want exit 77 saying to run it as root: %v", res)
	}
	ls := exec_(t, cmd.Env, "ls", filepath.Join(r.Queue, "incoming"))
	if ls == nil {
		t.Errorf("nobody could list incoming/")
	}
	r.runQueue()
	got := onlyMessage(t, filepath.Join(r.home("bob"), "Maildir"))
	if !strings.Contains(got, "Return-Path: <nobody@example.org>") {
		t.Errorf("%s", got)
	}
}

func nobodyAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
}

// exec_ runs a command as nobody and returns its error.
func exec_(t *testing.T, env []string, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Env = env
	cmd.SysProcAttr = nobodyAttr()
	return cmd.Run()
}
