// Command pop3 is the driver behind tests/bench/pop3.sh: it generates a
// Maildir of N messages, serves a private copy of it with tern-pop3d and,
// when Debian's dovecot-pop3d is installed, another with a private Dovecot
// on a loopback port, and times what a POP3 client does with a large
// maildrop: LOGIN+STAT, UIDL, LIST, RETR of every message and QUIT, in the
// first session on a fresh copy (cold: every message is in new/; tern
// reads the directories and writes its listing cache at login and renames
// each message once, to cur/ with the Seen flag, at QUIT; Dovecot builds
// its index, moves new mail to cur/ at login and flags it at QUIT) and in
// later sessions (warm: tern lists from its cache, Dovecot from its
// index). It checks that both servers give the same UIDLs, sizes and
// message bytes, and reads the peak RSS (VmHWM) of each session process.
//
// Each server has its own copy of the Maildir, made of hard links to the
// generated files: neither server writes into a message file, and the
// renames and index files of one never touch the other's directories.
// Sessions of the two servers alternate, so that the noise of a shared
// machine falls on both alike.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The timed steps of one session, in order.
var steps = []string{"LOGIN+STAT", "UIDL", "LIST", "RETR all", "QUIT"}

type options struct {
	sizes     []int
	work      string
	tern      string
	uid       int
	warm      int
	coldSmall int // fresh copies for the cold rows of sizes up to 10,000
	noDovecot bool
}

func main() {
	var o options
	sizes := flag.String("sizes", "10000,100000", "comma-separated maildrop sizes")
	flag.StringVar(&o.work, "work", "", "working directory (made; must not exist)")
	flag.StringVar(&o.tern, "tern", "", "path of tern-pop3d")
	flag.IntVar(&o.uid, "uid", 65534, "the account's uid and gid (the server drops to it when root)")
	flag.IntVar(&o.warm, "warm", 5, "warm sessions per server and size")
	flag.IntVar(&o.coldSmall, "cold", 3, "fresh copies (cold sessions) per server for sizes up to 10,000; larger sizes get one")
	flag.BoolVar(&o.noDovecot, "no-dovecot", false, "leave Dovecot out even when installed")
	flag.Parse()
	if o.work == "" || o.tern == "" {
		fmt.Fprintln(os.Stderr, "usage: pop3 -work DIR -tern PATH [-sizes N,...] [-warm N] [-cold N]")
		os.Exit(64)
	}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "pop3: bad size %q\n", s)
			os.Exit(64)
		}
		o.sizes = append(o.sizes, n)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "pop3:", err)
		os.Exit(1)
	}
}

// server is one POP3 server under test.
type server struct {
	name    string
	addr    string
	cmd     *exec.Cmd
	session func() (int, error) // the pid of the session process now running
	prefix  string              // account name prefix
}

// result is what one session measured.
type result struct {
	times []time.Duration // per step
	// cpu is what the session process spent on a processor in each
	// step (the sum of its threads' schedstat run times), which the
	// load of a shared machine does not inflate as it does times.
	cpu   []time.Duration
	hwm   int64    // peak RSS of the session process, KiB
	uidl  []string // in message-number order
	sizes []int64  // LIST sizes
	crcs  []uint32 // of the retrieved bytes, CRLF and unstuffed
	octet []int64  // retrieved byte counts
}

type rows struct {
	cold, warm map[string][]*result // by server name
	// churn: per server, the times of DELE+QUIT and of the next
	// session's LOGIN+STAT+UIDL, one pair a round (see churn); churnCold
	// the same right after each cold session, on a copy no session but
	// that one has seen.
	churn, churnCold map[string][][2]time.Duration
}

