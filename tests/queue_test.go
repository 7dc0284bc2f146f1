package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
)

// newQueueRoot makes a root with the domain example.org, the host
// mx.example.org, the users bob, carol and dave (running as the test's own
// user: no uid in the users file), and aliases.
func newQueueRoot(t *testing.T) *Root {
	t.Helper()
	r := NewRoot(t)
	r.WriteFile("etc/tern/domains", "example.org\n")
	r.WriteFile("etc/tern/hostname", "mx.example.org\n")
	var users strings.Builder
	for _, u := range []string{"bob", "carol", "dave"} {
		home := filepath.Join(r.Home, u)
		if err := os.MkdirAll(home, 0o755); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&users, "%s@example.org:{PLAIN}x:::%s:%s::\n", u, u, home)
	}
	r.WriteFile("etc/tern/users", users.String())
	r.WriteFile("etc/tern/aliases", "alice: bob\nteam: alice, carol\nloop1: loop2\nloop2: loop1\npostmaster: dave@example.org\n")
	return r
}

func (r *Root) home(user string) string { return filepath.Join(r.Home, user) }

// inbox returns the messages in a Maildir's new/, oldest first: by the
// seconds and then the microseconds in their names (<sec>.M<usec>P...),
// as numbers (the microseconds are not zero-padded).
func inbox(t testing.TB, md string) []string {
	t.Helper()
	names := files(t, filepath.Join(md, "new"))
	when := func(name string) (int64, int64) {
		var sec, usec int64
		fmt.Sscanf(name, "%d.M%d", &sec, &usec)
		return sec, usec
	}
	sort.Slice(names, func(i, j int) bool {
		si, ui := when(names[i])
		sj, uj := when(names[j])
		if si != sj {
			return si < sj
		}
		return ui < uj
	})
	var out []string
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(md, "new", n))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

func (r *Root) enqueue(msg string, args ...string) Result {
	r.T.Helper()
	res := r.Run(msg, nil, "tern-enqueue", args...)
	if res.Code != 0 {
		r.T.Fatalf("tern-enqueue %v: %v", args, res)
	}
	return res
}

// runQueue runs tern-queue --once with extra arguments.
func (r *Root) runQueue(args ...string) Result {
	r.T.Helper()
	res := r.Run("", nil, "tern-queue", append([]string{"--once"}, args...)...)
	if res.Code != 0 {
		r.T.Fatalf("tern-queue --once %v: %v", args, res)
	}
	return res
}

type listedEntry struct {
	ID         string `json:"id"`
	Sender     string `json:"sender"`
	Kind       string `json:"kind"`
	Hold       bool   `json:"hold"`
	Recipients []struct {
		Address, State, Status, Answer string
		Attempts                       int
	} `json:"recipients"`
}

// startQueue runs the tern-queue daemon, its log shown if the test fails.
func (r *Root) startQueue(args ...string) *Proc {
	p := r.Start(nil, nil, "tern-queue", args...)
	r.T.Cleanup(func() {
		if r.T.Failed() {
			r.T.Log(p.Stderr())
		}
	})
	return p
}

func (r *Root) list() []listedEntry {
	r.T.Helper()
	res := r.Run("", nil, "tern-queue", "--list", "--json")
	if res.Code != 0 {
		r.T.Fatalf("tern-queue --list --json: %v", res)
	}
	var out []listedEntry
	if err := json.Unmarshal([]byte(res.Stdout), &out); err != nil {
		r.T.Fatalf("--list --json: %v\n%s", err, res.Stdout)
	}
	return out
}

const plainMsg = "From: joe@example.net\nTo: bob@example.org\nSubject: test\n\nhello\n"

func TestQueueLocalUser(t *testing.T) {
	r := newQueueRoot(t)
	res := r.enqueue(plainMsg, "-v", "-f", "joe@example.net", "--", "bob@example.org")
	id := strings.TrimPrefix(strings.TrimSpace(res.Stdout), "qid=")
	if !strings.HasPrefix(res.Stdout, "qid=") || len(id) != 21 {
		t.Fatalf("-v printed %q, want qid=<21 hex digits>", res.Stdout)
	}
	// Not taken in yet: listed from its own envelope (issue #19), by
	// tern-queue and by mailq.
	if l := r.list(); len(l) != 1 || l[0].ID != id || l[0].Kind != "incoming" || l[0].Sender != "joe@example.net" || len(l[0].Recipients) != 1 || l[0].Recipients[0].Address != "bob@example.org" {
		t.Fatalf("before tern-queue ran: %+v", l)
	}
	if res := r.Run("", nil, "tern-enqueue", "--list"); !strings.Contains(res.Stdout, "<joe@example.net> incoming") || !strings.Contains(res.Stdout, "queued    bob@example.org") || strings.Contains(res.Stdout, "        0 ") {
		t.Errorf("mailq before tern-queue ran:\n%s", res.Stdout)
	}
	q := r.runQueue()
	got := inbox(t, filepath.Join(r.home("bob"), "Maildir"))
	if len(got) != 1 {
		t.Fatalf("bob has %d messages, want 1; log:\n%s", len(got), q.Stderr)
	}
	for _, want := range []string{"Return-Path: <joe@example.net>\n", "Delivered-To: bob@example.org\n", "Message-ID: <" + id + "@mx.example.org>\n", "\nhello\n"} {
		if !strings.Contains(got[0], want) {
			t.Errorf("delivered message lacks %q:\n%s", want, got[0])
		}
	}
	if !strings.Contains(q.Stderr, "tern-queue: info: delivered qid="+id+" to=bob@example.org") {
		t.Errorf("log lacks the delivery line:\n%s", q.Stderr)
	}
	if l := r.list(); len(l) != 0 {
		t.Errorf("queue not empty after delivery: %+v", l)
	}
	for _, d := range []string{"env", "mess", "incoming"} {
		if n := files(t, filepath.Join(r.Queue, d)); len(n) != 0 {
			t.Errorf("%s/ still holds %v", d, n)
		}
	}
}

