package queue

// Queue administration: what tern-queue --list, --delete, --hold,
// --release and --flush (and sendmail's mailq and -q) do. It lives beside
// the format, not in the runner, because it runs without the runner: each
// change is made under the entry's lock, so a running tern-queue never
// undoes it, and the runner holds that lock only while it reads or writes
// an envelope, never while a delivery runs.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/tern-mail/tern/internal/sysexit"
)

// ListedRecipient is one recipient in --list --json.
type ListedRecipient struct {
	Address  string    `json:"address"`
	State    string    `json:"state"`
	Attempts int       `json:"attempts"`
	Next     time.Time `json:"next_try,omitzero"`
	Status   string    `json:"status,omitempty"`
	Parent   string    `json:"alias,omitempty"`
	Answer   string    `json:"answer,omitempty"`
	// RemoteMTA is the host the last remote attempt reached (or tried
	// last): "mx.example.org[192.0.2.7]:25".
	RemoteMTA string `json:"relay,omitempty"`
}

// Listed is one entry in --list --json.
type Listed struct {
	ID         string            `json:"id"`
	Arrived    time.Time         `json:"arrived"`
	AgeSeconds int64             `json:"age_seconds"`
	Size       int64             `json:"size"`
	Sender     string            `json:"sender"`
	Kind       string            `json:"kind,omitempty"`
	Hold       bool              `json:"hold,omitempty"`
	Recipients []ListedRecipient `json:"recipients"`
}

// KindIncoming marks, in a listing, a submission not yet taken in.
const KindIncoming = "incoming"