func run(o options) error {
	if err := os.Mkdir(o.work, 0o755); err != nil {
		return err
	}
	root := os.Geteuid() == 0
	users := filepath.Join(o.work, "users")
	pass := "bench-" + strconv.Itoa(rand.IntN(1e6))
	// One account per server, size and copy, all written before the
	// servers start; both read the same file (tern's users file is
	// Dovecot's passwd-file layout).
	var ub strings.Builder
	ids := "::"
	if root {
		ids = fmt.Sprintf(":%d:%d:", o.uid, o.uid)
	}
	for _, n := range o.sizes {
		for c := 0; c < coldCopies(o, n); c++ {
			for _, p := range []string{"t", "d"} {
				name := account(p, n, c)
				fmt.Fprintf(&ub, "%s:{PLAIN}%s%s:%s::\n", name, pass, ids, home(o.work, name))
			}
		}
	}
	if err := os.WriteFile(users, []byte(ub.String()), 0o644); err != nil {
		return err
	}

	servers := []*server{}
	tern, err := startTern(o, users)
	if err != nil {
		return err
	}
	defer stop(tern)
	servers = append(servers, tern)
	if !o.noDovecot {
		if _, err := os.Stat("/usr/lib/dovecot/pop3"); err != nil {
			fmt.Println("note: dovecot-pop3d is not installed; tern-pop3d alone (Debian packages dovecot-core dovecot-pop3d)")
		} else {
			dc, err := startDovecot(o, users)
			if err != nil {
				return err
			}
			defer stop(dc)
			servers = append(servers, dc)
		}
	}

	all := map[int]*rows{}
	for _, n := range o.sizes {
		r, err := bench(o, n, pass, servers)
		if err != nil {
			return fmt.Errorf("%d messages: %w", n, err)
		}
		all[n] = r
	}
	report(o, servers, all)
	return nil
}

func coldCopies(o options, n int) int {
	if n <= 10000 {
		return max(o.coldSmall, 1)
	}
	return 1
}

func account(prefix string, n, c int) string { return fmt.Sprintf("%s%dc%d", prefix, n, c) }

func home(work, name string) string { return filepath.Join(work, "homes", name) }

// bench runs the cold and warm sessions of one size.
func bench(o options, n int, pass string, servers []*server) (*rows, error) {
	master := filepath.Join(o.work, "master", strconv.Itoa(n))
	t0 := time.Now()
	names, bytes, err := generate(master, n, o)
	if err != nil {
		return nil, err
	}
	fmt.Printf("generated %d messages, %.0f MiB, in %.1fs\n", n, float64(bytes)/(1<<20), time.Since(t0).Seconds())
	r := &rows{cold: map[string][]*result{}, warm: map[string][]*result{}, churnCold: map[string][][2]time.Duration{}}
	copies := coldCopies(o, n)
	for c := 0; c < copies; c++ {
		for k := range servers {
			// Rotate who goes first.
			s := servers[(c+k)%len(servers)]
			name := account(s.prefix, n, c)
			if err := copyMaildir(master, home(o.work, name), names, o); err != nil {
				return nil, err
			}
			res, err := session(s, name, pass)
			if err != nil {
				return nil, fmt.Errorf("%s cold session %d: %w", s.name, c, err)
			}
			if len(res.uidl) != n {
				return nil, fmt.Errorf("%s cold session %d: %d messages, want %d", s.name, c, len(res.uidl), n)
			}
			r.cold[s.name] = append(r.cold[s.name], res)
			fmt.Printf("  %d cold %-11s %s\n", n, s.name, brief(res))
			if c < copies-1 {
				// The last copy stays whole for the warm sessions.
				d, err := churn(s, name, pass, n-10)
				if err != nil {
					return nil, fmt.Errorf("%s cold churn %d: %w", s.name, c, err)
				}
				r.churnCold[s.name] = append(r.churnCold[s.name], d)
				fmt.Printf("  %d cold churn %-5s DELE+QUIT %.0fms  re-login+STAT+UIDL %.0fms\n", n, s.name, ms(d[0]), ms(d[1]))
			}
		}
	}
	for i := 0; i < o.warm; i++ {
		for k := range servers {
			s := servers[(i+k)%len(servers)]
			res, err := session(s, account(s.prefix, n, copies-1), pass)
			if err != nil {
				return nil, fmt.Errorf("%s warm session %d: %w", s.name, i, err)
			}
			r.warm[s.name] = append(r.warm[s.name], res)
			fmt.Printf("  %d warm %-11s %s\n", n, s.name, brief(res))
		}
	}
	if err := check(names, servers, r); err != nil {
		return nil, err
	}
	r.churn = map[string][][2]time.Duration{}
	for i := 0; i < o.warm; i++ {
		for k := range servers {
			s := servers[(i+k)%len(servers)]
			d, err := churn(s, account(s.prefix, n, copies-1), pass, n-10*(i+1))
			if err != nil {
				return nil, fmt.Errorf("%s churn round %d: %w", s.name, i, err)
			}
			r.churn[s.name] = append(r.churn[s.name], d)
			fmt.Printf("  %d churn %-10s DELE+QUIT %.0fms  re-login+STAT+UIDL %.0fms\n", n, s.name, ms(d[0]), ms(d[1]))
		}
	}
	// The next size needs the disk more than these copies do.
	os.RemoveAll(master)
	for c := 0; c < copies; c++ {
		for _, s := range servers {
			os.RemoveAll(home(o.work, account(s.prefix, n, c)))
		}
	}
	return r, nil
}