func TestQueueAlias(t *testing.T) {
	r := newQueueRoot(t)
	r.enqueue(plainMsg, "-f", "joe@example.net", "--", "team@example.org", "Alice@Example.ORG")
	q := r.runQueue()
	bob := inbox(t, filepath.Join(r.home("bob"), "Maildir"))
	carol := inbox(t, filepath.Join(r.home("carol"), "Maildir"))
	// team -> alice -> bob, and carol; Alice -> bob again, which is one
	// recipient: one copy.
	if len(bob) != 1 || len(carol) != 1 {
		t.Fatalf("bob %d, carol %d messages; want 1 each\n%s", len(bob), len(carol), q.Stderr)
	}
	if !strings.Contains(carol[0], "Delivered-To: carol@example.org\n") {
		t.Errorf("carol's copy:\n%s", carol[0])
	}
}

func TestQueueAliasLoop(t *testing.T) {
	r := newQueueRoot(t)
	r.enqueue(plainMsg, "-f", "carol@example.org", "--", "loop1@example.org")
	q := r.runQueue()
	if !strings.Contains(q.Stderr, "alias loop") {
		t.Errorf("no alias loop in the log:\n%s", q.Stderr)
	}
	dsn := parseDSN(t, onlyMessage(t, filepath.Join(r.home("carol"), "Maildir")))
	rc := dsn.recipients[0]
	if rc.Get("Final-Recipient") != "rfc822; loop1@example.org" || rc.Get("Status") != "5.4.6" || !strings.Contains(rc.Get("Diagnostic-Code"), "alias loop: loop1 -> loop2 -> loop1") {
		t.Errorf("loop DSN recipient: %v", rc.Map())
	}
}

func onlyMessage(t *testing.T, md string) string {
	t.Helper()
	got := inbox(t, md)
	if len(got) != 1 {
		t.Fatalf("%s has %d messages, want 1", md, len(got))
	}
	return got[0]
}

// dsn is a delivery status notification taken apart with go-message.
type dsn struct {
	header     message.Header
	human      string
	perMessage textproto.Header
	recipients []textproto.Header
	original   string
	parts      []string
}

// parseDSN checks the RFC 3464 shape: multipart/report with
// report-type=delivery-status, text/plain, message/delivery-status, and
// the original header.
func parseDSN(t *testing.T, raw string) *dsn {
	t.Helper()
	e, err := message.Read(strings.NewReader(raw))
	if err != nil {
		t.Fatalf("read DSN: %v\n%s", err, raw)
	}
	d := &dsn{header: e.Header}
	ct, params, err := e.Header.ContentType()
	if err != nil || ct != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("DSN Content-Type %q %v (%v)", ct, params, err)
	}
	mr := e.MultipartReader()
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("DSN part: %v", err)
		}
		pct, _, _ := p.Header.ContentType()
		d.parts = append(d.parts, pct)
		body, _ := io.ReadAll(p.Body)
		switch pct {
		case "text/plain":
			d.human = string(body)
		case "message/delivery-status":
			// RFC 3464 §2.1: groups of header-like fields separated by
			// empty lines.
			groups := strings.Split(strings.TrimSpace(string(body)), "\n\n")
			for i, g := range groups {
				h, err := textproto.ReadHeader(bufioReader(g + "\n\n"))
				if err != nil {
					t.Fatalf("delivery-status group %d: %v\n%s", i, err, g)
				}
				if i == 0 {
					d.perMessage = h
				} else {
					d.recipients = append(d.recipients, h)
				}
			}
		case "text/rfc822-headers":
			d.original = string(body)
		}
	}
	if strings.Join(d.parts, ",") != "text/plain,message/delivery-status,text/rfc822-headers" {
		t.Errorf("DSN parts %v", d.parts)
	}
	if len(d.recipients) == 0 {
		t.Fatalf("DSN without per-recipient fields:\n%s", raw)
	}
	return d
}

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }

