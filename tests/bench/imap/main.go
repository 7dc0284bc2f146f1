// Command imap is the driver behind tests/bench/imap.sh: it generates a
// Maildir of N messages, serves a copy of it with tern-imapd and, when
// Debian's dovecot-imapd is installed, another with a private Dovecot on
// a loopback port, and times what IMAP clients do with a large mailbox,
// one session at a time, the two servers alternating:
//
//	LOGIN+SELECT cold   the first session on the copy (both build their index)
//	LOGIN+SELECT warm   later sessions
//	FETCH FAST          FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE), a client's resync
//	FETCH headers       the last 500 messages' ENVELOPE and a few header fields
//	SEARCH              UID SEARCH UNSEEN FLAGGED and a SUBJECT search of every message
//	STORE 1000          UID STORE of \Seen on 1,000 messages
//	FETCH 100 bodies    BODY.PEEK[] of 100 messages
//	APPEND 100          100 messages appended
//
// and checks that both servers see the same messages with the same sizes.
// Each server has its own copy, made of hard links to the generated files.
package main

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

var steps = []string{"LOGIN+SELECT", "FETCH FAST", "FETCH headers", "SEARCH", "STORE 1000", "FETCH 100 bodies", "APPEND 100"}

type server struct {
	name, addr, prefix string
	cmd                *exec.Cmd
}

func main() {
	sizes := flag.String("sizes", "10000", "comma-separated mailbox sizes")
	work := flag.String("work", "", "working directory (made; must not exist)")
	tern := flag.String("tern", "", "path of tern-imapd")
	warm := flag.Int("warm", 5, "warm sessions per server and size")
	uid := flag.Int("uid", 65534, "the account's uid and gid (the server drops to it when root)")
	flag.Parse()
	if *work == "" || *tern == "" {
		fmt.Fprintln(os.Stderr, "usage: imap -work DIR -tern PATH [-sizes N,...] [-warm N]")
		os.Exit(64)
	}
	var ns []int
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1000 {
			fmt.Fprintf(os.Stderr, "imap: bad size %q (at least 1000)\n", s)
			os.Exit(64)
		}
		ns = append(ns, n)
	}
	if err := run(*work, *tern, ns, *warm, *uid); err != nil {
		fmt.Fprintln(os.Stderr, "imap:", err)
		os.Exit(1)
	}
}

func run(work, tern string, sizes []int, warm, uid int) error {
	if err := os.Mkdir(work, 0o755); err != nil {
		return err
	}
	root := os.Geteuid() == 0
	pass := "bench-" + strconv.Itoa(rand.IntN(1e6))
	ids := "::"
	if root {
		ids = fmt.Sprintf(":%d:%d:", uid, uid)
	}
	var users strings.Builder
	for _, n := range sizes {
		for _, p := range []string{"t", "d"} {
			fmt.Fprintf(&users, "%s%d:{PLAIN}%s%s:%s::\n", p, n, pass, ids, filepath.Join(work, "homes", p+strconv.Itoa(n)))
		}
	}
	usersPath := filepath.Join(work, "users")
	if err := os.WriteFile(usersPath, []byte(users.String()), 0o644); err != nil {
		return err
	}
	conf := filepath.Join(work, "conf")
	os.Mkdir(conf, 0o755)
	if err := os.WriteFile(filepath.Join(conf, "users"), []byte(users.String()), 0o644); err != nil {
		return err
	}
	servers := []*server{}
	t, err := startTern(work, tern, conf)
	if err != nil {
		return err
	}
	defer stop(t)
	servers = append(servers, t)
	if _, err := os.Stat("/usr/lib/dovecot/imap"); err != nil {
		fmt.Println("note: Dovecot's IMAP server is not installed; tern-imapd alone (Debian packages dovecot-core dovecot-imapd)")
	} else {
		d, err := startDovecot(work, usersPath)
		if err != nil {
			return err
		}
		defer stop(d)
		servers = append(servers, d)
	}
	for _, n := range sizes {
		if err := bench(work, n, pass, uid, root, warm, servers); err != nil {
			return fmt.Errorf("%d messages: %w", n, err)
		}
	}
	return nil
}

