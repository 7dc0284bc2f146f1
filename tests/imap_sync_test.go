package tests

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// The sync tests run the two-way synchronisers people use with Maildir
// and IMAP, mbsync (isync) and offlineimap (offlineimap3), between a
// local Maildir and tern-imapd, make changes on both sides, sync again,
// and compare the two sides: every folder the same messages with the
// same flags, nothing lost, nothing twice.

// folderState is each folder's messages, as "subject flags" strings,
// sorted; flags are the ones both sides keep (Seen, Flagged, Answered).
type folderState map[string][]string

func (s folderState) String() string {
	var names []string
	for n := range s {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s: %s\n", n, strings.Join(s[n], ", "))
	}
	return b.String()
}

func (s folderState) equal(o folderState) bool {
	keys := func(m folderState) []string {
		var k []string
		for n, msgs := range m {
			if len(msgs) > 0 {
				k = append(k, n)
			}
		}
		sort.Strings(k)
		return k
	}
	if !slices.Equal(keys(s), keys(o)) {
		return false
	}
	for n := range s {
		if !slices.Equal(s[n], o[n]) {
			return false
		}
	}
	return true
}

func keptFlags(seen, flagged, answered bool) string {
	var f []string
	if answered {
		f = append(f, "A")
	}
	if flagged {
		f = append(f, "F")
	}
	if seen {
		f = append(f, "S")
	}
	return "[" + strings.Join(f, "") + "]"
}

// serverState reads every folder through IMAP.
func serverState(t *testing.T, addr, user, pass string) folderState {
	t.Helper()
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(user, pass).Wait(); err != nil {
		t.Fatal(err)
	}
	boxes, err := c.List("", "*", nil).Collect()
	if err != nil {
		t.Fatal(err)
	}
	st := folderState{}
	for _, b := range boxes {
		if slices.Contains(b.Attrs, imap.MailboxAttrNoSelect) {
			continue
		}
		sel, err := c.Select(b.Mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
		if err != nil {
			t.Fatal(err)
		}
		st[b.Mailbox] = nil
		if sel.NumMessages == 0 {
			continue
		}
		all := imap.SeqSet{{Start: 1, Stop: 0}}
		msgs, err := c.Fetch(all, &imap.FetchOptions{Flags: true, Envelope: true}).Collect()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			has := func(f imap.Flag) bool { return slices.Contains(m.Flags, f) }
			st[b.Mailbox] = append(st[b.Mailbox], m.Envelope.Subject+" "+keptFlags(has(imap.FlagSeen), has(imap.FlagFlagged), has(imap.FlagAnswered)))
		}
		sort.Strings(st[b.Mailbox])
	}
	return st
}

// localState reads a tree of Maildirs, one a folder, named by name(dir).
func localState(t *testing.T, dirs map[string]string) folderState {
	t.Helper()
	st := folderState{}
	for name, dir := range dirs {
		st[name] = nil
		for _, sub := range []string{"new", "cur"} {
			ents, _ := os.ReadDir(filepath.Join(dir, sub))
			for _, e := range ents {
				data, err := os.ReadFile(filepath.Join(dir, sub, e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				subject := ""
				for _, l := range strings.Split(string(data), "\n") {
					if s, ok := strings.CutPrefix(strings.TrimRight(l, "\r"), "Subject: "); ok {
						subject = s
						break
					}
				}
				_, info, _ := strings.Cut(e.Name(), ":2,")
				if strings.Contains(info, "T") {
					continue // trashed, about to be expunged
				}
				st[name] = append(st[name], subject+" "+keptFlags(strings.Contains(info, "S"), strings.Contains(info, "F"), strings.Contains(info, "R")))
			}
		}
		sort.Strings(st[name])
	}
	return st
}

// maildirsUnder lists the Maildirs below root, named as the
// synchroniser names them: by their directory, with sep for nesting.
func maildirsUnder(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.IsDir() || info.Name() != "cur" {
			return nil
		}
		dir := filepath.Dir(p)
		rel, _ := filepath.Rel(root, dir)
		out[strings.ReplaceAll(rel, "/", ".")] = dir
		return nil
	})
	return out
}

// deliverAs delivers a message into the account's INBOX with
// tern-deliver and gives the files to the account.
func deliverAs(t *testing.T, r *Root, a *popAccount, subject string) {
	t.Helper()
	msg := fmt.Sprintf("From: x@example.org\nSubject: %s\nMessage-ID: <%s@example.org>\n\nhello\n", subject, strings.ReplaceAll(subject, " ", "-"))
	if res := r.Run(msg, nil, "tern-deliver", "-f", "x@example.org", "-r", "bob@example.net", a.maildir); res.Code != 0 {
		t.Fatalf("deliver: %v", res)
	}
	chownAccount(t, a)
}

