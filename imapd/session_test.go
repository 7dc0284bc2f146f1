package imapd

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/tern-mail/tern/internal/auth"
	"github.com/tern-mail/tern/maildir"
)

// mailbox is an account with a real Maildir, served in-process.
type mailbox struct {
	t     testing.TB
	dir   string
	users string
	store *maildir.Store
}

func newMailbox(t testing.TB, messages int) *mailbox {
	t.Helper()
	root := t.TempDir()
	mb := &mailbox{t: t, dir: filepath.Join(root, "Maildir"), users: filepath.Join(root, "users")}
	if err := os.WriteFile(mb.users, []byte("alice:{PLAIN}secret::::"+root+"::\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	store, err := maildir.Create(mb.dir, 0o700)
	if err != nil {
		t.Fatal(err)
	}
	mb.store = store
	for i := 1; i <= messages; i++ {
		mb.deliver(fmt.Sprintf("Subject: message %d\nFrom: a%d@example.org\nDate: Mon, 0%d Nov 2026 10:00:00 +0000\n\nbody %d\n", i, i, i, i))
	}
	return mb
}

func (mb *mailbox) deliver(msg string) {
	mb.t.Helper()
	if _, err := mb.store.Inbox().Deliver(strings.NewReader(msg), maildir.DeliverOptions{}); err != nil {
		mb.t.Fatal(err)
	}
}

// session serves one connection on the mailbox and returns its wire.
func (mb *mailbox) session(remote string) *wire {
	mb.t.Helper()
	accounts := Accounts{
		Authenticator: &auth.UsersFile{Path: mb.users},
		Open: func(a *auth.Account) (*maildir.Store, error) {
			return maildir.Open(a.Maildir)
		},
	}
	cfg := Config{
		Remote: netip.MustParseAddr(remote),
		NewSession: func(st *ConnState) (imapserver.Session, bool, error) {
			s, err := NewSession(context.Background(), st, accounts, nil)
			return s, false, err
		},
	}
	return newWire(mb.t, startFront(mb.t, cfg))
}

func (mb *mailbox) loggedIn() *wire {
	w := mb.session("127.0.0.1")
	login(w)
	return w
}

// until reads up to the tagged answer and returns the lines before it
// and the answer.
func (w *wire) until(tag string) ([]string, string) {
	w.t.Helper()
	var lines []string
	for i := 0; i < 1000000; i++ {
		l := w.line()
		if strings.HasPrefix(l, tag+" ") {
			return lines, l
		}
		lines = append(lines, l)
	}
	w.t.Fatalf("no answer to %s", tag)
	return nil, ""
}

func (w *wire) cmd(tag, command string) ([]string, string) {
	w.t.Helper()
	w.send(tag + " " + command + "\r\n")
	return w.until(tag)
}

func (w *wire) ok(tag, command string) []string {
	w.t.Helper()
	lines, status := w.cmd(tag, command)
	if !strings.HasPrefix(status, tag+" OK") {
		w.t.Fatalf("%s: %s (after %q)", command, status, lines)
	}
	return lines
}

// TestSessionStarInClientView: imapserver's example backend and its
// MailboxTracker resolve "*" with the server's message count. While an
// expunge by another session is not yet told, the client's "*" is still
// its last message: the session must answer for that one, and tell the
// expunge afterwards.
func TestSessionStarInClientView(t *testing.T) {
	mb := newMailbox(t, 3)
	a := mb.loggedIn()
	a.ok("s", "SELECT INBOX")
	b := mb.loggedIn()
	b.ok("s", "SELECT INBOX")
	b.ok("d", `STORE 1 +FLAGS.SILENT (\Deleted)`)
	b.ok("e", "EXPUNGE")

	lines := a.ok("f", "FETCH * (UID)")
	if len(lines) != 1 || lines[0] != "* 3 FETCH (UID 3)" {
		t.Errorf("FETCH * with an expunge not yet told: %q, want * 3 FETCH (UID 3)", lines)
	}
	lines = a.ok("s", "SEARCH ALL")
	if !contains(lines, "* SEARCH 1 2 3") {
		t.Errorf("SEARCH with an expunge not yet told (RFC 9051 §7.5.1: no EXPUNGE during SEARCH): %q", lines)
	}
	// The UID commands may tell it (RFC 9051 §7.5.1).
	lines = a.ok("u", "UID FETCH 2:* (UID)")
	if !contains(lines, "* 1 EXPUNGE") {
		t.Errorf("UID FETCH after another session's expunge: %q, want * 1 EXPUNGE", lines)
	}
	lines = a.ok("f2", "FETCH * (UID)")
	if len(lines) != 1 || lines[0] != "* 2 FETCH (UID 3)" {
		t.Errorf("FETCH * once told: %q", lines)
	}
}

func contains(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

// TestSessionExamineReadOnly: imapserver beta.9 lets STORE, EXPUNGE and
// MOVE through on a mailbox opened with EXAMINE; the session refuses
// them, and fetching a body sets no \Seen.
func TestSessionExamineReadOnly(t *testing.T) {
	mb := newMailbox(t, 2)
	w := mb.loggedIn()
	w.ok("s", "SELECT INBOX")
	w.ok("d", `STORE 1 +FLAGS.SILENT (\Deleted)`)
	w.ok("x", "EXAMINE INBOX")
	for _, c := range []string{`STORE 2 +FLAGS (\Flagged)`, "EXPUNGE", "MOVE 1 Archive", "UID EXPUNGE 1"} {
		if _, st := w.cmd("r", c); !strings.HasPrefix(st, "r NO [READ-ONLY]") {
			t.Errorf("%s after EXAMINE: %q, want NO [READ-ONLY]", c, st)
		}
	}
	w.ok("b", "FETCH 2 (BODY[])")
	lines := w.ok("f", "FETCH 1:2 (FLAGS)")
	if len(lines) != 2 || strings.Contains(lines[1], `\Seen`) || !strings.Contains(lines[0], `\Deleted`) {
		t.Errorf("flags after EXAMINE: %q: message 1 keeps \\Deleted, message 2 gets no \\Seen", lines)
	}
	w.ok("c", "CLOSE")
	w.ok("s2", "SELECT INBOX")
	lines = w.ok("f2", "FETCH 1:* (UID)")
	if len(lines) != 2 {
		t.Errorf("CLOSE of a read-only mailbox expunged: %q", lines)
	}
}

// TestSessionMoveCopy: MOVE and COPY with their UIDPLUS answers, and
// TRYCREATE for a missing destination.
func TestSessionMoveCopy(t *testing.T) {
	mb := newMailbox(t, 3)
	w := mb.loggedIn()
	w.ok("s", "SELECT INBOX")
	lines := w.ok("m", "UID MOVE 2 Archive")
	if !contains(lines, "* OK [COPYUID 1 2 1] ") && (len(lines) < 2 || !strings.HasPrefix(lines[0], "* OK [COPYUID ") || lines[1] != "* 2 EXPUNGE") {
		t.Errorf("UID MOVE: %q", lines)
	}
	_, st := w.cmd("c", "COPY 1 Nowhere")
	if !strings.HasPrefix(st, "c NO [TRYCREATE]") {
		t.Errorf("COPY to a missing mailbox: %q", st)
	}
	_, st = w.cmd("c2", "COPY 1:2 Archive")
	// Sequence numbers 1:2 are UIDs 1 and 3 after the MOVE of UID 2.
	if !strings.Contains(st, "[COPYUID ") || !strings.Contains(st, " 1,3 2:3]") {
		t.Errorf("COPY: %q", st)
	}
	lines = w.ok("st", "STATUS Archive (MESSAGES UIDNEXT)")
	if len(lines) != 1 || !strings.Contains(lines[0], "MESSAGES 3") || !strings.Contains(lines[0], "UIDNEXT 4") {
		t.Errorf("STATUS after MOVE and COPY: %q", lines)
	}
}

// TestSessionOverQuota: APPEND and COPY over the maildirsize quota get
// NO [OVERQUOTA]; GETQUOTAROOT tells the usage.
func TestSessionOverQuota(t *testing.T) {
	mb := newMailbox(t, 2)
	if err := mb.store.SetQuota(0, 3); err != nil {
		t.Fatal(err)
	}
	w := mb.loggedIn()
	lines := w.ok("q", "GETQUOTAROOT INBOX")
	if len(lines) != 2 || lines[0] != `* QUOTAROOT "INBOX" ""` || lines[1] != `* QUOTA "" (MESSAGE 2 3)` {
		t.Errorf("GETQUOTAROOT: %q", lines)
	}
	w.ok("a", "APPEND INBOX {5+}\r\nab\r\nc")
	w.send("a2 APPEND INBOX {5+}\r\nab\r\nc\r\n")
	if _, st := w.until("a2"); !strings.HasPrefix(st, "a2 NO [OVERQUOTA]") {
		t.Errorf("APPEND over the quota: %q", st)
	}
	w.ok("s", "SELECT INBOX")
	if _, st := w.cmd("c", "COPY 1 Archive"); !strings.HasPrefix(st, "c NO [OVERQUOTA]") {
		t.Errorf("COPY over the quota: %q", st)
	}
}

// TestSessionNames: names that would leave the Maildir or break it are
// refused before they touch the disk.
func TestSessionNames(t *testing.T) {
	mb := newMailbox(t, 0)
	w := mb.loggedIn()
	for _, name := range []string{`"a..b"`, `"../x"`, `".hidden"`, `"a/b"`, `"x*"`, `"trailing.."`, `"tab` + "\t" + `"`} {
		if _, st := w.cmd("c", "CREATE "+name); !strings.HasPrefix(st, "c NO [CANNOT]") && !strings.HasPrefix(st, "c BAD") {
			t.Errorf("CREATE %s: %q", name, st)
		}
	}
	ents, _ := os.ReadDir(filepath.Dir(mb.dir))
	for _, e := range ents {
		if e.Name() != "Maildir" && e.Name() != "users" {
			t.Errorf("a name escaped the Maildir: %s", e.Name())
		}
	}
	ents, _ = os.ReadDir(mb.dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), "hidden") || strings.Contains(e.Name(), "..") {
			t.Errorf("a bad name reached the Maildir: %s", e.Name())
		}
	}
	if _, st := w.cmd("d", "DELETE INBOX"); !strings.HasPrefix(st, "d NO") {
		t.Errorf("DELETE INBOX: %q", st)
	}
}

// TestSessionRenameInbox: RENAME INBOX moves its messages to the new
// folder and leaves INBOX there, empty (RFC 9051 §6.3.6); nothing can be
// renamed to INBOX.
func TestSessionRenameInbox(t *testing.T) {
	mb := newMailbox(t, 3)
	w := mb.loggedIn()
	if _, st := w.cmd("r", "RENAME INBOX Old.Mail"); !strings.HasPrefix(st, "r OK") {
		t.Fatalf("RENAME INBOX: %q", st)
	}
	for name, want := range map[string]string{"INBOX": "MESSAGES 0", "Old.Mail": "MESSAGES 3"} {
		lines, st := w.cmd("s", "STATUS "+name+" (MESSAGES)")
		if !strings.HasPrefix(st, "s OK") || len(lines) != 1 || !strings.Contains(lines[0], want) {
			t.Errorf("STATUS %s after RENAME INBOX: %q %q, want %s", name, lines, st, want)
		}
	}
	if _, st := w.cmd("r", "RENAME INBOX Old.Mail"); !strings.HasPrefix(st, "r NO [ALREADYEXISTS]") {
		t.Errorf("RENAME INBOX onto an existing folder: %q", st)
	}
	if _, st := w.cmd("r", "RENAME Old.Mail INBOX"); !strings.HasPrefix(st, "r NO [ALREADYEXISTS]") {
		t.Errorf("RENAME to INBOX: %q", st)
	}
}

// TestSessionLoginFailure: a wrong password is AUTHENTICATIONFAILED,
// through LOGIN and through AUTHENTICATE PLAIN with an initial response.
func TestSessionLoginFailure(t *testing.T) {
	mb := newMailbox(t, 0)
	w := mb.session("127.0.0.1")
	if _, st := w.cmd("l", "LOGIN alice wrong"); !strings.HasPrefix(st, "l NO [AUTHENTICATIONFAILED]") {
		t.Errorf("LOGIN with a wrong password: %q", st)
	}
	// "\0alice\0wrong"
	if _, st := w.cmd("a", "AUTHENTICATE PLAIN AGFsaWNlAHdyb25n"); !strings.HasPrefix(st, "a NO [AUTHENTICATIONFAILED]") {
		t.Errorf("AUTHENTICATE with a wrong password: %q", st)
	}
	w.send("a2 AUTHENTICATE PLAIN\r\n")
	if l := w.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("AUTHENTICATE without an initial response: %q", l)
	}
	w.send("AGFsaWNlAHNlY3JldA==\r\n")
	if _, st := w.until("a2"); !strings.HasPrefix(st, "a2 OK") {
		t.Errorf("AUTHENTICATE PLAIN: %q", st)
	}
}

