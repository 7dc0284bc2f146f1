package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// lmtpTool is one LMTP server under test, with its connections open.
type lmtpTool struct {
	name  string
	dir   string // the Maildir it delivers into
	dial  func() (net.Conn, error)
	stop  func()
	times []time.Duration
	total time.Duration // wall time of its rounds of the concurrent run
}

// lmtpBench delivers the messages over LMTP, one connection per server,
// tern-deliver --lmtp and Dovecot's LMTP server interleaved message by
// message; then again over conc connections at once per server. The
// account is uid 65534 when run as root (tern-lmtpd then delivers with
// its fs ids, Dovecot with mail_uid), the caller otherwise.
func lmtpBench(work, tern string, msgs []string, uid, conc int) error {
	bodies := make([][]byte, len(msgs))
	for i, m := range msgs {
		b, err := os.ReadFile(m)
		if err != nil {
			return err
		}
		b = bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
		b = bytes.ReplaceAll(b, []byte("\r\n."), []byte("\r\n.."))
		bodies[i] = b
	}
	tools := []*lmtpTool{}
	t, err := ternLMTP(filepath.Join(work, "lmtp-tern"), tern, uid, false)
	if err != nil {
		return err
	}
	defer t.stop()
	tools = append(tools, t)
	if os.Geteuid() == 0 {
		// The same server started as the account itself: what acting as
		// the account on a thread of its own (setfsuid) costs as root.
		t, err := ternLMTP(filepath.Join(work, "lmtp-tern-user"), tern, uid, true)
		if err != nil {
			return err
		}
		defer t.stop()
		tools = append(tools, t)
	}
	if _, err := os.Stat("/usr/lib/dovecot/lmtp"); err == nil {
		d, err := dovecotLMTP(filepath.Join(work, "lmtp-dovecot"), uid)
		if err != nil {
			return err
		}
		defer d.stop()
		tools = append(tools, d)
	} else {
		fmt.Println("\nnote: Dovecot's LMTP server is not installed; its row is left out (Debian package dovecot-lmtpd)")
	}
	// One connection each, interleaved.
	conns := make([]*lmtpConn, len(tools))
	for i, t := range tools {
		c, err := t.dial()
		if err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		if conns[i], err = greet(c); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	for i, b := range bodies {
		for k := range tools {
			j := (i + k) % len(tools)
			start := time.Now()
			if err := conns[j].send(b); err != nil {
				return fmt.Errorf("%s, message %d: %w", tools[j].name, i, err)
			}
			tools[j].times = append(tools[j].times, time.Since(start))
		}
	}
	for _, c := range conns {
		c.quit()
	}
	// conc connections at once per server, the servers taking turns a
	// round of messages at a time, so that a noisy moment of the machine
	// falls on all of them.
	pools := make([][]*lmtpConn, len(tools))
	for i, t := range tools {
		for range conc {
			nc, err := t.dial()
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			c, err := greet(nc)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			pools[i] = append(pools[i], c)
		}
	}
	round := conc * 8
	for r, from := 0, 0; from < len(bodies); r, from = r+1, from+round {
		slice := bodies[from:min(from+round, len(bodies))]
		for k := range tools {
			j := (r + k) % len(tools)
			t := tools[j]
			start := time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, conc)
			for ci, c := range pools[j] {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := ci; i < len(slice); i += conc {
						if err := c.send(slice[i]); err != nil {
							errs <- fmt.Errorf("%s, message %d: %w", t.name, from+i, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			t.total += time.Since(start)
			close(errs)
			for err := range errs {
				return err
			}
		}
	}
	for _, p := range pools {
		for _, c := range p {
			c.quit()
		}
	}
	for _, t := range tools {
		got := count(filepath.Join(t.dir, "new")) + count(filepath.Join(t.dir, "cur"))
		if got != 2*len(bodies) {
			return fmt.Errorf("%s: %d messages in its Maildir, want %d", t.name, got, 2*len(bodies))
		}
	}
	fmt.Printf("\nLMTP: the same %d messages into one Maildir, durable (Dovecot with mail_fsync = always), as uid %d\n", len(bodies), uidOrSelf(uid))
	fmt.Printf("one connection (MAIL to the last reply after DATA), then %d connections at once; servers interleaved\n\n", conc)
	fmt.Printf("%-26s %10s %10s %12s %12s %14s %12s\n", "server", "median ms", "p90 ms", "msgs/s (1)", "ratio (1)", fmt.Sprintf("msgs/s (%d)", conc), fmt.Sprintf("ratio (%d)", conc))
	base := tools[len(tools)-1]
	for _, t := range tools {
		var sum time.Duration
		for _, d := range t.times {
			sum += d
		}
		rate1 := float64(len(t.times)) / sum.Seconds()
		baseSum := time.Duration(0)
		for _, d := range base.times {
			baseSum += d
		}
		rateN := float64(len(bodies)) / t.total.Seconds()
		fmt.Printf("%-26s %10s %10s %12.0f %12.2f %14.0f %12.2f\n", t.name, ms(quantile(t.times, 0.5)), ms(quantile(t.times, 0.9)),
			rate1, rate1/(float64(len(base.times))/baseSum.Seconds()), rateN, rateN/(float64(len(bodies))/base.total.Seconds()))
	}
	fmt.Printf("(ratios are to %s: above 1 is faster)\n", base.name)
	return nil
}

func uidOrSelf(uid int) int {
	if os.Geteuid() == 0 {
		return uid
	}
	return os.Geteuid()
}

// makeMaildir makes dir/Maildir for the account.
func makeMaildir(dir string, uid int) (string, error) {
	md := filepath.Join(dir, "home", "Maildir")
	// The server, delivering as the account, must reach its home.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for _, d := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(md, d), 0o700); err != nil {
			return "", err
		}
	}
	if os.Geteuid() == 0 {
		if err := chownAll(filepath.Join(dir, "home"), uid); err != nil {
			return "", err
		}
	}
	return md, nil
}

// ternLMTP runs `tern-deliver --lmtp --listen unix:...` as the caller
// (root: it delivers with the account's ids), or as the account, one
// process for every connection, as contrib/tern-deliver-lmtp.service
// runs it.
func ternLMTP(dir, tern string, uid int, asUser bool) (*lmtpTool, error) {
	md, err := makeMaildir(dir, uid)
	if err != nil {
		return nil, err
	}
	if asUser {
		// The socket is made by the account, in a directory of its own.
		if err := os.Chown(dir, uid, uid); err != nil {
			return nil, err
		}
	}
	conf := filepath.Join(dir, "etc")
	os.MkdirAll(conf, 0o755)
	id := ""
	if os.Geteuid() == 0 {
		id = fmt.Sprint(uid)
	}
	users := fmt.Sprintf("user@example.net:{PLAIN}x:%s:%s::%s::\n", id, id, filepath.Dir(md))
	os.WriteFile(filepath.Join(conf, "users"), []byte(users), 0o644)
	os.WriteFile(filepath.Join(conf, "domains"), []byte("example.net\n"), 0o644)
	os.WriteFile(filepath.Join(conf, "hostname"), []byte("bench.example.net\n"), 0o644)
	sock := filepath.Join(dir, "lmtp.sock")
	cmd := exec.Command(tern, "--lmtp", "--listen", "unix:"+sock, "--conf", conf)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	name := "tern-deliver --lmtp"
	if asUser {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
		name += " as uid"
	} else if os.Geteuid() == 0 {
		name += " as root"
	}
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }
	if err := waitSocket(sock); err != nil {
		stop()
		return nil, fmt.Errorf("tern-deliver --lmtp: %w: %s", err, logs.String())
	}
	return &lmtpTool{name: name, dir: md, stop: stop,
		dial: func() (net.Conn, error) { return net.Dial("unix", sock) }}, nil
}

// dovecotLMTP runs a private Dovecot whose only service is LMTP, with a
// static userdb for the one account, mail_fsync = always: Dovecot's
// durable setting, the one that compares with tern's.
func dovecotLMTP(dir string, uid int) (*lmtpTool, error) {
	md, err := makeMaildir(dir, uid)
	if err != nil {
		return nil, err
	}
	u := uidOrSelf(uid)
	conf := filepath.Join(dir, "dovecot.conf")
	c := fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
mail_location = maildir:%[2]s
mail_fsync = always
first_valid_uid = 1
first_valid_gid = 0
ssl = no
protocols = lmtp
passdb {
  driver = static
  args = nopassword=y
}
userdb {
  driver = static
  args = uid=%[3]d gid=%[3]d home=%[4]s
}
service lmtp {
  unix_listener lmtp {
    mode = 0666
  }
}
`, dir, md, u, filepath.Dir(md))
	if err := os.WriteFile(conf, []byte(c), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command("dovecot", "-F", "-c", conf)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }
	sock := filepath.Join(dir, "run", "lmtp")
	if err := waitSocket(sock); err != nil {
		stop()
		return nil, fmt.Errorf("dovecot: %w: %s", err, logs.String())
	}
	return &lmtpTool{name: "dovecot lmtp", dir: md, stop: stop,
		dial: func() (net.Conn, error) { return net.Dial("unix", sock) }}, nil
}

func waitSocket(path string) error {
	for range 500 {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return errors.New("no socket at " + path + " after 5s")
}

// lmtpConn is a minimal LMTP client: one recipient a message, commands
// one at a time.
type lmtpConn struct {
	c net.Conn
	r *bufio.Reader
}

func greet(c net.Conn) (*lmtpConn, error) {
	l := &lmtpConn{c: c, r: bufio.NewReader(c)}
	if _, err := l.reply("220"); err != nil {
		return nil, err
	}
	if err := l.cmd("LHLO bench.example.net", "250"); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *lmtpConn) reply(want string) (string, error) {
	for {
		line, err := l.r.ReadString('\n')
		if err != nil {
			return "", err
		}
		if len(line) >= 4 && line[3] == '-' {
			continue
		}
		if !strings.HasPrefix(line, want) {
			return "", fmt.Errorf("want %s, got %q", want, line)
		}
		return line, nil
	}
}

func (l *lmtpConn) cmd(c, want string) error {
	if _, err := fmt.Fprintf(l.c, "%s\r\n", c); err != nil {
		return err
	}
	_, err := l.reply(want)
	return err
}

func (l *lmtpConn) send(body []byte) error {
	if err := l.cmd("MAIL FROM:<s@example.org>", "250"); err != nil {
		return err
	}
	if err := l.cmd("RCPT TO:<user@example.net>", "250"); err != nil {
		return err
	}
	if err := l.cmd("DATA", "354"); err != nil {
		return err
	}
	if _, err := l.c.Write(append(body, ".\r\n"...)); err != nil {
		return err
	}
	_, err := l.reply("250")
	return err
}

func (l *lmtpConn) quit() {
	l.cmd("QUIT", "221")
	l.c.Close()
}