func brief(r *result) string {
	var b strings.Builder
	for i, d := range r.times {
		fmt.Fprintf(&b, "%s %.0fms", steps[i], ms(d))
		if i < len(r.cpu) {
			fmt.Fprintf(&b, " (cpu %.1f)", ms(r.cpu[i]))
		}
		b.WriteString("  ")
	}
	fmt.Fprintf(&b, "peak %.1f MiB", float64(r.hwm)/1024)
	return b.String()
}

// check compares the cold sessions of the servers: the same UIDL set,
// each with the same LIST size and the same bytes, and every RETR as long
// as LIST said (RFC 1939 §5 asks for the exact size). The UIDLs are
// tern's unique names, the generated file names.
func check(names []string, servers []*server, r *rows) error {
	want := map[string]bool{}
	for _, u := range names {
		want[u] = true
	}
	type info struct {
		size int64
		crc  uint32
	}
	var first map[string]info
	var firstName string
	for _, s := range servers {
		for _, res := range append(slices.Clone(r.cold[s.name]), r.warm[s.name]...) {
			got := map[string]info{}
			for i, u := range res.uidl {
				u = normalizeUIDL(u)
				if _, dup := got[u]; dup {
					return fmt.Errorf("%s: UIDL %s given twice", s.name, u)
				}
				if !want[u] {
					return fmt.Errorf("%s: UIDL %s is not a message's unique name", s.name, u)
				}
				if res.octet[i] != res.sizes[i] {
					return fmt.Errorf("%s: message %d (%s): LIST says %d octets, RETR gave %d", s.name, i+1, u, res.sizes[i], res.octet[i])
				}
				got[u] = info{res.sizes[i], res.crcs[i]}
			}
			if first == nil {
				first, firstName = got, s.name
				continue
			}
			for u, a := range first {
				b, ok := got[u]
				switch {
				case !ok:
					return fmt.Errorf("%s gives UIDL %s, %s does not", firstName, u, s.name)
				case a.size != b.size:
					return fmt.Errorf("UIDL %s: %s says %d octets, %s %d", u, firstName, a.size, s.name, b.size)
				case a.crc != b.crc:
					return fmt.Errorf("UIDL %s: %s and %s retrieve different bytes", u, firstName, s.name)
				}
			}
			if len(got) != len(first) {
				return fmt.Errorf("%s gives %d UIDLs, %s %d", s.name, len(got), firstName, len(first))
			}
		}
	}
	return nil
}

