package tests

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeRunDemo runs the demo behind `make run` once, on free ports: the
// sample mail delivered by tern-deliver and two messages sent by SMTP (to
// tern-smtpd in MX mode, and submitted with AUTH), through tern-enqueue,
// tern-queue and tern-deliver, must all reach a POP3 client.
func TestMakeRunDemo(t *testing.T) {
	Need(t, "python3")
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	r := NewRoot(t)
	r.OpenUp()
	cmd := exec.Command("sh", filepath.Join(root, "contrib", "run-demo.sh"))
	cmd.Env = r.Env("TERN_BIN="+binDir, "TERN_DEMO_DIR="+r.Path("run"), "TERN_DEMO_ONCE=1",
		fmt.Sprintf("TERN_DEMO_POP3=127.0.0.1:%d", freePort(t)),
		fmt.Sprintf("TERN_DEMO_IMAP=127.0.0.1:%d", freePort(t)),
		fmt.Sprintf("TERN_DEMO_SMTP=127.0.0.1:%d", freePort(t)),
		fmt.Sprintf("TERN_DEMO_SUBMIT=127.0.0.1:%d", freePort(t)))
	res := RunCmd(t, cmd, "")
	if res.Code != 0 || !strings.Contains(res.Stdout, "a POP3 client sees 5 messages") || !strings.Contains(res.Stdout, "Lists.Go:") {
		t.Fatalf("demo:\n%v", res)
	}
}
