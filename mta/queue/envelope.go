package queue

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/tern-mail/tern/mta"
	"github.com/tern-mail/tern/mta/transport"
)

// Format is the first line of every envelope; a later, incompatible format
// gets a new number so that an old tern-queue moves such entries aside
// instead of misreading them.
const Format = "tern-queue 1"

// Bounds on an envelope read from the queue, which a local user may have
// written (see tern-queue(5)).
const (
	MaxEnvelope   = 8 << 20
	MaxRecipients = 1 << 16
	maxAnswer     = 1000
)

// State is where one recipient stands.
type State string

// The states of a recipient, as tern-queue(5) lists them.
const (
	Queued    State = "queued"    // not tried yet
	Deferred  State = "deferred"  // tried, failed for now, tried again at Next
	Remote    State = "remote"    // a remote address, waiting for remote delivery
	Delivered State = "delivered" // done
	Failed    State = "failed"    // failed for good, bounce not yet sent
	Bounced   State = "bounced"   // failed for good and reported (or nobody to report to)
	Expanded  State = "expanded"  // an alias, replaced by its targets (the lines after it)
)

// Done reports whether nothing more will happen to a recipient in this
// state.
func (s State) Done() bool { return s == Delivered || s == Bounced || s == Expanded }

func (s State) valid() bool {
	switch s {
	case Queued, Deferred, Remote, Delivered, Failed, Bounced, Expanded:
		return true
	}
	return false
}

// Kind says whether a message is a bounce, which matters for what happens
// when it fails in turn.
type Kind string

// Kinds of message.
const (
	Normal       Kind = ""
	Bounce       Kind = "bounce"        // a DSN to the sender of a failed message
	DoubleBounce Kind = "double-bounce" // a failed bounce, sent to postmaster once
)

// Recipient is one envelope recipient and its delivery state.
type Recipient struct {
	Addr     string    // as checked by mta.CheckAddress; "|command" or "/path/" for alias targets
	State    State     //
	Attempts int       // deliveries tried so far
	Next     time.Time // when to try again; zero for now
	Status   string    // last enhanced status code (RFC 3463), "" before the first try
	Parent   string    // the address this one was expanded from, or ""
	Answer   string    // the last answer, one line
	// RFC 3461 parameters from RCPT, kept for the next hop and for the
	// notices tern sends.
	Notify transport.Notify // 0 when not given
	ORcpt  string           // "addr-type;address", decoded; "" if none
	// Where the last remote attempt went and what came back, for --list
	// and the DSN's Remote-MTA and Diagnostic-Code: smtp.
	RemoteMTA string // "mx.example.org[192.0.2.7]:25", "" for local
	DiagType  string // "smtp" or "X-Unix"; "" means X-Unix
}

// Envelope is everything about a queued message except its text.
type Envelope struct {
	ID         string
	Arrived    time.Time
	Sender     string // mta.NullSender for "<>"
	UID        int    // the owner of the submitted file: who injected it
	Offset     int64  // where the message starts in mess/ID
	Size       int64  // the message's size in bytes
	Kind       Kind
	Hold       bool
	Warned     time.Time // when the delay warning went out; zero if not yet
	Recipients []*Recipient
	// What the SMTP conversation said about the message, which delivery
	// must honour at the next hop (see transport.Message).
	SMTPUTF8   bool   // RFC 6531
	Body       string // RFC 6152 BODY=: "", "7BIT" or "8BITMIME"
	EightBit   bool   // the text has an octet over 127
	EnvID      string // RFC 3461 ENVID, decoded
	Ret        string // RFC 3461 RET: "FULL", "HDRS" or ""
	RequireTLS bool   // RFC 8689
}

// Marshal writes the envelope in the line format of tern-queue(5).
func (e *Envelope) Marshal(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "%s\nid %s\narrived %s\nsender %s\n", Format, e.ID, e.Arrived.UTC().Format(time.RFC3339Nano), e.Sender)
	if e.UID >= 0 {
		fmt.Fprintf(bw, "uid %d\n", e.UID)
	}
	if e.Offset > 0 || e.Size > 0 {
		fmt.Fprintf(bw, "offset %d\nsize %d\n", e.Offset, e.Size)
	}
	if e.Kind != Normal {
		fmt.Fprintf(bw, "kind %s\n", e.Kind)
	}
	if e.Hold {
		fmt.Fprintf(bw, "hold\n")
	}
	if !e.Warned.IsZero() {
		fmt.Fprintf(bw, "warned %s\n", e.Warned.UTC().Format(time.RFC3339))
	}
	for _, r := range e.Recipients {
		next := "-"
		if !r.Next.IsZero() {
			next = r.Next.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(bw, "rcpt\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", r.State, r.Attempts, next, dash(r.Status), r.Addr, dash(r.Parent), oneLine(r.Answer))
	}
	return bw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func undash(s string) string {
	if s == "-" {
		return ""
	}
	return s
}

// oneLine makes an answer fit one field: controls and tabs become blanks,
// and it is cut to a length a listing can show.
func oneLine(s string) string {
	s = strings.TrimSpace(strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s))
	if len(s) > maxAnswer {
		s = strings.TrimSpace(strings.ToValidUTF8(s[:maxAnswer], ""))
	}
	if s == "" {
		return "-"
	}
	return s
}