// churn is the re-login after changes of issue 14: a session deletes ten
// messages and quits, and a new session logs in, asks STAT and UIDL and
// quits, at once. The first says what a change costs; the second whether
// the server trusts what the change left, or reads the directories again.
// want is the count the second session must find.
func churn(s *server, user, pass string, want int) ([2]time.Duration, error) {
	var d [2]time.Duration
	login := func() (*client, net.Conn, error) {
		conn, err := net.Dial("tcp", s.addr)
		if err != nil {
			return nil, nil, err
		}
		conn.SetDeadline(time.Now().Add(15 * time.Minute))
		c := &client{r: bufio.NewReaderSize(conn, 256<<10), w: conn}
		if _, err := c.status(); err != nil {
			conn.Close()
			return nil, nil, fmt.Errorf("greeting: %w", err)
		}
		for _, cmd := range []string{"USER " + user, "PASS " + pass} {
			if _, err := c.cmd(cmd); err != nil {
				conn.Close()
				return nil, nil, err
			}
		}
		return c, conn, nil
	}
	c, conn, err := login()
	if err != nil {
		return d, err
	}
	t0 := time.Now()
	for i := 1; i <= 10; i++ {
		if _, err := c.cmd(fmt.Sprintf("DELE %d", i)); err != nil {
			conn.Close()
			return d, err
		}
	}
	_, err = c.cmd("QUIT")
	// The server's session ends when the connection does: wait for it.
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	io.Copy(io.Discard, conn)
	conn.Close()
	d[0] = time.Since(t0)
	if err != nil {
		return d, err
	}
	t1 := time.Now()
	c, conn, err = login()
	if err != nil {
		return d, err
	}
	defer conn.Close()
	stat, err := c.cmd("STAT")
	if err != nil {
		return d, err
	}
	var count int
	if _, err := fmt.Sscanf(stat, "+OK %d", &count); err != nil || count != want {
		return d, fmt.Errorf("STAT after DELE: %q, want %d messages", stat, want)
	}
	lines, err := c.multi("UIDL")
	if err != nil {
		return d, err
	}
	d[1] = time.Since(t1)
	if len(lines) != want {
		return d, fmt.Errorf("UIDL after DELE: %d lines, want %d", len(lines), want)
	}
	c.cmd("QUIT")
	return d, nil
}