// writeLocal adds a message to a local Maildir's new/.
func writeLocal(t *testing.T, dir, subject string) {
	t.Helper()
	name := fmt.Sprintf("%d.M1P%dQ1.local", time.Now().Unix(), os.Getpid())
	msg := fmt.Sprintf("From: me@example.org\nSubject: %s\nMessage-ID: <%s@example.org>\n\nwritten here\n", subject, strings.ReplaceAll(subject, " ", "-"))
	if err := os.WriteFile(filepath.Join(dir, "new", name), []byte(msg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// localFile finds the file of a message by subject in a local Maildir.
func localFile(t *testing.T, dir, subject string) string {
	t.Helper()
	for _, sub := range []string{"cur", "new"} {
		ents, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, e := range ents {
			p := filepath.Join(dir, sub, e.Name())
			data, _ := os.ReadFile(p)
			if strings.Contains(string(data), "Subject: "+subject+"\n") {
				return p
			}
		}
	}
	t.Fatalf("no message %q in %s", subject, dir)
	return ""
}

// flagLocal adds a maildir flag letter to a local message.
func flagLocal(t *testing.T, dir, subject string, letter string) {
	t.Helper()
	p := localFile(t, dir, subject)
	base := filepath.Base(p)
	if !strings.Contains(base, ":2,") {
		base += ":2,"
	}
	unique, info, _ := strings.Cut(base, ":2,")
	letters := []byte(info + letter)
	slices.Sort(letters)
	if err := os.Rename(p, filepath.Join(dir, "cur", unique+":2,"+string(letters))); err != nil {
		t.Fatal(err)
	}
}

// serverChanges: a delivery, a flag, a move between folders, an expunge.
func serverChanges(t *testing.T, r *Root, a *popAccount, addr string) {
	t.Helper()
	deliverAs(t, r, a, "server new")
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(a.user, a.pass).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	find := func(subject string) imap.UID {
		data, err := c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: subject}}}, nil).Wait()
		if err != nil || len(data.AllUIDs()) != 1 {
			t.Fatalf("search %q: %v %v", subject, data, err)
		}
		return data.AllUIDs()[0]
	}
	store := func(uid imap.UID, f imap.Flag) {
		if err := c.Store(imap.UIDSetNum(uid), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{f}, Silent: true}, nil).Close(); err != nil {
			t.Fatal(err)
		}
	}
	store(find("first"), imap.FlagSeen)
	if _, err := c.Move(imap.UIDSetNum(find("third")), "Archive").Wait(); err != nil {
		t.Fatal(err)
	}
	store(find("second"), imap.FlagDeleted)
	if err := c.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
}

type syncer struct {
	name      string
	serverLog func() string
	run       func() Result
	local     func() map[string]string // folder name to Maildir
}

// runSyncScenario runs the same changes through a synchroniser.
func runSyncScenario(t *testing.T, r *Root, a *popAccount, addr string, s syncer) {
	t.Helper()
	sync := func(round string) {
		t.Helper()
		if res := s.run(); res.Code != 0 {
			t.Fatalf("%s, %s: %v\ntern-imapd:\n%s", s.name, round, res, s.serverLog())
		}
	}
	compare := func(round string, want folderState) {
		t.Helper()
		server := serverState(t, addr, a.user, a.pass)
		local := localState(t, s.local())
		if !server.equal(local) {
			t.Fatalf("%s, after %s: the sides differ\nserver:\n%s\nlocal:\n%s", s.name, round, server, local)
		}
		if want != nil && !server.equal(want) {
			t.Fatalf("%s, after %s:\ngot:\n%s\nwant:\n%s", s.name, round, server, want)
		}
	}
	sync("the first sync")
	compare("the first sync", folderState{"INBOX": {"first []", "second []", "third []"}})

	inbox := s.local()["INBOX"]
	writeLocal(t, inbox, "local new")
	flagLocal(t, inbox, "first", "F")
	serverChanges(t, r, a, addr)
	sync("changes on both sides")
	want := folderState{
		"INBOX":   {"first [FS]", "local new []", "server new []"},
		"Archive": {"third []"},
	}
	compare("changes on both sides", want)

	// A local deletion, and a sync that has nothing to do.
	if err := os.Remove(localFile(t, inbox, "local new")); err != nil {
		t.Fatal(err)
	}
	sync("a local deletion")
	want["INBOX"] = []string{"first [FS]", "server new []"}
	compare("a local deletion", want)
	sync("nothing new")
	compare("nothing new", want)
}

func TestIMAPSyncMbsync(t *testing.T) {
	Need(t, "mbsync")
	r := NewRoot(t)
	a := newPOPAccount(t, r)
	p, addr := startIMAP(t, r)
	host, port, _ := net.SplitHostPort(addr)
	local := r.Path("mbsync")
	if err := os.MkdirAll(local, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`IMAPAccount tern
Host %s
Port %s
User %s
Pass %s
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account tern

MaildirStore local
Path %s/
Inbox %s/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns *
Create Both
Remove Both
Expunge Both
SyncState *
`, host, port, a.user, a.pass, local, local)
	conf := r.WriteFile("mbsyncrc", cfg)
	s := syncer{
		name:      "mbsync",
		serverLog: p.Stderr,
		run: func() Result {
			cmd := exec.Command("mbsync", "-q", "-c", conf, "-a")
			cmd.Env = r.Env("HOME=" + r.Dir)
			return RunCmd(t, cmd, "")
		},
		local: func() map[string]string { return maildirsUnder(t, local) },
	}
	runSyncScenario(t, r, a, addr, s)
}

func TestIMAPSyncOfflineimap(t *testing.T) {
	Need(t, "offlineimap")
	r := NewRoot(t)
	a := newPOPAccount(t, r)
	p, addr := startIMAP(t, r)
	host, port, _ := net.SplitHostPort(addr)
	local := r.Path("offlineimap")
	cfg := fmt.Sprintf(`[general]
accounts = tern
metadata = %s/meta
ui = quiet

[Account tern]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = %s
sep = .

[Repository remote]
type = IMAP
remotehost = %s
remoteport = %s
remoteuser = %s
remotepass = %s
ssl = no
starttls = no
`, r.Dir, local, host, port, a.user, a.pass)
	conf := r.WriteFile("offlineimaprc", cfg)
	s := syncer{
		name:      "offlineimap",
		serverLog: p.Stderr,
		run: func() Result {
			cmd := exec.Command("offlineimap", "-c", conf, "-o", "-u", "quiet")
			cmd.Env = r.Env("HOME=" + r.Dir)
			return RunCmd(t, cmd, "")
		},
		local: func() map[string]string { return maildirsUnder(t, local) },
	}
	runSyncScenario(t, r, a, addr, s)
}
