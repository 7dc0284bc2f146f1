// Command deliver is the driver behind tests/bench/deliver.sh: it delivers
// the same generated messages, one process per message, with tern-deliver
// and with every peer that is installed (procmail, maildrop, dovecot-lda),
// interleaving the tools message by message so that the noise of a shared
// machine falls on all of them alike, and prints per-message medians, the
// ratios to tern-deliver, and the fsync-family calls each tool makes.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

type tool struct {
	name  string
	argv  []string
	env   []string
	dir   string // the Maildir it delivers into
	times []time.Duration
}

func main() {
	n := flag.Int("n", 2000, "messages to deliver with each tool")
	work := flag.String("work", "", "working directory (made; must not exist)")
	tern := flag.String("tern", "", "path of tern-deliver")
	uid := flag.Int("uid", 65534, "run every delivery as this uid (and gid) when root")
	lmtp := flag.Bool("lmtp", true, "also deliver over LMTP: tern-deliver --lmtp beside Dovecot's LMTP server")
	conc := flag.Int("lmtp-connections", 4, "connections at once in the second LMTP run")
	lmtpOnly := flag.Bool("lmtp-only", false, "only the LMTP table")
	var others []string
	flag.Func("other", "another tern-deliver to run beside the first, as `NAME=PATH` (an older build, to compare in the same run); repeatable", func(v string) error {
		if !strings.Contains(v, "=") {
			return fmt.Errorf("want NAME=PATH, got %q", v)
		}
		others = append(others, v)
		return nil
	})
	flag.Parse()
	if *work == "" || *tern == "" {
		fmt.Fprintln(os.Stderr, "usage: deliver -work DIR -tern PATH [-n N]")
		os.Exit(64)
	}
	if err := run(*n, *work, *tern, others, *uid, *lmtp, *lmtpOnly, *conc); err != nil {
		fmt.Fprintln(os.Stderr, "deliver:", err)
		os.Exit(1)
	}
}

func run(n int, work, tern string, others []string, uid int, lmtp, lmtpOnly bool, conc int) error {
	if err := os.Mkdir(work, 0o755); err != nil {
		return err
	}
	msgs, sizes, err := generate(filepath.Join(work, "msgs"), n)
	if err != nil {
		return err
	}
	if lmtpOnly {
		return lmtpBench(work, tern, msgs, uid, conc)
	}
	tools, err := setup(work, tern, others)
	if err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		if err := chownAll(work, uid); err != nil {
			return err
		}
	}
	for i, m := range msgs {
		// Rotate the order so no tool always runs right after another.
		for k := range tools {
			t := tools[(i+k)%len(tools)]
			d, err := deliverOne(t, m, uid)
			if err != nil {
				return fmt.Errorf("%s, message %d: %w", t.name, i, err)
			}
			t.times = append(t.times, d)
		}
	}
	for _, t := range tools {
		got := count(filepath.Join(t.dir, "new")) + count(filepath.Join(t.dir, "cur"))
		if got != n {
			return fmt.Errorf("%s: %d messages in its Maildir, want %d", t.name, got, n)
		}
	}
	report(tools, sizes, msgs[0], uid)
	if lmtp {
		return lmtpBench(work, tern, msgs, uid, conc)
	}
	return nil
}

// generate writes n messages of mixed sizes: most a few KiB, some tens of
// KiB, a few hundreds, as a mailbox's mix is.
func generate(dir string, n int) ([]string, []int, error) {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, nil, err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var paths []string
	var sizes []int
	line := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 2)[:76] + "\n"
	for i := range n {
		var size int
		switch r := rng.IntN(100); {
		case r < 80:
			size = 1000 + rng.IntN(7000)
		case r < 95:
			size = 20000 + rng.IntN(60000)
		default:
			size = 200000 + rng.IntN(400000)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "From: Sender %d <s%d@example.org>\nTo: user@example.net\nSubject: message %d\nMessage-ID: <%d@example.org>\nDate: Wed, 25 Nov 2026 10:00:00 +0000\n\n", i, i, i, i)
		for b.Len() < size {
			b.WriteString(line)
		}
		p := filepath.Join(dir, fmt.Sprint(i))
		if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
			return nil, nil, err
		}
		paths = append(paths, p)
		sizes = append(sizes, b.Len())
	}
	return paths, sizes, nil
}

