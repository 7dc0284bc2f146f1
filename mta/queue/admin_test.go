package queue

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tern-mail/tern/internal/sysexit"
)

func newTestQueue(t *testing.T) *Queue {
	t.Helper()
	q, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func injectTest(t *testing.T, q *Queue, rcpts ...string) string {
	t.Helper()
	e := &Envelope{Sender: "joe@example.net", UID: -1}
	for _, r := range rcpts {
		e.Recipients = append(e.Recipients, &Recipient{Addr: r, State: Queued})
	}
	id, err := q.Inject(e, strings.NewReader("Subject: x\n\nbody\n"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestListIncoming: a submission not yet taken in is listed with what its
// own envelope says (issue #19: mailq showed size 0 and nobody).
func TestListIncoming(t *testing.T) {
	q := newTestQueue(t)
	id := injectTest(t, q, "bob@example.org", "carol@example.net")
	var b bytes.Buffer
	if err := q.List(&b, true, time.Now()); err != nil {
		t.Fatal(err)
	}
	var l []Listed
	if err := json.Unmarshal(b.Bytes(), &l); err != nil {
		t.Fatal(err)
	}
	if len(l) != 1 || l[0].ID != id || l[0].Kind != KindIncoming || l[0].Sender != "joe@example.net" || l[0].Size != int64(len("Subject: x\n\nbody\n")) || len(l[0].Recipients) != 2 || l[0].Recipients[1].Address != "carol@example.net" {
		t.Fatalf("listing of a submission: %s", b.String())
	}
	b.Reset()
	if err := q.List(&b, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "<joe@example.net> incoming") || !strings.Contains(b.String(), "queued    carol@example.net") {
		t.Errorf("text listing:\n%s", b.String())
	}
}

// TestListRemote: the host tried last, its answer and the next try are
// shown for a deferred remote recipient.
func TestListRemote(t *testing.T) {
	q := newTestQueue(t)
	id := injectTest(t, q, "someone@elsewhere.example")
	e, err := q.Ingest(id)
	if err != nil {
		t.Fatal(err)
	}
	next := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	rc := e.Recipients[0]
	rc.State, rc.Attempts, rc.Next, rc.Status, rc.Answer, rc.RemoteMTA = Deferred, 1, next, "4.2.0", "451 4.2.0 try later", "mx.elsewhere.example[192.0.2.7]:25"
	if err := q.Save(e); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := q.List(&b, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	if want := "deferred  someone@elsewhere.example (1 tries next 2030-01-02T03:04:05Z)"; !strings.Contains(b.String(), want) {
		t.Errorf("listing lacks %q:\n%s", want, b.String())
	}
	if !strings.Contains(b.String(), "451 4.2.0 try later") {
		t.Errorf("listing lacks the answer:\n%s", b.String())
	}
}

func TestAdmin(t *testing.T) {
	q := newTestQueue(t)
	id := injectTest(t, q, "bob@example.org")
	if _, err := q.Ingest(id); err != nil {
		t.Fatal(err)
	}
	if err := q.Hold(id); err != nil {
		t.Fatal(err)
	}
	if e, _ := q.Load(id); !e.Hold {
		t.Errorf("not held after Hold")
	}
	if err := q.Release(id); err != nil {
		t.Fatal(err)
	}
	if e, _ := q.Load(id); e.Hold {
		t.Errorf("held after Release")
	}
	if !q.TakeFlush() {
		t.Errorf("Release did not ask for a flush")
	}
	if err := q.Delete(id); err != nil {
		t.Fatal(err)
	}
	if ids, _ := q.IDs(); len(ids) != 0 {
		t.Errorf("left after Delete: %v", ids)
	}
	for _, c := range []struct {
		id   string
		code int
	}{{"0123", sysexit.Usage}, {id, sysexit.NoInput}} {
		for name, op := range map[string]func(string) error{"delete": q.Delete, "hold": q.Hold, "release": q.Release} {
			err := op(c.id)
			var se *sysexit.Error
			if !errors.As(err, &se) || se.Code != c.code {
				t.Errorf("%s %q: %v, want exit %d", name, c.id, err, c.code)
			}
		}
	}
}
