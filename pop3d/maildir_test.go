package pop3d

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tern-mail/tern/internal/account"
	"github.com/tern-mail/tern/maildir"
)

func TestMaildirBox(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	store, err := maildir.Create(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	inbox, _ := store.Folder("INBOX")
	for _, body := range []string{"Subject: a\r\n\r\none\r\n", "Subject: b\n\ntwo\n"} {
		if _, err := inbox.Deliver(strings.NewReader(body), maildir.DeliverOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// A stale file in tmp/ from a killed delivery goes at login.
	stale := filepath.Join(dir, "tmp", "1.M1P1Q1.old")
	os.WriteFile(stale, []byte("partial"), 0o600)
	old := time.Now().Add(-37 * time.Hour)
	os.Chtimes(stale, old, old)

	store2, err := account.OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	box, err := OpenMaildir(store2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale tmp file kept: %v", err)
	}
	if _, err := OpenMaildir(store2); !errors.Is(err, ErrInUse) {
		t.Errorf("second open: %v, want ErrInUse", err)
	}
	msgs := box.Messages()
	if len(msgs) != 2 || msgs[0].Size != int64(len("Subject: a\r\n\r\none\r\n")) {
		t.Fatalf("messages %+v", msgs)
	}
	// New mail stays in new/ until QUIT: a login renames nothing.
	if n, _ := os.ReadDir(filepath.Join(dir, "new")); len(n) != 2 {
		t.Errorf("new/ holds %d at login, want 2", len(n))
	}
	r, err := box.Open(1)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r)
	r.Close()
	if string(b) != "Subject: b\n\ntwo\n" {
		t.Errorf("content %q", b)
	}
	if err := box.Commit([]int{0}, []int{1}); err != nil {
		t.Fatal(err)
	}
	box.Close()
	if n, _ := os.ReadDir(filepath.Join(dir, "new")); len(n) != 0 {
		t.Errorf("new/ not emptied at QUIT: %d left", len(n))
	}
	cur, _ := os.ReadDir(filepath.Join(dir, "cur"))
	if len(cur) != 1 || !strings.HasSuffix(cur[0].Name(), ":2,S") {
		t.Errorf("after commit cur/ holds %v", cur)
	}
	box2, err := OpenMaildir(store2)
	if err != nil {
		t.Fatalf("lock not released: %v", err)
	}
	if got := box2.Messages(); len(got) != 1 || got[0].UID != msgs[1].UID {
		t.Errorf("UIDL changed: %+v vs %+v", got, msgs[1])
	}
	box2.Close()
}