// List writes the queue: every entry, oldest first, with each recipient's
// state, last answer, the host tried last and the next try; then the
// submissions not yet taken in (kind "incoming"), read from their own
// envelopes as Postfix's mailq shows its maildrop. With asJSON, one JSON
// array for scripts.
func (q *Queue) List(w io.Writer, asJSON bool, now time.Time) error {
	ids, err := q.IDs()
	if errors.Is(err, fs.ErrPermission) {
		// The queue holds everyone's mail: only its owner reads it, as
		// with qmail's qmail-qread (Postfix's showq daemon is the other
		// way, and a daemon more).
		return sysexit.New(sysexit.NoPerm, "%v: the queue is readable by its owner only; run this as root (sudo mailq)", err)
	}
	if err != nil {
		return sysexit.Wrap(sysexit.NoPerm, err)
	}
	incoming, _ := q.Incoming()
	var out []Listed
	for _, id := range ids {
		e, err := q.Load(id)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // finished while we looked
			}
			fmt.Fprintf(w, "%s damaged: %v\n", id, err)
			continue
		}
		out = append(out, listed(e, "", now))
	}
	for _, id := range incoming {
		e, size, err := q.peekSubmission(id)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // taken in while we looked
			}
			// Still being written, or not ours to read: show that it
			// is there.
			out = append(out, Listed{ID: id, Arrived: IDTime(id).UTC(), AgeSeconds: int64(now.Sub(IDTime(id)).Seconds()), Kind: KindIncoming, Recipients: []ListedRecipient{}})
			continue
		}
		e.Size = size
		out = append(out, listed(e, KindIncoming, now))
	}
	if asJSON {
		if out == nil {
			out = []Listed{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	if len(out) == 0 {
		_, err := fmt.Fprintln(w, "queue is empty")
		return err
	}
	for _, l := range out {
		writeListed(w, l)
	}
	return nil
}

func listed(e *Envelope, kind string, now time.Time) Listed {
	if kind == "" {
		kind = string(e.Kind)
	}
	l := Listed{ID: e.ID, Arrived: e.Arrived.UTC(), AgeSeconds: int64(now.Sub(e.Arrived).Seconds()), Size: e.Size, Sender: e.Sender, Kind: kind, Hold: e.Hold, Recipients: []ListedRecipient{}}
	for _, rc := range e.Recipients {
		lr := ListedRecipient{Address: rc.Addr, State: string(rc.State), Attempts: rc.Attempts, Status: rc.Status, Parent: rc.Parent, Answer: rc.Answer, RemoteMTA: rc.RemoteMTA}
		if !rc.Next.IsZero() {
			lr.Next = rc.Next.UTC()
		}
		l.Recipients = append(l.Recipients, lr)
	}
	return l
}

func writeListed(w io.Writer, l Listed) {
	flags := ""
	if l.Hold {
		flags += " held"
	}
	if l.Kind != "" {
		flags += " " + l.Kind
	}
	sender := l.Sender
	if sender != "<>" && sender != "" {
		sender = "<" + sender + ">"
	}
	fmt.Fprintf(w, "%s %8s %8d %s%s\n", l.ID, age(time.Duration(l.AgeSeconds)*time.Second), l.Size, sender, flags)
	for _, rc := range l.Recipients {
		extra := ""
		if rc.State == string(Deferred) && !rc.Next.IsZero() {
			extra = " next " + rc.Next.Format(time.RFC3339)
		}
		ans := ""
		if rc.Answer != "" {
			ans = ": " + rc.Status + " " + rc.Answer
		}
		if rc.RemoteMTA != "" {
			ans = " relay=" + rc.RemoteMTA + ans
		}
		fmt.Fprintf(w, "    %-9s %s (%d tries%s)%s\n", rc.State, rc.Address, rc.Attempts, extra, ans)
	}
}

// peekSubmission reads the envelope of incoming/id without taking it in,
// and the size of the message behind it. The file is opened as Ingest
// opens it (no symbolic link followed, no blocking on a FIFO).
func (q *Queue) peekSubmission(id string) (*Envelope, int64, error) {
	f, err := os.OpenFile(q.path(Incoming, id), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("%s: not a plain file", f.Name())
	}
	e, used, err := ParseEnvelope(f)
	if err != nil {
		return nil, 0, err
	}
	return e, st.Size() - used, nil
}

func age(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// lockEntry checks id and takes the entry's lock, with the errors an
// administrator's command answers.
func (q *Queue) lockEntry(id string) (func(), error) {
	if !ValidID(id) {
		return nil, sysexit.New(sysexit.Usage, "%q is not a queue ID (21 hex digits, as --list shows them)", id)
	}
	unlock, err := q.Lock(id)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, sysexit.New(sysexit.NoInput, "no entry %s in the queue %s", id, q.Dir)
		}
		return nil, err
	}
	return unlock, nil
}

// Delete removes entry id without a bounce (--delete). A delivery running
// at the time finishes, but its results are not recorded: the runner
// finds the entry gone when it takes the lock again.
func (q *Queue) Delete(id string) error {
	unlock, err := q.lockEntry(id)
	if err != nil {
		return err
	}
	defer unlock()
	return q.remove(id, true)
}

// Hold keeps entry id from delivery until Release (--hold). A delivery
// running at the time finishes and its results are recorded; nothing more
// is tried.
func (q *Queue) Hold(id string) error {
	return q.edit(id, func(e *Envelope) { e.Hold = true })
}

// Release undoes Hold and makes every deferred recipient due now
// (--release), and asks the running tern-queue to look.
func (q *Queue) Release(id string) error {
	err := q.edit(id, func(e *Envelope) {
		e.Hold = false
		for _, rc := range e.Recipients {
			if rc.State == Deferred {
				rc.Next = time.Time{}
			}
		}
	})
	if err != nil {
		return err
	}
	return q.RequestFlush()
}

func (q *Queue) edit(id string, change func(*Envelope)) error {
	unlock, err := q.lockEntry(id)
	if err != nil {
		return err
	}
	defer unlock()
	e, err := q.Load(id)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return sysexit.New(sysexit.NoInput, "no entry %s in the queue %s", id, q.Dir)
		}
		return err
	}
	change(e)
	return q.Save(e)
}

// List opens the queue at dir and lists it (tern-queue --list, mailq).
func List(dir string, w io.Writer, asJSON bool, now time.Time) error {
	q, err := Open(dir)
	if err != nil {
		return err
	}
	return q.List(w, asJSON, now)
}

// Flush asks the running tern-queue to try every deferred recipient now
// (tern-queue --flush, sendmail -q).
func Flush(dir string) error {
	q, err := Open(dir)
	if err != nil {
		return err
	}
	return q.RequestFlush()
}
