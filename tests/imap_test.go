package tests

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/tern-mail/tern/internal/testcert"
)

// startIMAP starts tern-imapd --listen on a free loopback port.
func startIMAP(t *testing.T, r *Root, args ...string) (*Proc, string) {
	t.Helper()
	p := r.Start(nil, nil, "tern-imapd", append([]string{"--listen", "127.0.0.1:0"}, args...)...)
	re := regexp.MustCompile(`tern-imapd: info: listening addr=(\S+)`)
	var addr string
	Eventually(t, 10*time.Second, "tern-imapd reports its address:\n"+p.Stderr(), func() bool {
		if m := re.FindStringSubmatch(p.Stderr()); m != nil {
			addr = m[1]
			return true
		}
		return false
	})
	return p, addr
}

// imaplibSession drives every command a mail client uses through
// python3's imaplib and prints what came back, one fact a line; the
// error answers are checked by their response codes.
const imaplibSession = `
import imaplib, re, sys
host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def code(e):
    m = re.search(r"\[([A-Z-]+)", str(e))
    return m.group(1) if m else str(e)
def tryit(f):
    try:
        return f()
    except imaplib.IMAP4.error as e:
        return e
bad = imaplib.IMAP4(host, port, timeout=20)
try:
    bad.login(user, "wrong")
except imaplib.IMAP4.error as e:
    print("badlogin", code(e))
m = imaplib.IMAP4(host, port, timeout=20)
print("caps", " ".join(sorted(m.capabilities)))
m.login(user, pw)
typ, data = m.capability()
print("authcaps", data[0].decode())
typ, data = m.list()
print("list", " ".join(l.decode().split(' "." ')[1].strip('"') for l in data))
typ, data = m.select("INBOX")
print("select", data[0].decode())
typ, data = m.fetch("1:*", "(UID FLAGS RFC822.SIZE)")
print("fetch", len(data))
typ, data = m.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
print("subject", data[0][1].decode().strip())
typ, data = m.fetch("3", "(BODY[])")
print("body3", len(data[0][1]), data[0][1].count(b"\r\n"))
typ, data = m.fetch("3", "(FLAGS)")
print("seen3", "\\Seen" in data[0].decode())
typ, data = m.search(None, "SUBJECT", "second")
print("search", data[0].decode())
typ, data = m.uid("SEARCH", "UNSEEN")
print("unseen", data[0].decode())
typ, data = m.store("1", "+FLAGS", "(\\Flagged $Important)")
print("store", data[0].decode())
typ, data = m.copy("1:2", "Archive")
print("copy", typ, data[0].decode())
print("copymissing", code(tryit(lambda: m.copy("1", "Nowhere"))))
typ, data = m.create("Work.Projects")
print("create", typ)
print("createdup", code(tryit(lambda: m.create("Work.Projects"))))
print("createbad", code(tryit(lambda: m.create("a/../b"))))
typ, data = m.rename("Work", "Jobs")
print("rename", typ)
typ, data = m.list('""', "Jobs*")
print("renamed", " ".join(l.decode().split(' "." ')[1].strip('"') for l in data))
typ, data = m.append("Jobs.Projects", "(\\Seen)", '"01-Dec-2026 09:30:00 +0000"', b"Subject: appended\r\n\r\nline\r\n")
print("append", data[0].decode())
print("appendmissing", code(tryit(lambda: m.append("Missing", None, None, b"Subject: x\r\n\r\ny\r\n"))))
typ, data = m.status("Jobs.Projects", "(MESSAGES UNSEEN UIDNEXT SIZE)")
print("status", data[0].decode())
print("selectmissing", code(tryit(lambda: m.select("Nonexistent"))))
m.select("INBOX")
m.store("2", "+FLAGS", "\\Deleted")
typ, data = m.expunge()
print("expunge", data[0].decode())
typ, data = m.select("INBOX", readonly=True)
print("storereadonly", code(tryit(lambda: m.store("1", "+FLAGS", "\\Deleted"))))
typ, data = m.delete("Jobs.Projects")
print("delete", typ)
typ, data = m.namespace()
print("namespace", data[0].decode())
typ, data = m.xatom("ID", '("name" "imaplib")')
print("id", typ, m.untagged_responses.pop("ID", [b""])[0].decode())
m.unselect()
typ, data = m.enable("UTF8=ACCEPT")
print("enable", typ)
m.select("INBOX")
typ, data = m.sort("(REVERSE SUBJECT)", "UTF-8", "ALL")
print("sort", data[0].decode())
typ, data = m.thread("REFERENCES", "UTF-8", "ALL")
print("thread", data[0].decode())
typ, data = m.unselect()
print("unselect", typ)
typ, data = m.list('""', "Sent")
print("specialuse", data[0].decode())
typ, data = m.getquotaroot("INBOX")
print("quotaroot", typ)
m.logout()
`

