package tests

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// lmtpAccounts writes the users file of an LMTP test: accounts bob and
// carol (carol's Maildir over quota) and an alias of both. Run as root,
// the accounts are uid 65534, so that tern-lmtpd delivers as them.
func lmtpAccounts(r *Root) (bob, carol string) {
	r.T.Helper()
	uid := ""
	if os.Geteuid() == 0 {
		uid = "65534"
		r.OpenUp()
	}
	var users strings.Builder
	for _, u := range []string{"bob", "carol"} {
		home := filepath.Join(r.Home, u)
		if err := os.MkdirAll(filepath.Join(home, "Maildir", ".lists", "cur"), 0o755); err != nil {
			r.T.Fatal(err)
		}
		for _, d := range []string{"new", "tmp"} {
			os.MkdirAll(filepath.Join(home, "Maildir", d), 0o700)
			os.MkdirAll(filepath.Join(home, "Maildir", ".lists", d), 0o700)
		}
		os.MkdirAll(filepath.Join(home, "Maildir", "cur"), 0o700)
		fmt.Fprintf(&users, "%s@example.org:{PLAIN}x:%s:%s::%s::\n", u, uid, uid, home)
	}
	os.WriteFile(filepath.Join(r.Home, "carol", "Maildir", "maildirsize"), []byte("10S\n"), 0o600)
	if uid != "" {
		filepath.Walk(r.Home, func(p string, _ os.FileInfo, err error) error {
			if err == nil {
				os.Lchown(p, 65534, 65534)
			}
			return nil
		})
	}
	r.WriteFile("etc/tern/users", users.String())
	r.WriteFile("etc/tern/domains", "example.org\n")
	r.WriteFile("etc/tern/hostname", "mx.example.org\n")
	r.WriteFile("etc/tern/aliases", "team@example.org: bob, carol\n")
	return filepath.Join(r.Home, "bob", "Maildir"), filepath.Join(r.Home, "carol", "Maildir")
}