func TestQueueBounceDSN(t *testing.T) {
	r := newQueueRoot(t)
	msg := "From: Carol <carol@example.org>\nTo: nosuch@example.org\nSubject: will bounce\nMessage-ID: <orig.1@example.org>\n\nbody text\n"
	res := r.enqueue(msg, "-v", "-f", "carol@example.org", "--", "nosuch@example.org", "bob@example.org")
	id := strings.TrimPrefix(strings.TrimSpace(res.Stdout), "qid=")
	r.runQueue()
	if n := len(inbox(t, filepath.Join(r.home("bob"), "Maildir"))); n != 1 {
		t.Errorf("bob got %d, want 1: one bad recipient must not stop the others", n)
	}
	raw := onlyMessage(t, filepath.Join(r.home("carol"), "Maildir"))
	d := parseDSN(t, raw)
	if got := d.header.Get("From"); !strings.Contains(got, "MAILER-DAEMON@mx.example.org") {
		t.Errorf("From: %q", got)
	}
	if !strings.Contains(raw, "Return-Path: <>\n") {
		t.Errorf("the bounce's envelope sender is not the null sender:\n%s", raw)
	}
	if got := d.header.Get("Auto-Submitted"); got != "auto-replied" {
		t.Errorf("Auto-Submitted: %q", got)
	}
	if got := d.perMessage.Get("Reporting-MTA"); got != "dns; mx.example.org" {
		t.Errorf("Reporting-MTA: %q", got)
	}
	if got := d.perMessage.Get("X-Tern-Queue-ID"); got != id {
		t.Errorf("queue ID %q, want %q", got, id)
	}
	if _, err := time.Parse(time.RFC1123Z, d.perMessage.Get("Arrival-Date")); err != nil {
		t.Errorf("Arrival-Date: %v", err)
	}
	if len(d.recipients) != 1 {
		t.Fatalf("%d recipients reported, want only the failed one", len(d.recipients))
	}
	rc := d.recipients[0]
	want := map[string]string{"Final-Recipient": "rfc822; nosuch@example.org", "Action": "failed", "Status": "5.1.1", "Diagnostic-Code": "X-Unix; no such user here"}
	for k, v := range want {
		if got := rc.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	if _, err := time.Parse(time.RFC1123Z, rc.Get("Last-Attempt-Date")); err != nil {
		t.Errorf("Last-Attempt-Date: %v", err)
	}
	if !strings.Contains(d.original, "Message-ID: <orig.1@example.org>") || strings.Contains(d.original, "body text") {
		t.Errorf("original header part:\n%s", d.original)
	}
	if !strings.Contains(d.human, "<nosuch@example.org>: no such user here") {
		t.Errorf("human part:\n%s", d.human)
	}
}

func TestQueueNullSender(t *testing.T) {
	for _, null := range []string{"", "<>"} {
		t.Run(fmt.Sprintf("%q", null), func(t *testing.T) {
			r := newQueueRoot(t)
			r.enqueue(plainMsg, "-f", null, "--", "nosuch@example.org")
			q := r.runQueue()
			// No bounce to <>: a double bounce to postmaster (dave), once.
			got := onlyMessage(t, filepath.Join(r.home("dave"), "Maildir"))
			d := parseDSN(t, got)
			if d.recipients[0].Get("Final-Recipient") != "rfc822; nosuch@example.org" {
				t.Errorf("double bounce reports %v", d.recipients[0].Map())
			}
			if l := r.list(); len(l) != 0 {
				t.Errorf("queue not empty: %+v\n%s", l, q.Stderr)
			}
		})
	}
	t.Run("postmaster fails too", func(t *testing.T) {
		r := newQueueRoot(t)
		r.WriteFile("etc/tern/aliases", "postmaster: nobody-here\n")
		r.enqueue(plainMsg, "-f", "<>", "--", "nosuch@example.org")
		q := r.runQueue()
		if !strings.Contains(q.Stderr, "double bounce failed: dropped") {
			t.Errorf("no drop logged:\n%s", q.Stderr)
		}
		if l := r.list(); len(l) != 0 {
			t.Errorf("queue not empty: %+v", l)
		}
	})
}

func (r *Root) forwardFile(user, content string) {
	r.T.Helper()
	p := filepath.Join(r.home(user), ".forward")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		r.T.Fatal(err)
	}
}