func TestIMAPImaplib(t *testing.T) {
	r := NewRoot(t)
	a := newPOPAccount(t, r)
	p, addr := startIMAP(t, r)
	host, port, _ := net.SplitHostPort(addr)
	res := python(t, r, imaplibSession, host, port, a.user, a.pass)
	if res.Code != 0 {
		t.Fatalf("imaplib: %v\nserver:\n%s", res, p.Stderr())
	}
	got := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(res.Stdout), "\n") {
		k, v, _ := strings.Cut(l, " ")
		got[k] = v
	}
	want := map[string]func(string) bool{
		"badlogin":      eq("AUTHENTICATIONFAILED"),
		"caps":          contains("IMAP4REV1", "IMAP4REV2", "AUTH=PLAIN", "SASL-IR", "LITERAL+", "ID"),
		"authcaps":      contains("IDLE", "UIDPLUS", "MOVE", "NAMESPACE", "UNSELECT", "ENABLE", "COMPRESS=DEFLATE", "SORT", "THREAD=REFERENCES", "QUOTA", "SPECIAL-USE", "LIST-STATUS", "ESEARCH", "BINARY", "APPENDLIMIT="),
		"list":          eq("INBOX Archive Drafts Junk Sent Trash"),
		"select":        eq("3"),
		"fetch":         eq("3"),
		"subject":       eq("Subject: second"),
		"seen3":         eq("True"),
		"search":        eq("2"),
		"unseen":        eq("1 2"),
		"store":         contains(`\Flagged`, "$Important"),
		"copy":          eq("OK [COPYUID"),
		"copymissing":   eq("TRYCREATE"),
		"create":        eq("OK"),
		"createdup":     eq("ALREADYEXISTS"),
		"createbad":     eq("CANNOT"),
		"rename":        eq("OK"),
		"renamed":       eq("Jobs Jobs.Projects"),
		"append":        contains("APPENDUID"),
		"appendmissing": eq("TRYCREATE"),
		"status":        contains("MESSAGES 1", "UNSEEN 0", "UIDNEXT 2"),
		"selectmissing": eq("NONEXISTENT"),
		"expunge":       eq("2"),
		"storereadonly": eq("READ-ONLY"),
		"delete":        eq("OK"),
		"namespace":     eq(`(("" ".")) NIL NIL`),
		"id":            contains(`"name" "tern"`),
		"enable":        eq("OK"),
		"sort":          eq("2 1"),
		"thread":        eq("(1)(2)"),
		"unselect":      eq("OK"),
		"specialuse":    contains(`\Sent`),
		"quotaroot":     eq("OK"),
	}
	for k, ok := range want {
		v, have := got[k]
		if !have || !ok(v) {
			t.Errorf("%s: got %q (have %v)", k, v, have)
		}
	}
	if t.Failed() {
		t.Logf("imaplib said:\n%s\nserver:\n%s", res.Stdout, p.Stderr())
	}
	// body3: the delivered message, CRLF line ends.
	if v := got["body3"]; !strings.HasSuffix(v, " 7") {
		t.Errorf("BODY[] of message 3: %q, want 7 CRLF lines", v)
	}
	if !strings.HasPrefix(got["copy"], "OK [COPYUID") {
		t.Errorf("copy: %q", got["copy"])
	}
}

func eq(s string) func(string) bool {
	return func(v string) bool { return v == s || strings.HasPrefix(v, s) }
}

func contains(ss ...string) func(string) bool {
	return func(v string) bool {
		for _, s := range ss {
			if !strings.Contains(v, s) {
				return false
			}
		}
		return true
	}
}

// TestIMAPPrivacyRequired: a client that is not on loopback and not
// under TLS is told LOGINDISABLED, and LOGIN and AUTHENTICATE are
// refused with PRIVACYREQUIRED (RFC 9051 §6.2.3), here with the
// connection on stdin and stdout as tcpserver gives it.
func TestIMAPPrivacyRequired(t *testing.T) {
	r := NewRoot(t)
	a := newPOPAccount(t, r)
	res := r.Run("c CAPABILITY\r\nl LOGIN "+a.user+" "+a.pass+"\r\na AUTHENTICATE PLAIN AGJvYgBwZW5jaWwtaG9yc2UtOQ==\r\nq LOGOUT\r\n",
		[]string{"TCPREMOTEIP=192.0.2.9", "TCPREMOTEPORT=4000"}, "tern-imapd")
	if res.Code != 0 {
		t.Fatalf("tern-imapd: %v", res)
	}
	for _, want := range []string{"LOGINDISABLED", "l NO [PRIVACYREQUIRED]", "a NO [PRIVACYREQUIRED]", "q OK"} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("no %q in:\n%s", want, res.Stdout)
		}
	}
	if strings.Contains(res.Stdout, "AUTH=PLAIN") {
		t.Errorf("AUTH=PLAIN offered in the clear:\n%s", res.Stdout)
	}
	if strings.Contains(res.Stderr, "login failed") || strings.Contains(res.Stderr, "info: login") {
		t.Errorf("a password sent in the clear was checked:\n%s", res.Stderr)
	}
}

