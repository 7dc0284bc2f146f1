package privdrop

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// The drop changes the whole process for good, so it is tested in a child:
// the test binary re-runs itself with PRIVDROP_CHILD set.
func TestMain(m *testing.M) {
	switch os.Getenv("PRIVDROP_CHILD") {
	case "nobody":
		if err := To(65534, 65534); err != nil {
			os.Stderr.WriteString("drop: " + err.Error() + "\n")
			os.Exit(1)
		}
		// Root is gone: a file only root may open is now refused.
		if f, err := os.Open("/etc/shadow"); err == nil {
			f.Close()
			os.Stderr.WriteString("opened /etc/shadow after the drop\n")
			os.Exit(1)
		}
		os.Stdout.WriteString("ok\n")
		os.Exit(0)
	case "root":
		if err := To(0, 0); err == nil {
			os.Stderr.WriteString("To(0, 0) succeeded\n")
			os.Exit(1)
		}
		if syscall.Geteuid() != 0 {
			os.Exit(1)
		}
		os.Stdout.WriteString("ok\n")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func child(t *testing.T, mode string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PRIVDROP_CHILD="+mode)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child %s: %v\n%s", mode, err, out)
	}
	return string(out)
}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP: this test needs root (it changes users)")
	}
}

func TestDropToNobody(t *testing.T) {
	needRoot(t)
	if out := child(t, "nobody"); !strings.Contains(out, "ok") {
		t.Fatalf("child said %q", out)
	}
}

func TestRefuseRoot(t *testing.T) {
	needRoot(t)
	if out := child(t, "root"); !strings.Contains(out, "ok") {
		t.Fatalf("child said %q", out)
	}
}

func TestRefuseRootArgs(t *testing.T) {
	for _, ids := range [][2]int{{0, 0}, {0, 1000}, {1000, 0}, {-1, 1000}} {
		if err := To(ids[0], ids[1]); err == nil {
			t.Errorf("To(%d, %d) succeeded", ids[0], ids[1])
		}
	}
}

func TestLookup(t *testing.T) {
	uid, gid, err := Lookup("root")
	if err != nil || uid != 0 || gid != 0 {
		t.Fatalf("Lookup(root) = %d, %d, %v", uid, gid, err)
	}
	if _, _, err := Lookup("no-such-user-tern"); err == nil {
		t.Fatal("Lookup of a missing user succeeded")
	}
}