// TestSessionIdle: a client in IDLE hears of a delivery.
func TestSessionIdle(t *testing.T) {
	mb := newMailbox(t, 1)
	w := mb.loggedIn()
	w.ok("s", "SELECT INBOX")
	w.send("i IDLE\r\n")
	if l := w.line(); !strings.HasPrefix(l, "+ ") {
		t.Fatalf("IDLE: %q", l)
	}
	mb.deliver("Subject: new\n\nhello\n")
	w.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if l := w.expect("* 2 EXISTS"); l != "* 2 EXISTS" {
		t.Fatal(l)
	}
	w.send("DONE\r\n")
	w.until("i")
}

// TestSessionFetchSections: BODY[] of a message without a header is its
// bytes (imapserver's extraction gives nothing), partial fetches cut
// where asked, and a header field comes alone.
func TestSessionFetchSections(t *testing.T) {
	mb := newMailbox(t, 1)
	w := mb.loggedIn()
	w.ok("s", "SELECT INBOX")
	w.ok("a", "APPEND INBOX {7+}\r\nab\r\ncd")
	w.ok("n", "NOOP")
	for _, c := range []struct{ cmd, want string }{
		{"FETCH 2 (BODY.PEEK[])", `* 2 FETCH (BODY[] {7}`},
		{"FETCH 2 (BODY.PEEK[]<2.3>)", `* 2 FETCH (BODY[]<2> {3}`},
		{"FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])", `* 1 FETCH (BODY[HEADER.FIELDS ("SUBJECT")] {22}`},
		{"FETCH 1 (RFC822.SIZE BODY.PEEK[TEXT])", `* 1 FETCH (RFC822.SIZE 91 BODY[TEXT] {8}`},
	} {
		lines := w.ok("f", c.cmd)
		if len(lines) == 0 || lines[0] != c.want {
			t.Errorf("%s: %q, want %q", c.cmd, lines, c.want)
		}
	}
}