// ParseEnvelope reads an envelope up to the end of r or to an empty line,
// whichever comes first, and returns how many bytes it used (the empty line
// included). A submitted file (incoming/ID) is an envelope, an empty line
// and the message; a queued envelope (env/ID) has no empty line.
func ParseEnvelope(r io.Reader) (*Envelope, int64, error) {
	br := bufio.NewReaderSize(io.LimitReader(r, MaxEnvelope), 64<<10)
	e := &Envelope{UID: -1}
	var used int64
	lineNo := 0
	sawSender := false
	for {
		line, err := br.ReadString('\n')
		used += int64(len(line))
		if err == io.EOF && line == "" {
			break
		}
		if err != nil && err != io.EOF {
			return nil, used, fmt.Errorf("read envelope: %w", err)
		}
		if err == io.EOF {
			return nil, used, fmt.Errorf("line %d: no newline at the end", lineNo+1)
		}
		lineNo++
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			break
		}
		if lineNo == 1 {
			if line != Format {
				return nil, used, fmt.Errorf("line 1: %q is not %q", line, Format)
			}
			continue
		}
		if err := e.parseLine(line); err != nil {
			return nil, used, fmt.Errorf("line %d: %w", lineNo, err)
		}
		if strings.HasPrefix(line, "sender ") {
			sawSender = true
		}
	}
	if lineNo == 0 {
		return nil, used, errors.New("empty envelope")
	}
	if e.ID == "" || !ValidID(e.ID) {
		return nil, used, errors.New("no valid id line")
	}
	if !sawSender {
		return nil, used, errors.New("no sender line")
	}
	if e.Arrived.IsZero() {
		return nil, used, errors.New("no arrived line")
	}
	if len(e.Recipients) == 0 {
		return nil, used, errors.New("no recipients")
	}
	return e, used, nil
}

func (e *Envelope) parseLine(line string) error {
	key, val, _ := strings.Cut(line, " ")
	if strings.HasPrefix(line, "rcpt\t") {
		if len(e.Recipients) >= MaxRecipients {
			return fmt.Errorf("more than %d recipients", MaxRecipients)
		}
		r, err := parseRecipient(line)
		if err != nil {
			return err
		}
		e.Recipients = append(e.Recipients, r)
		return nil
	}
	var err error
	switch key {
	case "id":
		e.ID = val
	case "arrived":
		e.Arrived, err = time.Parse(time.RFC3339Nano, val)
	case "sender":
		if val != mta.NullSender {
			if val, err = mta.CheckAddress(val); err != nil {
				return fmt.Errorf("sender: %w", err)
			}
		}
		e.Sender = val
	case "uid":
		e.UID, err = strconv.Atoi(val)
	case "offset":
		e.Offset, err = strconv.ParseInt(val, 10, 64)
	case "size":
		e.Size, err = strconv.ParseInt(val, 10, 64)
	case "kind":
		e.Kind = Kind(val)
		if e.Kind != Bounce && e.Kind != DoubleBounce {
			return fmt.Errorf("unknown kind %q", val)
		}
	case "hold":
		e.Hold = true
	case "seal":
		// A prepared entry's (see pool.go): checked by ReclaimPool when
		// its writer did not finish; nothing to keep.
		if !validSeal(val) {
			return fmt.Errorf("seal: %q is not a length and a CRC", val)
		}
	case "warned":
		e.Warned, err = time.Parse(time.RFC3339, val)
	default:
		return fmt.Errorf("unknown line %q", key)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	return nil
}

func parseRecipient(line string) (*Recipient, error) {
	f := strings.Split(line, "\t")
	if len(f) != 8 {
		return nil, fmt.Errorf("rcpt line has %d fields, not 8", len(f))
	}
	r := &Recipient{State: State(f[1]), Status: undash(f[4]), Addr: f[5], Parent: undash(f[6]), Answer: undash(f[7])}
	if !r.State.valid() {
		return nil, fmt.Errorf("unknown recipient state %q", f[1])
	}
	var err error
	if r.Attempts, err = strconv.Atoi(f[2]); err != nil || r.Attempts < 0 {
		return nil, fmt.Errorf("attempts %q is not a count", f[2])
	}
	if f[3] != "-" {
		if r.Next, err = time.Parse(time.RFC3339, f[3]); err != nil {
			return nil, fmt.Errorf("next try: %w", err)
		}
	}
	switch {
	case strings.HasPrefix(r.Addr, "|") && r.Parent != "", strings.HasPrefix(r.Addr, "/") && r.Parent != "":
		// alias targets, written by tern-queue itself
	default:
		a, err := mta.CheckAddress(r.Addr)
		if err != nil {
			return nil, fmt.Errorf("recipient: %w", err)
		}
		r.Addr = a
	}
	return r, nil
}

// Pending returns the recipients still to be tried, remote ones included.
func (e *Envelope) Pending() []*Recipient {
	var out []*Recipient
	for _, r := range e.Recipients {
		if !r.State.Done() && r.State != Failed {
			out = append(out, r)
		}
	}
	return out
}

// Done reports whether every recipient is done: the entry can go.
func (e *Envelope) Done() bool {
	for _, r := range e.Recipients {
		if !r.State.Done() {
			return false
		}
	}
	return true
}

// NextTry is the earliest time a recipient is due, and false when none is
// waiting for a try (all done, failed, or remote).
func (e *Envelope) NextTry() (time.Time, bool) {
	var t time.Time
	ok := false
	for _, r := range e.Recipients {
		if r.State != Queued && r.State != Deferred {
			continue
		}
		if !ok || r.Next.Before(t) {
			t, ok = r.Next, true
		}
	}
	return t, ok
}