func setup(work, tern string, others []string) ([]*tool, error) {
	mk := func(name string) (string, error) {
		md := filepath.Join(work, name, "Maildir")
		for _, d := range []string{"cur", "new", "tmp"} {
			if err := os.MkdirAll(filepath.Join(md, d), 0o700); err != nil {
				return "", err
			}
		}
		return md, nil
	}
	var tools []*tool
	md, err := mk("tern")
	if err != nil {
		return nil, err
	}
	tools = append(tools, &tool{name: "tern-deliver", argv: []string{tern, "-f", "s@example.org", "-r", "user@example.net", md}, dir: md})
	// The same program as a caller that sets GOMAXPROCS=1 runs it: the Go
	// runtime reads that before any of tern-deliver's code can set it, and
	// then starts one thread fewer (tern-deliver(8), ENVIRONMENT).
	md, err = mk("tern1")
	if err != nil {
		return nil, err
	}
	tools = append(tools, &tool{name: "tern-deliver GOMAXPROCS=1", argv: []string{tern, "-f", "s@example.org", "-r", "user@example.net", md}, env: []string{"GOMAXPROCS=1"}, dir: md})
	for i, o := range others {
		name, path, _ := strings.Cut(o, "=")
		md, err := mk(fmt.Sprintf("other%d", i))
		if err != nil {
			return nil, err
		}
		tools = append(tools, &tool{name: name, argv: []string{path, "-f", "s@example.org", "-r", "user@example.net", md}, dir: md})
	}
	if p, err := exec.LookPath("procmail"); err == nil {
		md, err := mk("procmail")
		if err != nil {
			return nil, err
		}
		rc := filepath.Join(work, "procmail", "procmailrc")
		if err := os.WriteFile(rc, []byte("DEFAULT="+md+"/\nMAILDIR="+md+"/\nLOGFILE=\n"), 0o644); err != nil {
			return nil, err
		}
		tools = append(tools, &tool{name: "procmail", argv: []string{p, "-f", "s@example.org", "-m", rc}, dir: md})
	}
	if p, err := exec.LookPath("maildrop"); err == nil {
		md, err := mk("maildrop")
		if err != nil {
			return nil, err
		}
		rc := filepath.Join(work, "maildrop", "mailfilter")
		if err := os.WriteFile(rc, []byte("to \""+md+"/\"\n"), 0o600); err != nil {
			return nil, err
		}
		tools = append(tools, &tool{name: "maildrop", argv: []string{p, rc}, dir: md})
	}
	if p := "/usr/lib/dovecot/dovecot-lda"; exists(p) {
		md, err := mk("dovecot")
		if err != nil {
			return nil, err
		}
		conf := filepath.Join(work, "dovecot", "dovecot.conf")
		// mail_fsync=always is Dovecot's durable setting, the one that
		// compares with tern-deliver's fsync of file and directory.
		c := "mail_location = maildir:" + md + "\nlog_path = " + filepath.Join(work, "dovecot", "lda.log") + "\nmail_fsync = always\n"
		if err := os.WriteFile(conf, []byte(c), 0o644); err != nil {
			return nil, err
		}
		tools = append(tools, &tool{name: "dovecot-lda", argv: []string{p, "-c", conf, "-f", "s@example.org"}, env: []string{"HOME=" + filepath.Dir(md), "USER=nobody"}, dir: md})
	}
	return tools, nil
}

func deliverOne(t *tool, msg string, uid int) (time.Duration, error) {
	in, err := os.Open(msg)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	cmd := command(t, uid)
	cmd.Stdin = in
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	err = cmd.Run()
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, stderr.String())
	}
	return d, nil
}

func command(t *tool, uid int) *exec.Cmd {
	cmd := exec.Command(t.argv[0], t.argv[1:]...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + filepath.Dir(t.dir), "LANG=C"}, t.env...)
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	}
	return cmd
}

func chownAll(dir string, uid int) error {
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, uid)
	})
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func count(dir string) int {
	e, _ := os.ReadDir(dir)
	return len(e)
}

func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }

func report(tools []*tool, sizes []int, sample string, uid int) {
	total := 0
	for _, s := range sizes {
		total += s
	}
	fmt.Printf("%d messages of mixed sizes (median %d bytes, mean %d), one process per message, tools interleaved\n\n",
		len(sizes), sizes[len(sizes)/2], total/len(sizes))
	base := quantile(tools[0].times, 0.5)
	fmt.Printf("%-26s %10s %10s %10s %14s %s\n", "tool", "median ms", "p90 ms", "min ms", "median/tern", "fsync calls per message (strace)")
	for _, t := range tools {
		med := quantile(t.times, 0.5)
		fmt.Printf("%-26s %10s %10s %10s %14.2f %s\n", t.name, ms(med), ms(quantile(t.times, 0.9)), ms(quantile(t.times, 0)),
			float64(med)/float64(base), fsyncs(t, sample, uid))
	}
}

// fsyncs runs one more delivery under strace and counts the calls that
// make data durable, by kind.
func fsyncs(t *tool, msg string, uid int) string {
	if _, err := exec.LookPath("strace"); err != nil {
		return "(strace not installed)"
	}
	out, err := os.CreateTemp("", "strace-")
	if err != nil {
		return err.Error()
	}
	out.Close()
	defer os.Remove(out.Name())
	// strace writes the file as the delivering user.
	if err := os.Chmod(out.Name(), 0o666); err != nil {
		return err.Error()
	}
	inner := command(t, uid)
	cmd := exec.Command("strace", append([]string{"-f", "-qq", "-o", out.Name(), "-e", "trace=fsync,fdatasync,syncfs,sync_file_range,msync,sync"}, inner.Args...)...)
	cmd.Env = inner.Env
	cmd.SysProcAttr = inner.SysProcAttr
	in, err := os.Open(msg)
	if err != nil {
		return err.Error()
	}
	defer in.Close()
	cmd.Stdin = in
	if err := cmd.Run(); err != nil {
		return "strace: " + err.Error()
	}
	f, err := os.Open(out.Name())
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	counts := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, ' '); i >= 0 {
			line = strings.TrimSpace(line[i:]) // drop the pid
		}
		if i := strings.IndexByte(line, '('); i > 0 {
			counts[line[:i]]++
		}
	}
	if len(counts) == 0 {
		return "none"
	}
	var parts []string
	for k, v := range counts {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}