// normalizeUIDL drops a maildir info part (":2,S"), should a server's
// UIDL include it; neither tern nor Dovecot's %f does (checked: the
// comparison would fail on the Seen flag of the warm sessions otherwise).
func normalizeUIDL(u string) string {
	if i := strings.IndexByte(u, ':'); i >= 0 {
		return u[:i]
	}
	return u
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func report(o options, servers []*server, all map[int]*rows) {
	fmt.Printf("\n%d CPUs; cold: median of %d fresh copies at up to 10,000 messages, 1 above; warm: median of %d sessions\n", nproc(), o.coldSmall, o.warm)
	peer := ""
	if len(servers) > 1 {
		peer = servers[1].name
	}
	fmt.Printf("%-8s %-5s %-11s %10s %12s %14s  %9s %9s %8s\n", "messages", "", "step", "tern ms", peer+" ms", peer+"/tern", "tern cpu", "peer cpu", "cpu p/t")
	for _, n := range o.sizes {
		r := all[n]
		for _, phase := range []string{"cold", "warm"} {
			set := r.cold
			if phase == "warm" {
				set = r.warm
			}
			for i, step := range steps {
				line := fmt.Sprintf("%-8d %-5s %-11s", n, phase, step)
				var tern time.Duration
				for k, s := range servers {
					var ds []time.Duration
					for _, res := range set[s.name] {
						ds = append(ds, res.times[i])
					}
					m := median(ds)
					if k == 0 {
						tern = m
					}
					line += fmt.Sprintf(" %*.1f", []int{10, 12}[min(k, 1)], ms(m))
				}
				if len(servers) > 1 {
					var peerT time.Duration
					var ds []time.Duration
					for _, res := range set[servers[1].name] {
						ds = append(ds, res.times[i])
					}
					peerT = median(ds)
					ratio := float64(peerT) / float64(max(tern, 1))
					mark := ""
					if ratio < 1 {
						mark = "  tern slower"
					}
					line += fmt.Sprintf(" %14.2f%s", ratio, mark)
					// The processor time of the session process, which
					// the machine's load leaves alone.
					var cpus []time.Duration
					for _, sv := range servers[:2] {
						var ds []time.Duration
						for _, res := range set[sv.name] {
							if i < len(res.cpu) {
								ds = append(ds, res.cpu[i])
							}
						}
						cpus = append(cpus, median(ds))
					}
					line = fmt.Sprintf("%-58s  %9.1f %9.1f %8.2f", line, ms(cpus[0]), ms(cpus[1]), float64(cpus[1])/float64(max(cpus[0], 1)))
					if cpus[1] < cpus[0] {
						line += "  tern uses more"
					}
				}
				fmt.Println(line)
			}
		}
		for row := range 4 {
			phase, set := "churn", r.churn
			if row < 2 {
				phase, set = "coldc", r.churnCold
			}
			step, name := row%2, []string{"DELE+QUIT", "relogin"}[row%2]
			if len(set[servers[0].name]) == 0 {
				continue
			}
			line := fmt.Sprintf("%-8d %-5s %-11s", n, phase, name)
			var med []time.Duration
			for k, s := range servers {
				var ds []time.Duration
				for _, d := range set[s.name] {
					ds = append(ds, d[step])
				}
				med = append(med, median(ds))
				line += fmt.Sprintf(" %*.1f", []int{10, 12}[min(k, 1)], ms(med[k]))
			}
			if len(med) > 1 {
				ratio := float64(med[1]) / float64(max(med[0], 1))
				mark := ""
				if ratio < 1 {
					mark = "  tern slower"
				}
				line += fmt.Sprintf(" %14.2f%s", ratio, mark)
			}
			fmt.Println(line)
		}
		line := fmt.Sprintf("%-8d %-5s %-11s", n, "peak", "RSS MiB")
		var mems []float64
		for k, s := range servers {
			var hwm int64
			for _, res := range append(slices.Clone(r.cold[s.name]), r.warm[s.name]...) {
				hwm = max(hwm, res.hwm)
			}
			mems = append(mems, float64(hwm)/1024)
			line += fmt.Sprintf(" %*.1f", []int{10, 12}[min(k, 1)], float64(hwm)/1024)
		}
		if len(mems) > 1 {
			line += fmt.Sprintf(" %14.2f", mems[1]/mems[0])
		}
		if mems[0] >= 50 {
			line += "  over the 50 MB goal"
		}
		fmt.Println(line)
	}
	fmt.Println("peak RSS: the largest VmHWM of any one session process (tern-pop3d's per-connection child; Dovecot's pop3)")
	fmt.Println("cpu: median processor ms of the session process in the step (schedstat of its threads); LOGIN+STAT counts from the process's start (for Dovecot, its pop3 process, after pop3-login and auth)")
}

func nproc() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte("\nprocessor")) + 1
}

