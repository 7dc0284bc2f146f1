package tests

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestMakeInstall installs into a DESTDIR as a packager would and uses the
// result as a new user would: the queue is there with the modes of
// tern-queue(5), sendmail (a link to tern-enqueue) submits into it — as an
// ordinary user too, when the test can become one — and `man sendmail` and
// `man mailq` find tern-enqueue(8). A second install leaves the queue and
// what is in it alone.
func TestMakeInstall(t *testing.T) {
	Need(t, "make")
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	r := NewRoot(t)
	r.OpenUp()
	dest := r.Path("dest")
	install := func() Result {
		cmd := exec.Command("make", "-s", "-C", root, "install", "DESTDIR="+dest, "BUILDDIR="+r.Path("build"))
		// The caller's environment: make runs go, with its caches.
		cmd.Env = os.Environ()
		return RunCmd(t, cmd, "")
	}
	res := install()
	spool := filepath.Join(dest, "var", "spool", "tern")
	if res.Code != 0 || !strings.Contains(res.Stdout, "queue: made "+spool) {
		t.Fatalf("make install:\n%v", res)
	}
	for _, d := range []struct {
		name string
		mode fs.FileMode
	}{{"incoming", 0o733 | fs.ModeSticky}, {"mess", 0o700}, {"env", 0o700}, {"bad", 0o700}} {
		fi, err := os.Stat(filepath.Join(spool, d.name))
		if err != nil {
			t.Error(err)
			continue
		}
		if got := fi.Mode() & (fs.ModePerm | fs.ModeSticky); !fi.IsDir() || got != d.mode {
			t.Errorf("%s: mode %v, want a directory with %v", d.name, fi.Mode(), d.mode)
		}
	}

	sendmail := filepath.Join(dest, "usr", "local", "sbin", "sendmail")
	msg := "To: bob@example.org\nSubject: the first mail\n\nhello\n"
	cmd := exec.Command(sendmail, "-t")
	submitter := os.Getuid()
	if os.Geteuid() == 0 {
		// A user, not root: incoming/ must take their mail.
		Need(t, "setpriv")
		submitter = 65534
		cmd = exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sendmail, "-t")
	}
	cmd.Env = []string{"PATH=/usr/bin:/bin", "TERN_QUEUE=" + spool, "TERN_CONF=" + r.Conf}
	if res := RunCmd(t, cmd, msg); res.Code != 0 {
		t.Fatalf("sendmail -t into the installed queue:\n%v", res)
	}
	entries, err := os.ReadDir(filepath.Join(spool, "incoming"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("incoming/ holds %v (%v), want one submission", entries, err)
	}
	fi, err := entries[0].Info()
	if err != nil {
		t.Fatal(err)
	}
	if owner := int(fi.Sys().(*syscall.Stat_t).Uid); owner != submitter {
		t.Errorf("the submission belongs to uid %d, want the submitter %d", owner, submitter)
	}

	if res := install(); res.Code != 0 || !strings.Contains(res.Stdout, "queue: "+spool+" is there; left as it is") {
		t.Errorf("second make install:\n%v", res)
	}
	if again, err := os.ReadDir(filepath.Join(spool, "incoming")); err != nil || len(again) != 1 {
		t.Errorf("after a second install incoming/ holds %v (%v)", again, err)
	}

	t.Run("man", func(t *testing.T) {
		Need(t, "man")
		for _, page := range []string{"sendmail", "mailq", "tern-enqueue"} {
			out, err := exec.Command("man", "-M", filepath.Join(dest, "usr", "local", "share", "man"), "-w", page).Output()
			if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), "/man8/tern-enqueue.8") {
				t.Errorf("man -w %s: %q %v, want tern-enqueue(8)", page, out, err)
			}
		}
	})
}
