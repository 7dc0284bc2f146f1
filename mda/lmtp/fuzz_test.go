package lmtp

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tern-mail/tern/internal/conf"
)

// FuzzConversation plays arbitrary client input to the server and holds
// it to what a client may rely on: the server ends when the input does,
// every line it writes is a reply, and every "250 ... delivered" after
// DATA is one more message in a Maildir for each account the recipient
// leads to that could take it (and no file is left in tmp/), whatever
// came before.
func FuzzConversation(f *testing.F) {
	for _, seed := range []string{
		"LHLO x\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n",
		"LHLO x\r\nMAIL FROM:<> SIZE=10\r\nRCPT TO:<team@example.org>\r\nRCPT TO:<bob+f@example.org>\r\nRCPT TO:<nobody@example.org>\r\nDATA\r\nDelivered-To: carol@example.org\r\n\r\n..dot\r\n.\r\n",
		"LHLO x\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.org>\r\nBDAT 5 LAST\r\nab\r\nc",
		"LHLO x\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.org>\r\nBDAT 3\r\nabcBDAT 0 LAST\r\nRSET\r\n",
		"HELO x\r\nEHLO x\r\nLHLO\r\nMAIL FROM:<\r\nRCPT TO:<@@>\r\nDATA\r\n",
		"LHLO x\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nno end",
	} {
		f.Add([]byte(seed))
	}
	dir := f.TempDir()
	etc := filepath.Join(dir, "etc")
	os.MkdirAll(etc, 0o755)
	users := ""
	for _, u := range []string{"bob", "carol"} {
		users += u + "@example.org:{PLAIN}x::::" + filepath.Join(dir, u) + "::\n"
		os.MkdirAll(filepath.Join(dir, u), 0o755)
	}
	os.WriteFile(filepath.Join(etc, "users"), []byte(users), 0o644)
	os.WriteFile(filepath.Join(etc, "domains"), []byte("example.org\n"), 0o644)
	os.WriteFile(filepath.Join(etc, "aliases"), []byte("team@example.org: bob, carol\n"), 0o644)
	cf, err := conf.Loader{Hostname: func() (string, error) { return "mx.example.org", nil }}.Load(etc)
	if err != nil {
		f.Fatal(err)
	}
	srv := &Server{Conf: func() *conf.Conf { return cf }, Euid: 1000, MaxSize: 4096, MaxRecipients: 20}
	stored := func() (n int) {
		for _, u := range []string{"bob", "carol"} {
			filepath.Walk(filepath.Join(dir, u), func(p string, info os.FileInfo, err error) error {
				if err == nil && info.Mode().IsRegular() {
					switch filepath.Base(filepath.Dir(p)) {
					case "new":
						n++
					case "tmp":
						n += 1 << 20 // a leftover: never allowed
					}
				}
				return nil
			})
		}
		return n
	}
	reply := regexp.MustCompile(`^[2-5][0-9][0-9][ -]`)
	delivered := regexp.MustCompile(`^250 2\.0\.0 <([^>]*)> delivered `)
	f.Fuzz(func(t *testing.T, in []byte) {
		before := stored()
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		client := fileConn(t, fds[0])
		server := fileConn(t, fds[1])
		done := make(chan error, 1)
		go func() {
			done <- srv.Serve(context.Background(), server, "fuzz", nil)
			server.Close()
		}()
		go func() {
			client.Write(in)
			client.(*net.UnixConn).CloseWrite()
		}()
		client.SetDeadline(time.Now().Add(20 * time.Second))
		var out bytes.Buffer
		if _, err := out.ReadFrom(client); err != nil {
			t.Fatalf("reading the server: %v (it must end when the client does)", err)
		}
		client.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return after the client left")
		}
		n, most := 0, 0
		sc := bufio.NewScanner(&out)
		for sc.Scan() {
			line := sc.Text()
			if !reply.MatchString(line) {
				t.Fatalf("not a reply: %q", line)
			}
			if m := delivered.FindStringSubmatch(line); m != nil {
				// The alias team is two accounts: 250 once one has its
				// copy and the other none for good (a loop).
				if strings.EqualFold(m[1], "team@example.org") {
					most++
				}
				n++
				most++
			}
		}
		if got := stored() - before; got < n || got > most {
			t.Fatalf("recipients answered 250 need %d to %d files, %d stored (tmp/ leftovers count 1<<20)\n%s", n, most, got, out.Bytes())
		}
	})
}

func fileConn(t *testing.T, fd int) net.Conn {
	f := os.NewFile(uintptr(fd), "socketpair")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