// generate writes n messages into cur/ of dir, as a client that has read
// them leaves them (seen), names in tern's style with their sizes.
func generate(dir string, n int) error {
	for _, d := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return err
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("the quick brown fox jumps over a lazy dog mail server index folder message reply meeting lunch report invoice")
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < n; i++ {
		var b strings.Builder
		subj := words[rng.IntN(len(words))] + " " + words[rng.IntN(len(words))]
		fmt.Fprintf(&b, "From: sender%d@example.org\nTo: bob@example.net\nSubject: %s %d\nDate: %s\nMessage-ID: <bench-%d@example.org>\n\n", i%97, subj, i, base.Add(time.Duration(i)*time.Minute).Format(time.RFC1123Z), i)
		lines := 20 + rng.IntN(80)
		for l := 0; l < lines; l++ {
			for w := 0; w < 10; w++ {
				b.WriteString(words[rng.IntN(len(words))])
				b.WriteByte(' ')
			}
			b.WriteByte('\n')
		}
		body := b.String()
		crlf := len(body) + strings.Count(body, "\n")
		flags := "S"
		if i%10 == 0 {
			flags = ""
		}
		name := fmt.Sprintf("%d.M%dP1Q%d.bench,S=%d,W=%d:2,%s", base.Unix()+int64(i)*60, i, i, len(body), crlf, flags)
		if err := os.WriteFile(filepath.Join(dir, "cur", name), []byte(body), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// copyMaildir links the generated files into a server's Maildir.
func copyMaildir(master, dst string, uid int, root bool) error {
	// The account must reach its home: the homes directory is open.
	if err := os.MkdirAll(filepath.Dir(filepath.Dir(dst)), 0o755); err != nil {
		return err
	}
	for _, d := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dst, d), 0o700); err != nil {
			return err
		}
	}
	ents, err := os.ReadDir(filepath.Join(master, "cur"))
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.Link(filepath.Join(master, "cur", e.Name()), filepath.Join(dst, "cur", e.Name())); err != nil {
			return err
		}
	}
	if root {
		return filepath.Walk(filepath.Dir(dst), func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, uid, uid)
		})
	}
	return nil
}

func bench(work string, n int, pass string, uid int, root bool, warm int, servers []*server) error {
	master := filepath.Join(work, "master", strconv.Itoa(n))
	t0 := time.Now()
	if err := generate(master, n); err != nil {
		return err
	}
	if root {
		filepath.Walk(master, func(p string, _ os.FileInfo, err error) error {
			if err == nil {
				os.Lchown(p, uid, uid)
			}
			return nil
		})
	}
	fmt.Printf("generated %d messages in %.1fs\n", n, time.Since(t0).Seconds())
	for _, s := range servers {
		if err := copyMaildir(master, filepath.Join(work, "homes", s.prefix+strconv.Itoa(n), "Maildir"), uid, root); err != nil {
			return err
		}
	}
	cold := map[string]time.Duration{}
	times := map[string]map[string][]time.Duration{}
	sums := map[string]string{}
	for round := 0; round <= warm; round++ {
		for k := range servers {
			s := servers[(round+k)%len(servers)]
			if times[s.name] == nil {
				times[s.name] = map[string][]time.Duration{}
			}
			res, sum, err := session(s, s.prefix+strconv.Itoa(n), pass, round)
			if err != nil {
				return fmt.Errorf("%s, round %d: %w", s.name, round, err)
			}
			if round == 0 {
				cold[s.name] = res["LOGIN+SELECT"]
				sums[s.name] = sum
				continue
			}
			for step, d := range res {
				times[s.name][step] = append(times[s.name][step], d)
			}
		}
	}
	if len(servers) == 2 && sums[servers[0].name] != sums[servers[1].name] {
		return fmt.Errorf("the servers disagree on the mailbox: %s: %s; %s: %s", servers[0].name, sums[servers[0].name], servers[1].name, sums[servers[1].name])
	}
	fmt.Printf("\n%d messages, medians of %d warm sessions (cold: the first session), ms:\n", n, warm)
	fmt.Printf("%-22s", "")
	for _, s := range servers {
		fmt.Printf("%12s", s.name)
	}
	if len(servers) == 2 {
		fmt.Printf("%14s", "dovecot/tern")
	}
	fmt.Println()
	row := func(label string, get func(string) time.Duration) {
		fmt.Printf("%-22s", label)
		var v []time.Duration
		for _, s := range servers {
			d := get(s.name)
			v = append(v, d)
			fmt.Printf("%12.1f", float64(d.Microseconds())/1000)
		}
		if len(v) == 2 && v[0] > 0 {
			fmt.Printf("%14.2f", float64(v[1])/float64(v[0]))
		}
		fmt.Println()
	}
	row("LOGIN+SELECT cold", func(name string) time.Duration { return cold[name] })
	for _, step := range steps {
		label := step
		if step == "LOGIN+SELECT" {
			label += " warm"
		}
		row(label, func(name string) time.Duration { return median(times[name][step]) })
	}
	return nil
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// session runs one client session and times its steps; sum describes
// the mailbox as the server showed it at the start, to compare servers.
func session(s *server, user, pass string, round int) (map[string]time.Duration, string, error) {
	res := map[string]time.Duration{}
	t := time.Now()
	c, err := imapclient.DialInsecure(s.addr, nil)
	if err != nil {
		return nil, "", err
	}
	defer c.Close()
	if err := c.Login(user, pass).Wait(); err != nil {
		return nil, "", fmt.Errorf("login: %w", err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		return nil, "", fmt.Errorf("select: %w", err)
	}
	res["LOGIN+SELECT"] = time.Since(t)
	n := sel.NumMessages

	t = time.Now()
	all := imap.SeqSet{{Start: 1, Stop: 0}}
	msgs, err := c.Fetch(all, &imap.FetchOptions{UID: true, Flags: true, RFC822Size: true, InternalDate: true}).Collect()
	if err != nil {
		return nil, "", fmt.Errorf("fetch fast: %w", err)
	}
	res["FETCH FAST"] = time.Since(t)
	var total int64
	for _, m := range msgs {
		total += m.RFC822Size
	}
	sum := fmt.Sprintf("%d messages, %d octets", len(msgs), total)

	t = time.Now()
	last := imap.SeqSet{{Start: max(n, 500) - 499, Stop: n}}
	if _, err := c.Fetch(last, &imap.FetchOptions{UID: true, Envelope: true, BodySection: []*imap.FetchItemBodySection{{Peek: true, Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"From", "Subject", "Date", "Message-ID"}}}}).Collect(); err != nil {
		return nil, "", fmt.Errorf("fetch headers: %w", err)
	}
	res["FETCH headers"] = time.Since(t)

	t = time.Now()
	if _, err := c.UIDSearch(&imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagSeen}}, nil).Wait(); err != nil {
		return nil, "", fmt.Errorf("search: %w", err)
	}
	if _, err := c.UIDSearch(&imap.SearchCriteria{Flag: []imap.Flag{imap.FlagFlagged}}, nil).Wait(); err != nil {
		return nil, "", fmt.Errorf("search: %w", err)
	}
	if _, err := c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "invoice report"}}}, nil).Wait(); err != nil {
		return nil, "", fmt.Errorf("search: %w", err)
	}
	res["SEARCH"] = time.Since(t)

	t = time.Now()
	var set imap.UIDSet
	op := imap.StoreFlagsAdd
	if round%2 == 1 {
		op = imap.StoreFlagsDel
	}
	for i := 0; i < 1000 && i < len(msgs); i++ {
		set.AddNum(msgs[i*len(msgs)/1000].UID)
	}
	if err := c.Store(set, &imap.StoreFlags{Op: op, Flags: []imap.Flag{imap.FlagFlagged}, Silent: true}, nil).Close(); err != nil {
		return nil, "", fmt.Errorf("store: %w", err)
	}
	res["STORE 1000"] = time.Since(t)

	t = time.Now()
	var bodies imap.UIDSet
	for i := 0; i < 100; i++ {
		bodies.AddNum(msgs[i*len(msgs)/100].UID)
	}
	if _, err := c.Fetch(bodies, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect(); err != nil {
		return nil, "", fmt.Errorf("fetch bodies: %w", err)
	}
	res["FETCH 100 bodies"] = time.Since(t)

	t = time.Now()
	msg := []byte("From: bench@example.org\r\nSubject: appended\r\n\r\n" + strings.Repeat("an appended line of text\r\n", 80))
	for i := 0; i < 100; i++ {
		a := c.Append("INBOX", int64(len(msg)), nil)
		a.Write(msg)
		a.Close()
		if _, err := a.Wait(); err != nil {
			return nil, "", fmt.Errorf("append: %w", err)
		}
	}
	res["APPEND 100"] = time.Since(t)
	if err := c.Logout().Wait(); err != nil && !errors.Is(err, net.ErrClosed) {
		return nil, "", err
	}
	return res, sum, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitListen(s *server, log func() string) error {
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.Dial("tcp", s.addr)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			stop(s)
			return fmt.Errorf("%s does not listen on %s: %s", s.name, s.addr, log())
		}
	}
}

