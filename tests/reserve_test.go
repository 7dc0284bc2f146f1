package tests

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestQueueReserve: on a queue file system with less free space than 1.5
// times the message size limit (Postfix's queue_minfree rule),
// tern-enqueue exits 75 saying why and tern-smtpd answers MAIL with 452
// 4.3.1; once space is freed, both take mail again. The queue is a 4 MB
// tmpfs, the limit 1 MB.
func TestQueueReserve(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs for the queue needs root")
	}
	r, _ := smtpdRoot(t)
	if err := syscall.Mount("tmpfs", r.Queue, "tmpfs", 0, "size=4m,mode=0755"); err != nil {
		t.Skipf("cannot mount a tmpfs (a container without CAP_SYS_ADMIN?): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(r.Queue, syscall.MNT_DETACH) })
	ballast := filepath.Join(r.Queue, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 3<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	const limit = "1000000"
	msg := "Subject: reserve\n\nhello\n"
	res := r.Run(msg, nil, "tern-enqueue", "--max-size", limit, "-f", "a@example.org", "--", "bob@example.org")
	if res.Code != 75 || !strings.Contains(res.Stderr, "1.5 x the message size limit") {
		t.Fatalf("tern-enqueue below the reserve: %v", res)
	}
	_, addr := startSmtpd(t, r, nil, "--queue", r.Queue, "--greet-delay", "0", "--max-size", limit)
	c := smtpDial(t, addr)
	c.expectReply("220 ")
	c.expect("EHLO client.example", "250")
	c.expect("MAIL FROM:<a@remote.example>", "452 4.3.1 ")

	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	c.expect("MAIL FROM:<a@remote.example>", "250")
	c.expect("RCPT TO:<bob@example.org>", "250")
	c.expect("DATA", "354")
	c.send("Subject: reserve\r\n\r\nhello\r\n.\r\n")
	c.expectReply("250 2.0.0 ok: queued")
	if res := r.Run(msg, nil, "tern-enqueue", "--max-size", limit, "-f", "a@example.org", "--", "bob@example.org"); res.Code != 0 {
		t.Fatalf("tern-enqueue with space: %v", res)
	}
}