// generate writes n messages into dir/new under tern's names,
// "<sec>.M<usec>P<pid>Q<n>.<host>,S=<size>,W=<crlf size>", as if
// delivered over some weeks: most of 2-8 KiB, some tens of KiB, a few
// around 100 KiB. It returns the unique names and the bytes written.
func generate(dir string, n int, o options) ([]string, int64, error) {
	newDir := filepath.Join(dir, "new")
	if err := os.MkdirAll(newDir, 0o755); err != nil {
		return nil, 0, err
	}
	rng := rand.New(rand.NewPCG(uint64(n), 3))
	line := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 2)[:76] + "\n"
	start := int64(1_780_000_000)
	var names []string
	var total int64
	var b bytes.Buffer
	for i := range n {
		var size int
		switch r := rng.IntN(100); {
		case r < 85:
			size = 2000 + rng.IntN(6200)
		case r < 97:
			size = 8200 + rng.IntN(40000)
		default:
			size = 50000 + rng.IntN(100000)
		}
		b.Reset()
		fmt.Fprintf(&b, "Return-Path: <s%d@example.org>\nDelivered-To: user@example.net\nFrom: Sender %d <s%d@example.org>\nTo: user@example.net\nSubject: message %d of %d\nMessage-ID: <%d.%d@example.org>\nDate: Wed, 25 Nov 2026 10:00:00 +0000\n\n", i%97, i, i%97, i, n, i, n)
		for k := 0; b.Len() < size; k++ {
			if k%40 == 7 {
				b.WriteString(".a line that starts with a dot, stuffed on the wire\n")
			}
			b.WriteString(line)
		}
		data := b.Bytes()
		// About one delivery every 20 seconds, some in the same second.
		sec := start + int64(i)*20 - int64(rng.IntN(3))*int64(i%2)
		unique := fmt.Sprintf("%d.M%dP%dQ%d.bench.example,S=%d,W=%d", sec, rng.IntN(1e6), 1000+i%30000, i+1, len(data), len(data)+bytes.Count(data, []byte{'\n'}))
		p := filepath.Join(newDir, unique)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			return nil, 0, err
		}
		if os.Geteuid() == 0 {
			if err := os.Lchown(p, o.uid, o.uid); err != nil {
				return nil, 0, err
			}
		}
		names = append(names, unique)
		total += int64(len(data))
	}
	return names, total, nil
}

// copyMaildir makes home/Maildir with every generated message linked into
// new/, as the account's.
func copyMaildir(master, home string, names []string, o options) error {
	md := filepath.Join(home, "Maildir")
	// The homes' parent must be traversable by the account.
	if err := os.MkdirAll(filepath.Dir(home), 0o755); err != nil {
		return err
	}
	for _, d := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(md, d), 0o700); err != nil {
			return err
		}
	}
	for _, u := range names {
		if err := os.Link(filepath.Join(master, "new", u), filepath.Join(md, "new", u)); err != nil {
			return err
		}
	}
	if os.Geteuid() == 0 {
		for _, p := range []string{home, md, md + "/cur", md + "/new", md + "/tmp"} {
			if err := os.Lchown(p, o.uid, o.uid); err != nil {
				return err
			}
		}
	}
	return nil
}