func startTern(work, prog, conf string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	errPath := filepath.Join(work, "tern-imapd.log")
	out, err := os.Create(errPath)
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(prog, "--conf", conf, "--listen", addr)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{name: "tern", addr: addr, prefix: "t", cmd: cmd}
	return s, waitListen(s, func() string { b, _ := os.ReadFile(errPath); return string(b) })
}

// startDovecot starts a private Dovecot: its own base_dir, state_dir and
// log inside the work directory, IMAP only, on a free loopback port,
// accounts from the same users file, a process per session.
func startDovecot(work, users string) (*server, error) {
	dir := filepath.Join(work, "dovecot")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	loginUser, internalUser := "dovenull", "dovecot"
	if _, err := exec.Command("id", loginUser).Output(); err != nil {
		loginUser, internalUser = "nobody", "nobody"
	}
	conf := fmt.Sprintf(`# generated by tests/bench/imap
base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_login_user = %[2]s
default_internal_user = %[3]s
mail_location = maildir:~/Maildir
passdb {
  driver = passwd-file
  args = scheme=PLAIN %[4]s
}
userdb {
  driver = passwd-file
  args = %[4]s
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %[5]d
  }
}
# A process per session, as tern-imapd's.
service imap {
  service_count = 1
}
`, dir, loginUser, internalUser, users, port)
	confPath := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	errPath := filepath.Join(dir, "stderr")
	out, err := os.Create(errPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("dovecot", "-F", "-c", confPath)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{name: "dovecot", addr: fmt.Sprintf("127.0.0.1:%d", port), prefix: "d", cmd: cmd}
	return s, waitListen(s, func() string {
		b, _ := os.ReadFile(errPath)
		l, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
		return string(b) + string(l)
	})
}

func stop(s *server) {
	if s.cmd.Process != nil {
		s.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			<-done
		}
	}
}
