package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMakeRunDemo runs the demo behind `make run` once, on free ports: the
// sample mail delivered by tern-deliver and two messages sent by SMTP (to
// tern-smtpd in MX mode, and submitted with AUTH), through tern-enqueue,
// tern-queue and tern-deliver, must all reach a POP3 client.
func TestMakeRunDemo(t *testing.T) {
	Need(t, "python3")
	r := NewRoot(t)
	res := RunCmd(t, demoCmd(t, r, "TERN_DEMO_ONCE=1"), "")
	if res.Code != 0 || !strings.Contains(res.Stdout, "a POP3 client sees 5 messages") || !strings.Contains(res.Stdout, "Lists.Go:") {
		t.Fatalf("demo:\n%v", res)
	}
}

// demoCmd prepares contrib/run-demo.sh on free loopback ports, in r.
func demoCmd(t *testing.T, r *Root, env ...string) *exec.Cmd {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	r.OpenUp()
	cmd := exec.Command("sh", filepath.Join(root, "contrib", "run-demo.sh"))
	cmd.Env = r.Env(append([]string{"TERN_BIN=" + binDir, "TERN_DEMO_DIR=" + r.Path("run"),
		fmt.Sprintf("TERN_DEMO_POP3=127.0.0.1:%d", freePort(t)),
		fmt.Sprintf("TERN_DEMO_IMAP=127.0.0.1:%d", freePort(t)),
		fmt.Sprintf("TERN_DEMO_SMTP=127.0.0.1:%d", freePort(t)),
		fmt.Sprintf("TERN_DEMO_SUBMIT=127.0.0.1:%d", freePort(t))}, env...)...)
	// Servers that outlive the demo hold its output open: stop waiting
	// for it a second after the demo itself ends, so that the test fails
	// rather than hangs.
	cmd.WaitDelay = time.Second
	return cmd
}

// startDemo starts the demo as `make run` does and waits until it says it
// is running.
func startDemo(t *testing.T, r *Root) *Proc {
	t.Helper()
	p := StartCmd(t, demoCmd(t, r), strings.NewReader(""))
	Eventually(t, time.Minute, "the demo says it is running", func() bool {
		if res, ended := p.Wait(0); ended {
			t.Fatalf("the demo ended early:\n%v", res)
		}
		return strings.Contains(p.Stdout(), "press Ctrl-C to stop")
	})
	return p
}

// TestMakeRunDemoStops: whatever signal ends the demo — Ctrl-C, kill, the
// terminal closing (SIGHUP), or SIGKILL, which no trap sees — every server
// it started stops too.
func TestMakeRunDemoStops(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			r := NewRoot(t)
			p := startDemo(t, r)
			servers := childrenOf(t, p.Cmd.Process.Pid)
			t.Cleanup(func() {
				for _, pid := range servers {
					if running(pid) {
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			})
			var names []string
			for _, pid := range servers {
				names = append(names, procName(pid))
			}
			if got := strings.Join(names, " "); strings.Count(got, "tern-smtpd") != 2 || !strings.Contains(got, "tern-queue") || !strings.Contains(got, "tern-pop3d") || !strings.Contains(got, "tern-imapd") {
				t.Fatalf("the demo's children are %q, want tern-queue, tern-pop3d, tern-imapd and two tern-smtpd", got)
			}
			if err := p.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if _, ok := p.Wait(30 * time.Second); !ok {
				t.Fatalf("the demo, or a server holding its output, still runs 30s after %v", sig)
			}
			Eventually(t, 10*time.Second, fmt.Sprintf("every server stops after %v to the demo", sig), func() bool {
				for i, pid := range servers {
					if running(pid) {
						t.Logf("still running: %s (pid %d)", names[i], pid)
						return false
					}
				}
				return true
			})
		})
	}
}

// TestMakeRunDemoFetchmail runs the fetchmail line the demo prints, with
// Debian's fetchmail, the password in ~/.netrc as a user would type it:
// it must fetch every message into the Maildir the line names.
func TestMakeRunDemoFetchmail(t *testing.T) {
	Need(t, "fetchmail")
	r := NewRoot(t)
	p := startDemo(t, r)
	line := regexp.MustCompile(`(?m)^\s*(?:try: )?\s*(fetchmail .*)$`).FindStringSubmatch(p.Stdout())
	if line == nil {
		t.Fatalf("the demo prints no fetchmail line:\n%s", p.Stdout())
	}
	home := r.Path("fetcher")
	if err := os.MkdirAll(home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".netrc"), []byte("machine 127.0.0.1 login demo password demo\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", line[1])
	cmd.Env = r.Env("HOME=" + home)
	res := RunCmd(t, cmd, "")
	if res.Code != 0 {
		t.Fatalf("%s:\n%v", line[1], res)
	}
	// INBOX holds the demo's three sample messages and, with python3, the
	// two it sent by SMTP; POP3 does not see the Lists.Go folder.
	want := 3
	if _, err := exec.LookPath("python3"); err == nil {
		want += 2
	}
	if n := len(visible(t, r.Path("run", "fetched", "Maildir"))); n != want {
		t.Errorf("fetchmail delivered %d messages, want %d:\n%v", n, want, res)
	}
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(t *testing.T, pid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("SKIP: no /proc: %v", err)
	}
	var kids []int
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _ := procStat(n); ppid == pid {
			kids = append(kids, n)
		}
	}
	return kids
}

// procStat reads a process's parent and state from /proc/PID/stat.
func procStat(pid int) (ppid int, state string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, ""
	}
	// The name is in parentheses and may hold spaces: fields follow the last ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 2 {
		return 0, ""
	}
	ppid, _ = strconv.Atoi(f[1])
	return ppid, f[0]
}

func procName(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// running: the process exists and is not a zombie left for a parent (or
// an init in a container) that does not reap.
func running(pid int) bool {
	_, state := procStat(pid)
	return state != "" && state != "Z" && state != "X"
}