// session runs one timed POP3 session.
func session(s *server, user, pass string) (*result, error) {
	res := &result{}
	lap := time.Now()
	mark := func() {
		now := time.Now()
		res.times = append(res.times, now.Sub(lap))
		lap = now
	}
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(15 * time.Minute))
	c := &client{r: bufio.NewReaderSize(conn, 256<<10), w: conn}
	if _, err := c.status(); err != nil {
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if _, err := c.cmd("USER " + user); err != nil {
		return nil, err
	}
	if _, err := c.cmd("PASS " + pass); err != nil {
		return nil, err
	}
	stat, err := c.cmd("STAT")
	if err != nil {
		return nil, err
	}
	mark()
	var count int
	if _, err := fmt.Sscanf(stat, "+OK %d", &count); err != nil {
		return nil, fmt.Errorf("STAT: %q", stat)
	}

	// The session process exists now; watch its peak RSS until it exits.
	pid, err := s.session()
	if err != nil {
		return nil, err
	}
	var lastCPU time.Duration
	cpuMark := func() {
		now := procCPU(pid)
		res.cpu = append(res.cpu, now-lastCPU)
		lastCPU = now
	}
	cpuMark()
	watch := make(chan int64)
	done := make(chan struct{})
	go func() {
		var peak int64
		for {
			if kb, ok := vmHWM(pid); ok {
				peak = max(peak, kb)
			} else {
				break // gone
			}
			select {
			case <-done:
				// One last look after QUIT, until the process is gone.
				for range 200 {
					kb, ok := vmHWM(pid)
					if !ok {
						break
					}
					peak = max(peak, kb)
					time.Sleep(5 * time.Millisecond)
				}
				watch <- peak
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
		<-done
		watch <- peak
	}()
	defer func() {
		select {
		case <-done:
		default:
			close(done)
			<-watch
		}
	}()

	lap = time.Now()
	lines, err := c.multi("UIDL")
	if err != nil {
		return nil, err
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 2 {
			return nil, fmt.Errorf("UIDL line %q", l)
		}
		res.uidl = append(res.uidl, f[1])
	}
	mark()
	cpuMark()
	lines, err = c.multi("LIST")
	if err != nil {
		return nil, err
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 2 {
			return nil, fmt.Errorf("LIST line %q", l)
		}
		size, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("LIST line %q", l)
		}
		res.sizes = append(res.sizes, size)
	}
	mark()
	cpuMark()
	if len(res.uidl) != count || len(res.sizes) != count {
		return nil, fmt.Errorf("STAT says %d messages, UIDL lists %d, LIST %d", count, len(res.uidl), len(res.sizes))
	}
	for i := 1; i <= count; i++ {
		n, crc, err := c.retr(i)
		if err != nil {
			return nil, err
		}
		res.octet = append(res.octet, n)
		res.crcs = append(res.crcs, crc)
	}
	mark()
	cpuMark()
	if _, err := c.cmd("QUIT"); err != nil {
		return nil, err
	}
	// Read at the reply, which comes after the UPDATE state's work,
	// while the process is still there to be asked.
	cpuMark()
	// QUIT's reply comes after the Seen flags are written (RFC 1939 §6:
	// the UPDATE state ends with the reply); the close follows.
	if _, err := c.r.ReadByte(); err != io.EOF {
		return nil, fmt.Errorf("after QUIT: the connection stays open (%v)", err)
	}
	mark()
	close(done)
	res.hwm = <-watch
	return res, nil
}

// procCPU is the time the threads of a process have spent on a
// processor, in nanoseconds from /proc/PID/task/TID/schedstat, 0 when it
// is gone.
func procCPU(pid int) time.Duration {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			sum += time.Duration(ns)
		}
	}
	return sum
}