// TestIMAPIdleSeesOtherProcesses: a client idling on INBOX in one
// tern-imapd process is told of a delivery by tern-deliver, of a flag
// change and of an expunge made through another tern-imapd process,
// each within a few seconds (inotify, or the watch's look every second).
func TestIMAPIdleSeesOtherProcesses(t *testing.T) {
	r := NewRoot(t)
	a := newPOPAccount(t, r)
	p1, addr1 := startIMAP(t, r)
	_, addr2 := startIMAP(t, r)

	type update struct {
		exists  uint32
		expunge uint32
		flags   []imap.Flag
	}
	updates := make(chan update, 16)
	idler, err := imapclient.DialInsecure(addr1, &imapclient.Options{
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Mailbox: func(d *imapclient.UnilateralDataMailbox) {
				if d.NumMessages != nil {
					updates <- update{exists: *d.NumMessages}
				}
			},
			Expunge: func(seq uint32) { updates <- update{expunge: seq} },
			Fetch: func(m *imapclient.FetchMessageData) {
				if buf, err := m.Collect(); err == nil {
					updates <- update{flags: buf.Flags}
				}
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer idler.Close()
	if err := idler.Login(a.user, a.pass).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := idler.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := idler.Idle()
	if err != nil {
		t.Fatal(err)
	}
	wait := func(what string, ok func(update) bool) {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case u := <-updates:
				if ok(u) {
					return
				}
			case <-deadline:
				t.Fatalf("the idling client was not told of %s within 5s\nserver 1:\n%s", what, p1.Stderr())
			}
		}
	}

	if res := r.Run("Subject: fourth\n\nhello\n", nil, "tern-deliver", "-f", "x@example.org", "-r", "bob@example.net", a.maildir); res.Code != 0 {
		t.Fatalf("deliver: %v", res)
	}
	chownAccount(t, a)
	wait("a delivery", func(u update) bool { return u.exists == 4 })

	other, err := imapclient.DialInsecure(addr2, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Login(a.user, a.pass).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := other.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	wait("a flag change", func(u update) bool {
		for _, f := range u.flags {
			if f == imap.FlagFlagged {
				return true
			}
		}
		return false
	})
	if err := other.Store(imap.SeqSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := other.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	wait("an expunge", func(u update) bool { return u.expunge == 2 })
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
}

// chownAccount gives a delivery made as root to the account (uid 65534
// under root), while servers work in the Maildir: files that vanish
// meanwhile (their temporary files) are no error.
func chownAccount(t *testing.T, a *popAccount) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	err := filepath.Walk(a.home, func(p string, _ os.FileInfo, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := os.Lchown(p, 65534, 65534); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// imaplibTLS logs in after STARTTLS, or over implicit TLS, and reads the
// INBOX; the certificate is the test's own, so it is not verified.
const imaplibTLS = `
import imaplib, ssl, sys
host, port, user, pw, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if mode == "starttls":
    m = imaplib.IMAP4(host, port, timeout=20)
    print("before", " ".join(sorted(m.capabilities)))
    m.starttls(ssl_context=ctx)
else:
    m = imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=20)
print("after", " ".join(sorted(m.capabilities)))
m.login(user, pw)
typ, data = m.select("INBOX")
print("select", data[0].decode())
m.logout()
`

// TestIMAPTLS: STARTTLS, and implicit TLS with --tls; under TLS the
// capabilities offer the logins and no STARTTLS.
func TestIMAPTLS(t *testing.T) {
	r := NewRoot(t)
	a := newPOPAccount(t, r)
	testcert.Write(t, r.Conf, 1)
	for _, mode := range []string{"starttls", "tls"} {
		args := []string{}
		if mode == "tls" {
			args = append(args, "--tls")
		}
		p, addr := startIMAP(t, r, args...)
		host, port, _ := net.SplitHostPort(addr)
		res := python(t, r, imaplibTLS, host, port, a.user, a.pass, mode)
		if res.Code != 0 {
			t.Fatalf("%s: %v\nserver:\n%s", mode, res, p.Stderr())
		}
		if mode == "starttls" && !strings.Contains(res.Stdout, "STARTTLS") {
			t.Errorf("STARTTLS not offered:\n%s", res.Stdout)
		}
		if !strings.Contains(res.Stdout, "select 3") {
			t.Errorf("%s: %s", mode, res.Stdout)
		}
		after := res.Stdout[strings.Index(res.Stdout, "after"):]
		if strings.Contains(after, "STARTTLS") || strings.Contains(after, "LOGINDISABLED") || !strings.Contains(after, "AUTH=PLAIN") {
			t.Errorf("%s: capabilities under TLS: %s", mode, after)
		}
	}
}