// TestSessionSortThread: SORT and THREAD (RFC 5256) over messages whose
// subjects, dates, senders and references differ.
func TestSessionSortThread(t *testing.T) {
	mb := newMailbox(t, 0)
	for _, m := range []string{
		"Subject: Meeting\nDate: Tue, 03 Nov 2026 10:00:00 +0000\nFrom: carol@example.org\nMessage-ID: <1@x>\n\n.\n",
		"Subject: Re: Meeting\nDate: Wed, 04 Nov 2026 10:00:00 +0000\nFrom: Alice <alice@example.org>\nMessage-ID: <2@x>\nReferences: <1@x>\n\n.\n",
		"Subject: Lunch\nDate: Sun, 01 Nov 2026 10:00:00 +0000\nFrom: bob@example.org\nMessage-ID: <3@x>\n\n.\n",
		"Subject: [list] Re: Meeting\nDate: Thu, 05 Nov 2026 10:00:00 +0000\nFrom: dave@example.org\nMessage-ID: <4@x>\nIn-Reply-To: <2@x>\n\n.\n",
		"Subject: Fwd: Lunch (fwd)\nDate: Mon, 02 Nov 2026 10:00:00 +0000\nFrom: erin@example.org\nMessage-ID: <5@x>\n\n.\n",
	} {
		mb.deliver(m)
	}
	w := mb.loggedIn()
	w.ok("s", "SELECT INBOX")
	for _, c := range []struct{ cmd, want string }{
		{"SORT (SUBJECT) UTF-8 ALL", "* SORT 3 5 1 2 4"},
		{"SORT (REVERSE DATE) UTF-8 ALL", "* SORT 4 2 1 5 3"},
		{"SORT (FROM) US-ASCII ALL", "* SORT 2 3 1 4 5"},
		{"SORT (SUBJECT REVERSE DATE) UTF-8 ALL", "* SORT 5 3 4 2 1"},
		{"UID SORT (SIZE ARRIVAL) UTF-8 FROM erin", "* SORT 5"},
		{"SORT (DATE) UTF-8 SUBJECT nothing-matches", "* SORT"},
		{"THREAD ORDEREDSUBJECT UTF-8 ALL", "* THREAD (3 5)(1 (2)(4))"},
		{"THREAD REFERENCES UTF-8 ALL", "* THREAD (3 5)(1 2 4)"},
		{"UID THREAD REFERENCES UTF-8 NOT FROM alice", "* THREAD (3 5)(1 4)"},
	} {
		lines := w.ok("t", c.cmd)
		if len(lines) != 1 || lines[0] != c.want {
			t.Errorf("%s: %q, want %q", c.cmd, lines, c.want)
		}
	}
	// With IMAP4rev2 on, imapserver answers the front's SEARCH with
	// ESEARCH; SORT reads that too, and the client sees neither.
	w.ok("e", "ENABLE IMAP4rev2")
	if lines := w.ok("t", "UID SORT (REVERSE SUBJECT) UTF-8 ALL"); len(lines) != 1 || lines[0] != "* SORT 1 2 4 3 5" {
		t.Errorf("UID SORT after ENABLE IMAP4rev2: %q", lines)
	}
	if _, st := w.cmd("b", "SORT (DATE) KOI8-R ALL"); !strings.HasPrefix(st, "b NO [BADCHARSET") {
		t.Errorf("SORT with another charset: %q", st)
	}
	if _, st := w.cmd("b", "SORT (NOSUCH) UTF-8 ALL"); !strings.HasPrefix(st, "b BAD") {
		t.Errorf("SORT with an unknown criterion: %q", st)
	}
	if _, st := w.cmd("b", "THREAD X UTF-8 ALL"); !strings.HasPrefix(st, "b BAD") {
		t.Errorf("THREAD with an unknown algorithm: %q", st)
	}
}

func TestBaseSubject(t *testing.T) {
	for _, c := range []struct {
		in, want string
		reply    bool
	}{
		{"Meeting", "Meeting", false},
		{"Re: Meeting", "Meeting", true},
		{"RE[2]: Re:  Meeting  (fwd)", "Meeting", true},
		{"[list] Re: [other] Meeting", "Meeting", true},
		{"[fwd: Re: Meeting]", "Meeting", true},
		{"[only a blob]", "[only a blob]", false},
		{"Fwd:", "", true},
	} {
		got, reply := baseSubject(c.in)
		if got != c.want || reply != c.reply {
			t.Errorf("baseSubject(%q) = %q, %v; want %q, %v", c.in, got, reply, c.want, c.reply)
		}
	}
}