func vmHWM(pid int) (int64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	m := regexp.MustCompile(`(?m)^VmHWM:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		return 0, false // a zombie has no memory lines
	}
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return kb, true
}

// client is a plain POP3 client: one command, one reply.
type client struct {
	r *bufio.Reader
	w io.Writer
}

func (c *client) line() ([]byte, error) {
	l, err := c.r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return nil, errors.New("reply line too long")
	}
	return l, err
}

func (c *client) status() (string, error) {
	l, err := c.line()
	if err != nil {
		return "", err
	}
	s := strings.TrimRight(string(l), "\r\n")
	if !strings.HasPrefix(s, "+OK") {
		return s, fmt.Errorf("server says %q", s)
	}
	return s, nil
}

func (c *client) cmd(cmd string) (string, error) {
	if _, err := io.WriteString(c.w, cmd+"\r\n"); err != nil {
		return "", err
	}
	s, err := c.status()
	if err != nil {
		return s, fmt.Errorf("%s: %w", strings.Fields(cmd)[0], err)
	}
	return s, nil
}

func (c *client) multi(cmd string) ([]string, error) {
	if _, err := c.cmd(cmd); err != nil {
		return nil, err
	}
	var out []string
	for {
		l, err := c.line()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cmd, err)
		}
		if string(l) == ".\r\n" {
			return out, nil
		}
		out = append(out, strings.TrimRight(string(l), "\r\n"))
	}
}

// retr retrieves message i and returns its length and CRC, after
// undoing the dot-stuffing (RFC 1939 §3).
func (c *client) retr(i int) (int64, uint32, error) {
	if _, err := c.cmd("RETR " + strconv.Itoa(i)); err != nil {
		return 0, 0, err
	}
	var n int64
	var crc uint32
	for {
		l, err := c.line()
		if err != nil {
			return 0, 0, fmt.Errorf("RETR %d: %w", i, err)
		}
		if l[0] == '.' {
			if string(l) == ".\r\n" {
				return n, crc, nil
			}
			l = l[1:]
		}
		n += int64(len(l))
		crc = crc32.Update(crc, crc32.IEEETable, l)
	}
}

// startTern starts tern-pop3d --listen on a free loopback port; as root
// each connection gets a process of its own, which drops to the account.
// Without root, --fork asks for the same.
func startTern(o options, users string) (*server, error) {
	conf := filepath.Join(o.work, "tern-conf")
	if err := os.Mkdir(conf, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(conf, "hostname"), []byte("bench.example\n"), 0o644); err != nil {
		return nil, err
	}
	if err := os.Symlink(users, filepath.Join(conf, "users")); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(o.work, "tern-pop3d.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(o.tern, "--conf", conf, "--listen", "127.0.0.1:0", "--fork", "--idle-timeout", "15m")
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{name: "tern-pop3d", cmd: cmd, prefix: "t"}
	re := regexp.MustCompile(`tern-pop3d: info: listening addr=(\S+)`)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(logf.Name())
		if m := re.FindSubmatch(b); m != nil {
			s.addr = string(m[1])
			break
		}
		if time.Now().After(deadline) {
			stop(s)
			return nil, fmt.Errorf("tern-pop3d did not report its address:\n%s", b)
		}
	}
	s.session = func() (int, error) { return child(cmd.Process.Pid, "") }
	return s, nil
}

// startDovecot starts a private Dovecot: its own base_dir, state_dir and
// log inside the work directory, POP3 only, on a free loopback port,
// accounts from the same users file, a process per session.
func startDovecot(o options, users string) (*server, error) {
	dir := filepath.Join(o.work, "dovecot")
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
	conf := fmt.Sprintf(`# generated by tests/bench/pop3
base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_login_user = %[2]s
default_internal_user = %[3]s
mail_location = maildir:~/Maildir
# The Maildir file name without its :2, info, as tern's UIDL.
pop3_uidl_format = %%f
passdb {
  driver = passwd-file
  args = scheme=PLAIN %[4]s
}
userdb {
  driver = passwd-file
  args = %[4]s
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = %[5]d
  }
}
# A process per session, as tern-pop3d's, so VmHWM is one session's.
service pop3 {
  service_count = 1
}
`, dir, loginUser, internalUser, users, port)
	confPath := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	out, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("dovecot", "-F", "-c", confPath)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{name: "dovecot", cmd: cmd, addr: fmt.Sprintf("127.0.0.1:%d", port), prefix: "d"}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.Dial("tcp", s.addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			stop(s)
			b, _ := os.ReadFile(out.Name())
			l, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
			return nil, fmt.Errorf("dovecot does not listen on %s: %s%s", s.addr, b, l)
		}
	}
	s.session = func() (int, error) { return child(cmd.Process.Pid, "pop3") }
	return s, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// child finds the one live child of parent (named comm, when given): the
// session process, since sessions run one at a time.
func child(parent int, comm string) (int, error) {
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		ents, err := os.ReadDir("/proc")
		if err != nil {
			return 0, err
		}
		var found []int
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil {
				continue
			}
			// pid (comm) state ppid ...; comm may hold spaces.
			i := bytes.LastIndexByte(b, ')')
			j := bytes.IndexByte(b, '(')
			if i < 0 || j < 0 {
				continue
			}
			f := strings.Fields(string(b[i+1:]))
			if len(f) < 2 || f[0] == "Z" {
				continue
			}
			if pp, _ := strconv.Atoi(f[1]); pp != parent {
				continue
			}
			if comm != "" && string(b[j+1:i]) != comm {
				continue
			}
			found = append(found, pid)
		}
		if len(found) == 1 {
			return found[0], nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%d session processes under pid %d, want 1", len(found), parent)
		}
	}
}

// stop ends a server by its pid and waits for it.
func stop(s *server) {
	if s.cmd.ProcessState != nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
}
