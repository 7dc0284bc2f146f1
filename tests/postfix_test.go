package tests

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// privatePostfix is a Postfix instance of a test's own: its own
// config_directory, queue_directory and data_directory below Dir, smtpd on
// IP:Port, stopped with "postfix -c DIR stop" when the test ends. It never
// touches the system's instance.
type privatePostfix struct {
	Dir  string // etc/, spool/, data/ and whatever the test adds
	IP   string
	Port int
}

// postfixConfig is what a test adds to a private Postfix's configuration.
type postfixConfig struct {
	Main     string // main.cf lines after the common ones
	Services string // master.cf lines after the common ones (lmtp, virtual, tlsmgr...)
}

// startPrivatePostfix starts a private Postfix. setup runs once its
// directories exist and before it starts (files and sockets the
// configuration names go there), and returns what the test adds to the
// configuration; main.cf may use %[1]s for the directory.
func startPrivatePostfix(t *testing.T, setup func(dir string) postfixConfig) *privatePostfix {
	t.Helper()
	NeedRoot(t) // master(8) must start as root
	if _, err := os.Stat("/usr/sbin/postfix"); err != nil {
		skipLoudly(t, "postfix is not installed (Debian: apt-get install postfix; .ci/run does)")
	}
	out, err := exec.Command("id", "-u", "postfix").Output()
	if err != nil {
		skipLoudly(t, "no postfix user: the postfix package is not installed properly (Debian: apt-get install postfix)")
	}
	pfUID, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	// Postfix's processes run as postfix and nobody: every directory on
	// the way down must be theirs to pass through.
	dir, err := os.MkdirTemp("", "tern-pf-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"etc", "spool", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(dir, "data"), pfUID, -1); err != nil {
		t.Fatal(err)
	}
	l, ip := listenLoopback(t, 0)
	pf := &privatePostfix{Dir: dir, IP: ip, Port: l.Addr().(*net.TCPAddr).Port}
	l.Close()
	cfg := setup(dir)
	// inet_interfaces = all: Postfix refuses a 127.x.y.z no interface
	// has; master.cf binds smtpd to IP:Port alone.
	mainCF := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/spool
data_directory = %[1]s/data
myhostname = mx.postfix.test
mydestination =
inet_interfaces = all
inet_protocols = ipv4
smtpd_peername_lookup = no
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s
`+cfg.Main, dir)
	masterCF := fmt.Sprintf(`%s:%d inet n - n - 10 smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
`, pf.IP, pf.Port) + cfg.Services
	etc := filepath.Join(dir, "etc")
	for name, text := range map[string]string{"main.cf": mainCF, "master.cf": masterCF} {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	postfix := func(args ...string) ([]byte, error) {
		cmd := exec.Command("/usr/sbin/postfix", append([]string{"-c", etc}, args...)...)
		cmd.Env = append(os.Environ(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin")
		return cmd.CombinedOutput()
	}
	if out, err := postfix("start"); err != nil {
		t.Fatalf("postfix -c %s start: %v\n%s\n%s", etc, err, out, pf.Log())
	}
	t.Cleanup(func() {
		pidText, _ := os.ReadFile(filepath.Join(dir, "spool", "pid", "master.pid"))
		postfix("stop")
		// master leaves a moment after "stop", and its children with it.
		if pid, err := strconv.Atoi(strings.TrimSpace(string(pidText))); err == nil {
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) && syscall.Kill(pid, 0) == nil {
				time.Sleep(50 * time.Millisecond)
			}
		}
		if t.Failed() {
			t.Logf("postfix's log:\n%s", pf.Log())
		}
		os.RemoveAll(dir)
	})
	Eventually(t, 15*time.Second, "postfix's smtpd to listen", func() bool {
		c, err := net.Dial("tcp", pf.Addr())
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return pf
}

// Addr is where its smtpd listens.
func (pf *privatePostfix) Addr() string { return net.JoinHostPort(pf.IP, strconv.Itoa(pf.Port)) }

// Log is its maillog so far.
func (pf *privatePostfix) Log() string {
	b, _ := os.ReadFile(filepath.Join(pf.Dir, "maillog"))
	return string(b)
}