func lmtpScript(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "client.py")
	if err := os.WriteFile(p, []byte(lmtpClientScript), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// lmtpClientScript runs the transactions in the JSON file named by
// LMTP_TXNS: each {"from", "to": [...], "msg"}.
const lmtpClientScript = `
import json, os, smtplib, subprocess, sys

class PipeSock:
    def __init__(self, p): self.p = p
    def sendall(self, b): self.p.stdin.write(b); self.p.stdin.flush()
    def makefile(self, mode): return self.p.stdout
    def close(self): self.p.stdin.close()

if sys.argv[1] == "-":
    p = subprocess.Popen(sys.argv[2:], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    c = smtplib.LMTP()
    c.sock = PipeSock(p)
    code, _ = c.getreply()
else:
    c = smtplib.LMTP(sys.argv[1])
    code = 220
out = {"greeting": code, "txns": []}
c.ehlo("client.example.org")
out["pipelining"] = bool(c.has_extn("pipelining"))
for t in json.load(open(os.environ["LMTP_TXNS"])):
    res = {"rcpt": [], "data": []}
    c.mail(t["from"])
    ok = 0
    for r in t["to"]:
        code, msg = c.rcpt(r)
        res["rcpt"].append("%d %s" % (code, msg.decode()))
        if code == 250:
            ok += 1
    if ok:
        code, msg = c.data(t["msg"].encode())
        res["data"].append("%d %s" % (code, msg.decode()))
        for _ in range(ok - 1):
            code, msg = c.getreply()
            res["data"].append("%d %s" % (code, msg.decode()))
    else:
        c.rset()
    out["txns"].append(res)
code, _ = c.docmd("QUIT")
out["quit"] = code
if sys.argv[1] == "-":
    c.sock.close()
    out["exit"] = p.wait(timeout=30)
print(json.dumps(out))
`

type lmtpTxn struct {
	From string   `json:"from"`
	To   []string `json:"to"`
	Msg  string   `json:"msg"`
}

type lmtpOut struct {
	Greeting   int  `json:"greeting"`
	Pipelining bool `json:"pipelining"`
	Txns       []struct {
		Rcpt []string `json:"rcpt"`
		Data []string `json:"data"`
	} `json:"txns"`
	Quit int `json:"quit"`
	Exit int `json:"exit"`
}

// runLMTPClient runs the python client with args and the transactions.
func runLMTPClient(t *testing.T, r *Root, txns []lmtpTxn, args ...string) lmtpOut {
	t.Helper()
	b, _ := json.Marshal(txns)
	tf := filepath.Join(t.TempDir(), "txns.json")
	os.WriteFile(tf, b, 0o644)
	cmd := exec.Command("python3", append([]string{lmtpScript(t)}, args...)...)
	cmd.Env = r.Env("LMTP_TXNS=" + tf)
	res := RunCmd(t, cmd, "")
	if res.Code != 0 {
		t.Fatalf("python3 smtplib.LMTP: %v", res)
	}
	var out lmtpOut
	if err := json.Unmarshal([]byte(res.Stdout), &out); err != nil {
		t.Fatalf("client output %q: %v\n%s", res.Stdout, err, res.Stderr)
	}
	return out
}

// checkLMTPConversation checks the replies of lmtpTxns and what they
// stored.
func checkLMTPConversation(t *testing.T, out lmtpOut, bob, carol string) {
	t.Helper()
	if out.Greeting != 220 || !out.Pipelining || out.Quit != 221 || len(out.Txns) != 3 {
		t.Fatalf("conversation: %+v", out)
	}
	want := [][2][]string{
		{{"250 ", "550 5.1.1 ", "250 ", "250 "}, {"250 2.0.0 ", "452 4.2.2 ", "250 2.0.0 "}},
		{{"250 "}, {"554 5.4.6 "}},
		{{"250 "}, {"250 2.0.0 "}},
	}
	for i, w := range want {
		got := out.Txns[i]
		if len(got.Rcpt) != len(w[0]) || len(got.Data) != len(w[1]) {
			t.Fatalf("transaction %d: %+v, want %v", i, got, w)
		}
		for k, p := range w[0] {
			if !strings.HasPrefix(got.Rcpt[k], p) {
				t.Errorf("transaction %d RCPT %d: %q, want %q", i, k, got.Rcpt[k], p)
			}
		}
		for k, p := range w[1] {
			if !strings.HasPrefix(got.Data[k], p) {
				t.Errorf("transaction %d reply %d after DATA: %q, want %q", i, k, got.Data[k], p)
			}
		}
	}
	inbox := files(t, filepath.Join(bob, "new"))
	lists := files(t, filepath.Join(bob, ".lists", "new"))
	if len(inbox) != 2 || len(lists) != 1 {
		t.Fatalf("bob: INBOX %v, lists %v; want 2 and 1", inbox, lists)
	}
	got, _ := os.ReadFile(filepath.Join(bob, ".lists", "new", lists[0]))
	if want := "Return-Path: <alice@example.net>\nDelivered-To: bob+lists@example.org\nSubject: one\n\nbody\n"; string(got) != want {
		t.Errorf("bob+lists got %q, want %q", got, want)
	}
	if n := len(visible(t, carol)); n != 0 {
		t.Errorf("carol, over quota, has %d messages", n)
	}
	if os.Geteuid() == 0 {
		var st syscall.Stat_t
		syscall.Stat(filepath.Join(bob, "new", inbox[0]), &st)
		if st.Uid != 65534 {
			t.Errorf("delivered as uid %d, not the account's 65534", st.Uid)
		}
	}
}

var lmtpTxns = []lmtpTxn{
	{From: "alice@example.net", To: []string{"bob@example.org", "nobody@example.org", "carol@example.org", "bob+lists@example.org"}, Msg: "Subject: one\r\n\r\nbody\r\n"},
	{From: "alice@example.net", To: []string{"bob@example.org"}, Msg: "Delivered-To: bob@example.org\r\nSubject: looping\r\n\r\nbody\r\n"},
	{From: "", To: []string{"bob@example.org"}, Msg: "Subject: bounce\r\n\r\nbody\r\n"},
}

// TestLMTPStdio: python3's smtplib.LMTP talks to `tern-deliver --lmtp`
// over its standard input and output (two pipes), as tern-queue and
// inetd start it: per-recipient answers, +detail, quota, loop.
func TestLMTPStdio(t *testing.T) {
	Need(t, "python3")
	r := NewRoot(t)
	bob, carol := lmtpAccounts(r)
	out := runLMTPClient(t, r, lmtpTxns, "-", Bin("tern-deliver"), "--lmtp")
	checkLMTPConversation(t, out, bob, carol)
	if out.Exit != 0 {
		t.Errorf("tern-deliver --lmtp exited %d after QUIT", out.Exit)
	}
}

// TestLMTPUnixSocket: the same through `tern-deliver --lmtp --listen
// unix:PATH`, and the listener's log names every delivery.
func TestLMTPUnixSocket(t *testing.T) {
	Need(t, "python3")
	r := NewRoot(t)
	bob, carol := lmtpAccounts(r)
	sock := r.Path("lmtp.sock")
	p := r.Start(nil, nil, "tern-deliver", "--lmtp", "--listen", "unix:"+sock, "--socket-mode", "0660")
	Eventually(t, 10*time.Second, "the socket is listening", func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	st, err := os.Stat(sock)
	if err != nil || st.Mode().Perm() != 0o660 {
		t.Errorf("socket %v, %v: want mode 0660", st, err)
	}
	out := runLMTPClient(t, r, lmtpTxns, sock)
	checkLMTPConversation(t, out, bob, carol)
	p.Signal(syscall.SIGTERM)
	res, ok := p.Wait(10 * time.Second)
	if !ok || res.Code != 0 {
		t.Fatalf("after SIGTERM: %v", res)
	}
	for _, want := range []string{"tern-lmtpd: info: listening addr=" + sock, "tern-lmtpd: info: delivered ", "to=bob+lists@example.org", "status=4.2.2", "status=5.4.6", "status=5.1.1"} {
		if !strings.Contains(res.Stderr, want) {
			t.Errorf("log lacks %q:\n%s", want, res.Stderr)
		}
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left after SIGTERM: %v", err)
	}
}