func TestQueueForwardPipe(t *testing.T) {
	t.Run("exit 0", func(t *testing.T) {
		r := newQueueRoot(t)
		r.forwardFile("bob", `"|cat > $HOME/piped; env > $HOME/env"`+"\n")
		r.enqueue(plainMsg, "-f", "joe@example.net", "--", "bob+lists@example.org")
		r.runQueue()
		got, err := os.ReadFile(filepath.Join(r.home("bob"), "piped"))
		if err != nil {
			t.Fatal(err)
		}
		// The message as queued: the envelope is in SENDER and RECIPIENT.
		if !strings.HasPrefix(string(got), "From: joe@example.net\nTo: bob@example.org\nSubject: test\n") || strings.Contains(string(got), "Delivered-To") {
			t.Errorf("the command got:\n%s", got)
		}
		env, _ := os.ReadFile(filepath.Join(r.home("bob"), "env"))
		for _, v := range []string{"SENDER=joe@example.net", "RECIPIENT=bob+lists@example.org", "USER=bob", "LOCAL=bob+lists", "DOMAIN=example.org", "EXT=lists", "HOME=" + r.home("bob")} {
			if !strings.Contains(string(env), v+"\n") {
				t.Errorf("environment lacks %s:\n%s", v, env)
			}
		}
		if _, err := os.Stat(filepath.Join(r.home("bob"), "Maildir")); err == nil {
			t.Errorf("the Maildir was made: .forward without \\bob must not deliver there")
		}
	})
	t.Run("exit 75", func(t *testing.T) {
		r := newQueueRoot(t)
		r.forwardFile("bob", "|exit 75\n")
		r.enqueue(plainMsg, "-f", "carol@example.org", "--", "bob@example.org")
		r.runQueue()
		l := r.list()
		if len(l) != 1 || l[0].Recipients[0].State != "deferred" || l[0].Recipients[0].Status != "4.3.0" {
			t.Fatalf("after exit 75: %+v", l)
		}
		// Not yet due: nothing happens.
		r.runQueue()
		if l := r.list(); l[0].Recipients[0].Attempts != 1 {
			t.Errorf("tried again before its time: %+v", l)
		}
		// Due with --flush; now the command succeeds.
		r.forwardFile("bob", "|cat > $HOME/piped\n")
		r.runQueue("--flush")
		if _, err := os.Stat(filepath.Join(r.home("bob"), "piped")); err != nil {
			t.Errorf("not delivered on the retry: %v", err)
		}
		if l := r.list(); len(l) != 0 {
			t.Errorf("queue: %+v", l)
		}
		if n := len(inbox(t, filepath.Join(r.home("carol"), "Maildir"))); n != 0 {
			t.Errorf("the sender got %d messages for a temporary failure", n)
		}
	})
	t.Run("exit 1", func(t *testing.T) {
		r := newQueueRoot(t)
		r.forwardFile("bob", "|echo filter says no >&2; exit 1\n")
		r.enqueue(plainMsg, "-f", "carol@example.org", "--", "bob@example.org")
		r.runQueue()
		d := parseDSN(t, onlyMessage(t, filepath.Join(r.home("carol"), "Maildir")))
		rc := d.recipients[0]
		if rc.Get("Status") != "5.3.0" || !strings.Contains(rc.Get("Diagnostic-Code"), "exited 1") {
			t.Errorf("DSN for exit 1: %v", rc.Map())
		}
	})
}

