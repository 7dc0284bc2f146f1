package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"

	"github.com/tern-mail/tern/internal/sysexit"
	"github.com/tern-mail/tern/mta/queue"
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

// List writes the queue: every entry, oldest first, with each recipient's
// state and last answer; submissions not yet taken in are listed as
// "incoming". With asJSON, one JSON array for scripts.
func List(dir string, w io.Writer, asJSON bool, now time.Time) error {
	q, err := queue.Open(dir)
	if err != nil {
		return err
	}
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
		l := Listed{ID: id, Arrived: e.Arrived.UTC(), AgeSeconds: int64(now.Sub(e.Arrived).Seconds()), Size: e.Size, Sender: e.Sender, Kind: string(e.Kind), Hold: e.Hold}
		for _, rc := range e.Recipients {
			l.Recipients = append(l.Recipients, ListedRecipient{Address: rc.Addr, State: string(rc.State), Attempts: rc.Attempts, Next: rc.Next.UTC(), Status: rc.Status, Parent: rc.Parent, Answer: rc.Answer})
		}
		out = append(out, l)
	}
	for _, id := range incoming {
		out = append(out, Listed{ID: id, Arrived: queue.IDTime(id).UTC(), AgeSeconds: int64(now.Sub(queue.IDTime(id)).Seconds()), Kind: "incoming", Recipients: []ListedRecipient{}})
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
			if rc.State == string(queue.Deferred) && !rc.Next.IsZero() {
				extra = " next " + rc.Next.Format(time.RFC3339)
			}
			ans := ""
			if rc.Answer != "" {
				ans = ": " + rc.Status + " " + rc.Answer
			}
			fmt.Fprintf(w, "    %-9s %s (%d tries%s)%s\n", rc.State, rc.Address, rc.Attempts, extra, ans)
		}
	}
	return nil
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

// Admin applies --delete, --hold or --release to one entry, under the
// entry's lock so that a running tern-queue never undoes it.
func Admin(dir, op, id string) error {
	if !queue.ValidID(id) {
		return sysexit.New(sysexit.Usage, "%q is not a queue ID (21 hex digits, as --list shows them)", id)
	}
	q, err := queue.Open(dir)
	if err != nil {
		return err
	}
	unlock, err := q.Lock(id)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return sysexit.New(sysexit.NoInput, "no entry %s in the queue %s", id, dir)
		}
		return err
	}
	defer unlock()
	if op == "delete" {
		return q.Remove(id)
	}
	e, err := q.Load(id)
	if err != nil {
		return err
	}
	switch op {
	case "hold":
		e.Hold = true
	case "release":
		e.Hold = false
		for _, rc := range e.Recipients {
			if rc.State == queue.Deferred {
				rc.Next = time.Time{}
			}
		}
	default:
		return sysexit.New(sysexit.Software, "unknown operation %q", op)
	}
	if err := q.Save(e); err != nil {
		return err
	}
	if op == "release" {
		return q.RequestFlush()
	}
	return nil
}

// Flush asks the running tern-queue to try every deferred recipient now.
func Flush(dir string) error {
	q, err := queue.Open(dir)
	if err != nil {
		return err
	}
	return q.RequestFlush()
}

// ParseNow reads the hidden --now flag: an RFC 3339 time, or "+DURATION"
// from the real time, for tests of delay warnings and bounces. It returns
// the offset to add to the real clock.
func ParseNow(s string, real time.Time) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	if strings.HasPrefix(s, "+") || strings.HasPrefix(s, "-") {
		off, err := time.ParseDuration(s)
		if err != nil {
			return 0, sysexit.New(sysexit.Usage, "--now %q: %v", s, err)
		}
		return off, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return 0, sysexit.New(sysexit.Usage, "--now %q: not an RFC 3339 time nor +DURATION", s)
	}
	return t.Sub(real), nil
}