// TestQueueForwardFilter: the header-sorting filter of the README, run
// from ~/.forward, files into folders with tern-deliver -m.
func TestQueueForwardFilter(t *testing.T) {
	r := newQueueRoot(t)
	readme, err := os.ReadFile(filepath.Join(mustRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	// The script is the indented block that starts with #!/bin/sh.
	text := string(readme)
	start := strings.Index(text, "    #!/bin/sh\n")
	end := strings.Index(text[start:], "\n\n")
	var script strings.Builder
	for _, line := range strings.Split(text[start:start+end], "\n") {
		script.WriteString(strings.TrimPrefix(line, "    ") + "\n")
	}
	filter := filepath.Join(r.home("bob"), "bin", "sort-mail")
	os.MkdirAll(filepath.Dir(filter), 0o755)
	if err := os.WriteFile(filter, []byte(script.String()), 0o755); err != nil {
		t.Fatal(err)
	}
	r.forwardFile("bob", "\"|$HOME/bin/sort-mail\"\n")
	r.enqueue("Subject: buy now\nX-Spam-Flag: YES\n\nspam\n", "-f", "spam@example.net", "--", "bob@example.org")
	r.enqueue("Subject: go 1.27\nList-Id: <golang-nuts.googlegroups.com>\n\nlist\n", "-f", "list@example.net", "--", "bob@example.org")
	r.enqueue("Subject: hello\n\npersonal\n", "-f", "carol@example.org", "--", "bob@example.org")
	// tern-queue puts tern-deliver's directory first on the filter's PATH.
	q := r.runQueue()
	md := filepath.Join(r.home("bob"), "Maildir")
	for folder, want := range map[string]string{"": "personal", ".Junk": "spam", ".Lists.Go": "list"} {
		got := onlyMessage(t, filepath.Join(md, folder))
		if !strings.Contains(got, want) || strings.Count(got, "Delivered-To:") != 1 || strings.Count(got, "Return-Path:") != 1 {
			t.Errorf("folder %q:\n%s\n%s", folder, got, q.Stderr)
		}
	}
}

func TestQueueForwardFolderAndSelf(t *testing.T) {
	r := newQueueRoot(t)
	if err := os.MkdirAll(filepath.Join(r.home("bob"), "Maildir"), 0o700); err != nil {
		t.Fatal(err)
	}
	r.forwardFile("bob", "# keep a copy, file one in Junk, and send one on\n\\bob, ~/Maildir/.Junk/\ncarol@example.org\n")
	r.enqueue(plainMsg, "-f", "joe@example.net", "--", "bob@example.org")
	q := r.runQueue()
	if n := len(inbox(t, filepath.Join(r.home("bob"), "Maildir"))); n != 1 {
		t.Errorf("\\bob: %d in bob's INBOX, want 1\n%s", n, q.Stderr)
	}
	if n := len(inbox(t, filepath.Join(r.home("bob"), "Maildir", ".Junk"))); n != 1 {
		t.Errorf("folder: %d in .Junk, want 1", n)
	}
	got := onlyMessage(t, filepath.Join(r.home("carol"), "Maildir"))
	// The envelope sender is kept; Delivered-To records the hop.
	if !strings.HasPrefix(got, "Return-Path: <joe@example.net>\nDelivered-To: carol@example.org\nDelivered-To: bob@example.org\n") {
		t.Errorf("forwarded copy:\n%s", got)
	}
}

func TestQueueForwardLoop(t *testing.T) {
	r := newQueueRoot(t)
	r.forwardFile("bob", "carol@example.org\n")
	r.forwardFile("carol", "bob@example.org\n")
	r.enqueue(plainMsg, "-f", "dave@example.org", "--", "bob@example.org")
	for i := 0; i < 4; i++ {
		r.runQueue()
	}
	if l := r.list(); len(l) != 0 {
		t.Errorf("the loop is still going: %+v", l)
	}
	d := parseDSN(t, onlyMessage(t, filepath.Join(r.home("dave"), "Maildir")))
	if d.recipients[0].Get("Status") != "5.4.6" {
		t.Errorf("loop bounce: %v", d.recipients[0].Map())
	}
}

func TestQueueDelayWarning(t *testing.T) {
	r := newQueueRoot(t)
	r.forwardFile("bob", "|exit 75\n")
	r.enqueue(plainMsg, "-f", "carol@example.org", "--", "bob@example.org")
	r.runQueue()
	carol := filepath.Join(r.home("carol"), "Maildir")
	if n := len(inbox(t, carol)); n != 0 {
		t.Fatalf("a warning before --warn-after")
	}
	r.runQueue("--now", "+5h")
	d := parseDSN(t, onlyMessage(t, carol))
	rc := d.recipients[0]
	if rc.Get("Action") != "delayed" || !strings.HasPrefix(rc.Get("Status"), "4.") || rc.Get("Will-Retry-Until") == "" {
		t.Errorf("delay warning: %v", rc.Map())
	}
	if !strings.Contains(d.header.Get("Subject"), "Delayed") {
		t.Errorf("Subject: %q", d.header.Get("Subject"))
	}
	// Once only.
	r.runQueue("--now", "+7h")
	if n := len(inbox(t, carol)); n != 1 {
		t.Errorf("%d messages for carol after a second late run, want the one warning", n)
	}
	// After --max-age: a bounce, and the entry goes.
	r.runQueue("--now", "+121h")
	got := inbox(t, carol)
	if len(got) != 2 {
		t.Fatalf("%d messages for carol after max-age, want warning and bounce", len(got))
	}
	rc = parseDSN(t, got[1]).recipients[0]
	if rc.Get("Action") != "failed" || rc.Get("Status") != "4.4.7" {
		t.Errorf("expiry bounce: %v", rc.Map())
	}
	if l := r.list(); len(l) != 0 {
		t.Errorf("queue: %+v", l)
	}
}

// TestQueueEnqueuePath: tern-queue hands .forward its tern-enqueue as
// TERN_ENQUEUE_PATH, and says it does not read TERN_ENQUEUE, which is
// tern-smtpd's filter (issue #19).
func TestQueueEnqueuePath(t *testing.T) {
	r := newQueueRoot(t)
	r.forwardFile("bob", "carol@example.org\n")
	r.enqueue(plainMsg, "-f", "joe@example.net", "--", "bob@example.org")
	res := r.Run("", []string{"TERN_ENQUEUE=/nonexistent/spamfilter"}, "tern-queue", "--once")
	if res.Code != 0 {
		t.Fatalf("tern-queue: %v", res)
	}
	if !strings.Contains(res.Stderr, "warning: TERN_ENQUEUE is tern-smtpd's filter and is not read here") {
		t.Errorf("no warning about TERN_ENQUEUE:\n%s", res.Stderr)
	}
	if n := len(inbox(t, filepath.Join(r.home("carol"), "Maildir"))); n != 1 {
		t.Errorf("carol got %d forwarded messages, want 1 (the forward used TERN_ENQUEUE?)\n%s", n, res.Stderr)
	}
}

// TestQueueHold: a held entry is listed and not delivered until released;
// a deleted one is gone without a bounce.
func TestQueueHold(t *testing.T) {
	r := newQueueRoot(t)
	r.forwardFile("bob", "|exit 75\n")
	id := strings.TrimPrefix(strings.TrimSpace(r.enqueue(plainMsg, "-v", "-f", "carol@example.org", "--", "bob@example.org").Stdout), "qid=")
	r.runQueue()
	if res := r.Run("", nil, "tern-queue", "--hold", id); res.Code != 0 {
		t.Fatalf("--hold: %v", res)
	}
	r.forwardFile("bob", "|cat > $HOME/piped\n")
	r.runQueue("--flush")
	if l := r.list(); len(l) != 1 || !l[0].Hold {
		t.Fatalf("held entry: %+v", l)
	}
	if _, err := os.Stat(filepath.Join(r.home("bob"), "piped")); err == nil {
		t.Fatalf("a held entry was delivered")
	}
	if res := r.Run("", nil, "tern-queue", "--release", id); res.Code != 0 {
		t.Fatalf("--release: %v", res)
	}
	r.runQueue()
	if _, err := os.Stat(filepath.Join(r.home("bob"), "piped")); err != nil {
		t.Errorf("released entry not delivered: %v", err)
	}
	r.forwardFile("bob", "|exit 75\n")
	id = strings.TrimPrefix(strings.TrimSpace(r.enqueue(plainMsg, "-v", "-f", "carol@example.org", "--", "bob@example.org").Stdout), "qid=")
	r.runQueue()
	if res := r.Run("", nil, "tern-queue", "--delete", id); res.Code != 0 {
		t.Fatalf("--delete: %v", res)
	}
	if l := r.list(); len(l) != 0 {
		t.Errorf("after --delete: %+v", l)
	}
	if n := len(inbox(t, filepath.Join(r.home("carol"), "Maildir"))); n != 0 {
		t.Errorf("--delete sent %d messages", n)
	}
	if res := r.Run("", nil, "tern-queue", "--delete", "0123"); res.Code != 64 {
		t.Errorf("--delete of a bad ID: %v, want 64", res)
	}
	if res := r.Run("", nil, "tern-queue", "--delete", "00000000000000000000a"); res.Code != 66 {
		t.Errorf("--delete of a missing ID: %v, want 66", res)
	}
}

func TestQueueDamagedEntry(t *testing.T) {
	r := newQueueRoot(t)
	r.enqueue(plainMsg, "-f", "joe@example.net", "--", "bob@example.org")
	bad := "18eb000000000000000aa"
	r.WriteFile("spool/incoming/"+bad, "not an envelope\n")
	r.WriteFile("spool/env/18eb000000000000000bb", "tern-queue 1\ngarbage\n")
	r.WriteFile("spool/mess/18eb000000000000000bb", "x")
	q := r.runQueue()
	if n := len(inbox(t, filepath.Join(r.home("bob"), "Maildir"))); n != 1 {
		t.Errorf("the good message was not delivered beside the damaged ones:\n%s", q.Stderr)
	}
	moved := files(t, filepath.Join(r.Queue, "bad"))
	sort.Strings(moved)
	want := []string{bad + ".incoming", "18eb000000000000000bb.env", "18eb000000000000000bb.mess"}
	sort.Strings(want)
	if strings.Join(moved, " ") != strings.Join(want, " ") {
		t.Errorf("bad/ holds %v, want %v\n%s", moved, want, q.Stderr)
	}
	if !strings.Contains(q.Stderr, "damaged") {
		t.Errorf("not logged:\n%s", q.Stderr)
	}
}

func TestQueueDaemon(t *testing.T) {
	r := newQueueRoot(t)
	// A long scan interval: only inotify can make this fast.
	p := r.startQueue("--scan-interval", "1h")
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	r.enqueue(plainMsg, "-f", "joe@example.net", "--", "bob@example.org")
	Eventually(t, 10*time.Second, "delivery by the daemon", func() bool {
		return len(files(t, filepath.Join(r.home("bob"), "Maildir", "new"))) == 1
	})
	t.Logf("enqueue to Maildir: %v", time.Since(start))
	// --flush reaches the daemon through incoming/.
	r.forwardFile("carol", "|test -f $HOME/ok || exit 75; cat > $HOME/piped\n")
	r.enqueue(plainMsg, "-f", "joe@example.net", "--", "carol@example.org")
	Eventually(t, 10*time.Second, "the first try", func() bool { return strings.Contains(p.Stderr(), "deferred") })
	r.WriteFile("home/carol/ok", "")
	if res := r.Run("", nil, "tern-queue", "--flush"); res.Code != 0 {
		t.Fatal(res)
	}
	Eventually(t, 10*time.Second, "delivery after --flush", func() bool {
		_, err := os.Stat(filepath.Join(r.home("carol"), "piped"))
		return err == nil
	})
	// SIGHUP re-reads the control directory.
	r.WriteFile("etc/tern/aliases", "newname: dave\n")
	p.Signal(syscall.SIGHUP)
	Eventually(t, 5*time.Second, "reload", func() bool { return strings.Contains(p.Stderr(), "re-read the control directory") })
	r.enqueue(plainMsg, "-f", "joe@example.net", "--", "newname@example.org")
	Eventually(t, 10*time.Second, "delivery through the new alias", func() bool {
		return len(files(t, filepath.Join(r.home("dave"), "Maildir", "new"))) == 1
	})
	// SIGTERM waits for a running delivery.
	r.forwardFile("bob", "|sleep 1; cat > $HOME/slow\n")
	r.enqueue(plainMsg, "-f", "joe@example.net", "--", "bob@example.org")
	Eventually(t, 10*time.Second, "the slow delivery to start", func() bool { return strings.Count(p.Stderr(), "new qid") == 4 })
	time.Sleep(300 * time.Millisecond)
	p.Signal(syscall.SIGTERM)
	res, ok := p.Wait(20 * time.Second)
	if !ok || res.Code != 0 {
		t.Fatalf("SIGTERM: %v (ended %v)", res, ok)
	}
	if _, err := os.Stat(filepath.Join(r.home("bob"), "slow")); err != nil {
		t.Errorf("SIGTERM did not wait for the running delivery: %v\n%s", err, res.Stderr)
	}
}

// TestQueueNewMailNotStarved: a backlog of due retries does not keep new
// mail waiting: with two slots, new mail always has one.
func TestQueueNewMailNotStarved(t *testing.T) {
	r := newQueueRoot(t)
	r.forwardFile("bob", "|sleep 0.5; exit 75\n")
	for i := 0; i < 6; i++ {
		r.enqueue(plainMsg, "-f", "joe@example.net", "--", "bob@example.org")
	}
	r.runQueue("--concurrency", "6")
	p := r.startQueue("--concurrency", "2", "--now", "+1h", "--warn-after", "100h")
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	r.enqueue(plainMsg, "-f", "joe@example.net", "--", "carol@example.org")
	Eventually(t, 10*time.Second, "new mail beside the retries", func() bool {
		return len(files(t, filepath.Join(r.home("carol"), "Maildir", "new"))) == 1
	})
	// Six retries of half a second on one retry slot take three seconds;
	// the new message must not wait for them.
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("new mail waited %v behind retries", d)
	}
	p.Signal(syscall.SIGTERM)
	p.Wait(20 * time.Second)
}

// TestQueueAsAccount: run as root, tern-queue delivers with the account's
// uid and gid.
func TestQueueAsAccount(t *testing.T) {
	NeedRoot(t)
	r := newQueueRoot(t)
	// t.TempDir makes its directories 0700: let nobody through.
	for d := r.Dir; d != "/tmp" && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	home := r.home("nob")
	if err := os.MkdirAll(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	r.WriteFile("etc/tern/users", fmt.Sprintf("nob@example.org:{PLAIN}x:65534:65534::%s::\nroot@example.org:{PLAIN}x:0:0::/root::\n", home))
	if err := os.WriteFile(filepath.Join(home, ".forward"), []byte("|id -u > $HOME/uid; cat > $HOME/piped\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.enqueue(plainMsg, "-f", "joe@example.net", "--", "nob@example.org", "root@example.org")
	q := r.runQueue()
	t.Log(q.Stderr)
	uid, err := os.ReadFile(filepath.Join(home, "uid"))
	if err != nil || strings.TrimSpace(string(uid)) != "65534" {
		t.Errorf("the .forward command ran as uid %q (%v), want 65534", uid, err)
	}
	l := r.list()
	if len(l) != 1 || l[0].Recipients[1].State != "deferred" || !strings.Contains(l[0].Recipients[1].Answer, "will not deliver as root") {
		t.Errorf("delivery as root was not refused: %+v", l)
	}
}

// TestQueueCrash: messages injected while tern-queue is killed with
// SIGKILL and restarted at random moments all end in the Maildirs; the
// duplicates (at-least-once) are counted and reported.
func TestQueueCrash(t *testing.T) {
	n := 1000
	if testing.Short() {
		n = 150
	}
	r := newQueueRoot(t)
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	t.Logf("seed %d", seed)
	var daemon *Proc
	start := func() { daemon = r.Start(nil, nil, "tern-queue", "--concurrency", "4") }
	start()
	kills := 0
	users := []string{"bob", "carol", "dave", "team"}
	begin := time.Now()
	for i := 0; i < n; {
		// A batch of injections, a few at once, then perhaps a kill.
		batch := 1 + rng.Intn(30)
		for j := 0; j < batch && i < n; j++ {
			msg := fmt.Sprintf("Subject: crash %d\nX-Seq: %d\n\nbody %d\n", i, i, i)
			r.enqueue(msg, "-f", "joe@example.net", "--", users[i%len(users)]+"@example.org")
			i++
		}
		if rng.Intn(3) == 0 {
			time.Sleep(time.Duration(rng.Intn(30)) * time.Millisecond)
			daemon.Kill()
			daemon.Wait(10 * time.Second)
			kills++
			start()
		}
	}
	want := map[string]int{"bob": 0, "carol": 0, "dave": 0}
	for i := 0; i < n; i++ {
		switch users[i%len(users)] {
		case "team": // alice -> bob, carol
			want["bob"]++
			want["carol"]++
		default:
			want[users[i%len(users)]]++
		}
	}
	total := 0
	for _, c := range want {
		total += c
	}
	count := func() int {
		c := 0
		for u := range want {
			c += len(files(t, filepath.Join(r.home(u), "Maildir", "new")))
		}
		return c
	}
	Eventually(t, 2*time.Minute, "every message delivered", func() bool { return count() >= total && len(files(t, filepath.Join(r.Queue, "env"))) == 0 })
	daemon.Signal(syscall.SIGTERM)
	daemon.Wait(20 * time.Second)
	dups, missing := 0, 0
	for u, c := range want {
		seen := map[string]int{}
		for _, m := range inbox(t, filepath.Join(r.home(u), "Maildir")) {
			i := strings.Index(m, "X-Seq: ")
			seq := strings.SplitN(m[i+7:], "\n", 2)[0]
			seen[seq]++
		}
		for _, k := range seen {
			dups += k - 1
		}
		if len(seen) != c {
			missing += c - len(seen)
		}
	}
	t.Logf("crash test: %d messages (%d deliveries), %d kills, %d lost, %d duplicates, %v", n, total, kills, missing, dups, time.Since(begin).Round(time.Millisecond))
	if missing != 0 {
		t.Errorf("%d deliveries lost", missing)
	}
	if bad := files(t, filepath.Join(r.Queue, "bad")); len(bad) != 0 {
		t.Errorf("entries moved aside: %v", bad)
	}
}

// TestQueueManPages: every flag of tern-queue and tern-enqueue is in its
// man page.
func TestQueueManPages(t *testing.T) {
	for page, flags := range map[string][]string{
		"tern-queue.8":   {"queue", "conf", "deliver", "enqueue", "once", "concurrency", "destination-concurrency", "dns", "smtp-port", "smtp-connect-timeout", "smtp-greeting-timeout", "smtp-helo-timeout", "smtp-mail-timeout", "smtp-rcpt-timeout", "smtp-data-init-timeout", "smtp-data-block-timeout", "smtp-data-done-timeout", "smtp-command-timeout", "smtp-reuse-limit", "smtp-idle-timeout", "max-age", "warn-after", "scan-interval", "timeout", "list", "json", "flush", "delete", "hold", "release", "now"},
		"tern-enqueue.8": {"from", "read-recipients", "ignore-dots", "dot", "full-name", "verbose", "queue", "conf", "max-size", "list", "flush"},
	} {
		b, err := os.ReadFile(filepath.Join(mustRoot(t), "man", page))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range flags {
			if !strings.Contains(string(b), "Fl -"+f) {
				t.Errorf("man/%s lacks --%s", page, f)
			}
			env := "TERN_" + strings.ToUpper(strings.ReplaceAll(f, "-", "_"))
			if !strings.Contains(string(b), env) {
				t.Errorf("man/%s lacks %s", page, env)
			}
		}
	}
}

// TestQueueBounceAndWarningTogether: one pass that both bounces a
// recipient and warns about another queues two reports, not one.
func TestQueueBounceAndWarningTogether(t *testing.T) {
	r := newQueueRoot(t)
	r.forwardFile("bob", "|exit 75\n")
	r.enqueue(plainMsg, "-f", "carol@example.org", "--", "bob@example.org", "nosuch@example.org")
	q := r.runQueue("--now", "+5h")
	got := inbox(t, filepath.Join(r.home("carol"), "Maildir"))
	if len(got) != 2 {
		t.Fatalf("carol got %d reports, want a bounce and a warning\n%s", len(got), q.Stderr)
	}
	actions := map[string]bool{}
	for _, m := range got {
		actions[parseDSN(t, m).recipients[0].Get("Action")] = true
	}
	if !actions["failed"] || !actions["delayed"] {
		t.Errorf("actions %v", actions)
	}
}

// TestQueueDaemonBurst: many submissions at once reach the daemon as a
// burst of inotify events, taken in together (queue.IngestAll): each is
// taken in once and delivered once, with no scan to fall back on.
func TestQueueDaemonBurst(t *testing.T) {
	r := newQueueRoot(t)
	p := r.startQueue("--scan-interval", "1h")
	time.Sleep(200 * time.Millisecond)
	const senders, each = 8, 20
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				msg := strings.Replace(plainMsg, "Subject: ", fmt.Sprintf("Subject: burst-%d-%d ", s, i), 1)
				if res := r.Run(msg, nil, "tern-enqueue", "-f", "joe@example.net", "--", "bob@example.org"); res.Code != 0 {
					t.Errorf("tern-enqueue: %v", res)
					return
				}
			}
		}()
	}
	wg.Wait()
	md := filepath.Join(r.home("bob"), "Maildir", "new")
	Eventually(t, 30*time.Second, "every message delivered", func() bool { return len(files(t, md)) >= senders*each })
	time.Sleep(200 * time.Millisecond)
	if n := len(files(t, md)); n != senders*each {
		t.Errorf("%d delivered, want %d", n, senders*each)
	}
	if n := strings.Count(p.Stderr(), "info: new qid="); n != senders*each {
		t.Errorf("%d taken in, want %d", n, senders*each)
	}
	seen := map[string]bool{}
	for _, name := range files(t, md) {
		b, _ := os.ReadFile(filepath.Join(md, name))
		m := regexp.MustCompile(`Subject: (burst-\d+-\d+)`).FindSubmatch(b)
		if m == nil || seen[string(m[1])] {
			t.Errorf("%s: subject missing or seen twice", name)
			continue
		}
		seen[string(m[1])] = true
	}
}
