package queue

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tern-mail/tern/internal/address"
	"github.com/tern-mail/tern/mta"
	"github.com/tern-mail/tern/mta/transport"
)

// Format is the first line of every envelope this version writes; a
// later, incompatible format gets a new number so that an old tern-queue
// moves such entries aside instead of misreading them. Version 2 added
// what the SMTP conversation said (SMTPUTF8, BODY, 8-bit content, the DSN
// parameters, REQUIRETLS) and the recipient's trailing fields; version 1
// entries, and submissions, are still read (see tern-queue(5)).
const Format = "tern-queue 2"

// formatV1 is the format before the SMTP conversation's parameters.
const formatV1 = "tern-queue 1"

// The text line of a version 2 envelope, its second: whether the message
// has an octet over 127. Both are as long, so one can be written over the
// other in place (see Inject).
const (
	textLine7 = "7bit"
	textLine8 = "8bit"
	// textOffset is where the text line starts.
	textOffset = len(Format) + 1
)

// formatVersion returns the version a first line names, or 0 for a line
// that names none this version reads.
func formatVersion(line string) int {
	switch line {
	case Format:
		return 2
	case formatV1:
		return 1
	}
	return 0
}

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
	Delivered State = "delivered" // done
	Failed    State = "failed"    // failed for good, bounce not yet sent
	Bounced   State = "bounced"   // failed for good and reported (or nobody to report to)
	Expanded  State = "expanded"  // an alias, replaced by its targets (the lines after it)
)

// stateRemoteV1 is the state a version 1 tern-queue, which had no remote
// delivery, left remote recipients in.
const stateRemoteV1 = "remote"

// Done reports whether nothing more will happen to a recipient in this
// state.
func (s State) Done() bool { return s == Delivered || s == Bounced || s == Expanded }

func (s State) valid() bool {
	switch s {
	case Queued, Deferred, Delivered, Failed, Bounced, Expanded:
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
	Addr     string    // as checked by address.Check; "|command" or "/path/" for alias targets
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
	Sender     string // address.NullSender for "<>"
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

// Marshal writes the envelope in the line format of tern-queue(5). It
// refuses conversation parameters that ParseEnvelope would refuse (the
// SMTP server and tern-enqueue check them as they take them), so that no
// entry is written that cannot be read back; what a remote server said
// (RemoteMTA, DiagType) is made to fit instead.
func (e *Envelope) Marshal(w io.Writer) error {
	if err := e.checkConversation(); err != nil {
		return fmt.Errorf("envelope %s: %w", e.ID, err)
	}
	bw := bufio.NewWriter(w)
	// The text line comes right after the format line, at a place fixed
	// so that Inject can write it over once the message is copied: only
	// then does it know.
	text := textLine7
	if e.EightBit {
		text = textLine8
	}
	fmt.Fprintf(bw, "%s\n%s\nid %s\narrived %s\nsender %s\n", Format, text, e.ID, e.Arrived.UTC().Format(time.RFC3339Nano), e.Sender)
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
	if e.SMTPUTF8 {
		bw.WriteString("smtputf8\n")
	}
	if e.Body != "" {
		fmt.Fprintf(bw, "body %s\n", e.Body)
	}
	if e.EnvID != "" {
		fmt.Fprintf(bw, "envid %s\n", mta.EncodeXtext(e.EnvID))
	}
	if e.Ret != "" {
		fmt.Fprintf(bw, "ret %s\n", e.Ret)
	}
	if e.RequireTLS {
		bw.WriteString("requiretls\n")
	}
	for _, r := range e.Recipients {
		next := "-"
		if !r.Next.IsZero() {
			next = r.Next.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(bw, "rcpt\t%s\t%d\t%s\t%s\t%s\t%s\t%s", r.State, r.Attempts, next, dash(r.Status), r.Addr, dash(r.Parent), oneLine(r.Answer))
		// Version 2's trailing fields, each only when it has a value,
		// so that a recipient without any is a version 1 line.
		for _, f := range [...]struct{ key, val string }{
			{"notify", r.Notify.String()},
			{"orcpt", r.ORcpt},
			{"remote-mta", fitRemoteMTA(r.RemoteMTA)},
			{"diag", fitDiagType(r.DiagType)},
		} {
			if f.val != "" {
				fmt.Fprintf(bw, "\t%s=%s", f.key, mta.EncodeXtext(f.val))
			}
		}
		bw.WriteByte('\n')
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
	lr := &io.LimitedReader{R: r, N: MaxEnvelope}
	br := envReaders.Get().(*bufio.Reader)
	br.Reset(lr)
	defer func() {
		br.Reset(nil) // let go of the file
		envReaders.Put(br)
	}()
	e := &Envelope{UID: -1}
	version := 0
	sawText := false // version 2's 7bit or 8bit line
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
			if version = formatVersion(line); version == 0 {
				return nil, used, fmt.Errorf("line 1: %q is not %q nor %q", line, Format, formatV1)
			}
			continue
		}
		if err := e.parseLine(line, version, &sawText); err != nil {
			return nil, used, fmt.Errorf("line %d: %w", lineNo, err)
		}
		if strings.HasPrefix(line, "sender ") {
			sawSender = true
		}
	}
	if lineNo == 0 {
		return nil, used, errors.New("empty envelope")
	}
	switch {
	case version == 1:
		// Nobody looked at a version 1 entry's text: it counts as 8-bit,
		// so that delivery takes the care 8-bit text needs.
		e.EightBit = true
	case !sawText:
		return nil, used, errors.New("no 7bit or 8bit line")
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

// envReaders keeps ParseEnvelope's buffers: tern-queue parses every
// envelope two or three times an attempt, and a fresh buffer each time
// was a measured share of its CPU under load (tests/bench/remote.sh).
// ReadString collects a line longer than the buffer, so its size bounds
// nothing; MaxEnvelope does.
var envReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}

func (e *Envelope) parseLine(line string, version int, sawText *bool) error {
	key, val, _ := strings.Cut(line, " ")
	if strings.HasPrefix(line, "rcpt\t") {
		if len(e.Recipients) >= MaxRecipients {
			return fmt.Errorf("more than %d recipients", MaxRecipients)
		}
		r, err := parseRecipient(line, version)
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
		if val != address.NullSender {
			if val, err = address.Check(val); err != nil {
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
		if version < 2 {
			return fmt.Errorf("unknown line %q", key)
		}
		return e.parseConversationLine(line, key, val, sawText)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	return nil
}

// checkConversation checks the values Marshal writes of what the SMTP
// conversation said.
func (e *Envelope) checkConversation() error {
	if e.Body != "" && e.Body != "7BIT" && e.Body != "8BITMIME" {
		return fmt.Errorf("body %q is not 7BIT or 8BITMIME", e.Body)
	}
	if e.Ret != "" && e.Ret != "FULL" && e.Ret != "HDRS" {
		return fmt.Errorf("ret %q is not FULL or HDRS", e.Ret)
	}
	if e.EnvID != "" {
		if err := mta.CheckEnvID(e.EnvID); err != nil {
			return err
		}
	}
	for _, r := range e.Recipients {
		if r.ORcpt != "" {
			if _, err := mta.CheckORcpt(r.ORcpt); err != nil {
				return fmt.Errorf("recipient %s: %w", r.Addr, err)
			}
		}
		if _, err := transport.ParseNotify(r.Notify.String()); r.Notify != 0 && err != nil {
			return fmt.Errorf("recipient %s: %w", r.Addr, err)
		}
	}
	return nil
}

// fitRemoteMTA makes a remote host's name fit its field: printable,
// bounded.
func fitRemoteMTA(s string) string {
	if len(s) > maxRemoteMTA {
		s = s[:maxRemoteMTA]
	}
	if printable(s) {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if c < ' ' || c > '~' {
			b[i] = '?'
		}
	}
	return string(b)
}

// fitDiagType keeps a diagnostic type that is a token, and drops any
// other: "" reads as X-Unix.
func fitDiagType(s string) string {
	if len(s) > maxDiagType || !isToken(s) {
		return ""
	}
	return s
}

// parseConversationLine reads version 2's lines for what the SMTP
// conversation said about the message. A flag given twice, or a value
// that breaks the bounds the SMTP server enforces, is an error: only a
// damaged or forged file has one.
func (e *Envelope) parseConversationLine(line, key, val string, sawText *bool) error {
	flag := func(f *bool) error {
		if line != key {
			return fmt.Errorf("%s takes no value", key)
		}
		if *f {
			return fmt.Errorf("%s twice", key)
		}
		*f = true
		return nil
	}
	once := func(f *string, v string) error {
		if *f != "" {
			return fmt.Errorf("%s twice", key)
		}
		*f = v
		return nil
	}
	switch key {
	case "smtputf8":
		return flag(&e.SMTPUTF8)
	case textLine7, textLine8:
		if err := flag(sawText); err != nil {
			return fmt.Errorf("a second 7bit or 8bit line")
		}
		e.EightBit = key == textLine8
		return nil
	case "requiretls":
		return flag(&e.RequireTLS)
	case "body":
		// RFC 6152 §2 and RFC 1652: the two BODY values tern takes.
		if val != "7BIT" && val != "8BITMIME" {
			return fmt.Errorf("body %q is not 7BIT or 8BITMIME", val)
		}
		return once(&e.Body, val)
	case "ret":
		// RFC 3461 §4.3.
		if val != "FULL" && val != "HDRS" {
			return fmt.Errorf("ret %q is not FULL or HDRS", val)
		}
		return once(&e.Ret, val)
	case "envid":
		v, err := mta.DecodeXtext(val)
		if err == nil {
			err = mta.CheckEnvID(v)
		}
		if err != nil {
			return fmt.Errorf("envid: %w", err)
		}
		return once(&e.EnvID, v)
	}
	return fmt.Errorf("unknown line %q", key)
}

// Bounds on the recipient's trailing fields that tern-queue writes
// itself, from what a remote server said.
const (
	maxRemoteMTA = 512 // a host name (255), an address and a port, with room
	maxDiagType  = 32  // an atom such as "smtp" or "X-Unix" (RFC 3464 §2.3.6)
)

func parseRecipient(line string, version int) (*Recipient, error) {
	f := strings.Split(line, "\t")
	if len(f) != 8 && (version < 2 || len(f) < 8) {
		return nil, fmt.Errorf("rcpt line has %d fields, not 8", len(f))
	}
	if len(f) > 8+4 {
		return nil, fmt.Errorf("rcpt line has %d fields, more than 12", len(f))
	}
	r := &Recipient{State: State(f[1]), Status: undash(f[4]), Addr: f[5], Parent: undash(f[6]), Answer: undash(f[7])}
	if version < 2 && f[1] == stateRemoteV1 {
		// A version 1 tern-queue could not send to other hosts and left
		// remote recipients waiting: this one sends them now.
		r.State = Deferred
		f[3] = "-"
	}
	if !r.State.valid() {
		return nil, fmt.Errorf("unknown recipient state %q", f[1])
	}
	for _, kv := range f[8:] {
		if err := r.parseField(kv); err != nil {
			return nil, err
		}
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
		a, err := address.Check(r.Addr)
		if err != nil {
			return nil, fmt.Errorf("recipient: %w", err)
		}
		r.Addr = a
	}
	return r, nil
}

// parseField reads one of version 2's trailing key=value fields of a
// rcpt line; its value is xtext (RFC 3461 §4), so that no tab or line end
// can hide in it. Each key at most once; an unknown key is an error, as an
// unknown line is.
func (r *Recipient) parseField(kv string) error {
	key, xval, ok := strings.Cut(kv, "=")
	if !ok || xval == "" {
		return fmt.Errorf("rcpt field %q is not key=value", kv)
	}
	val, err := mta.DecodeXtext(xval)
	if err != nil {
		return fmt.Errorf("rcpt field %s: %w", key, err)
	}
	twice := func(set bool) error {
		if set {
			return fmt.Errorf("rcpt field %s twice", key)
		}
		return nil
	}
	switch key {
	case "notify":
		if err := twice(r.Notify != 0); err != nil {
			return err
		}
		if r.Notify, err = transport.ParseNotify(val); err != nil {
			return err
		}
	case "orcpt":
		if err := twice(r.ORcpt != ""); err != nil {
			return err
		}
		if r.ORcpt, err = mta.CheckORcpt(val); err != nil {
			return err
		}
	case "remote-mta":
		if err := twice(r.RemoteMTA != ""); err != nil {
			return err
		}
		if len(val) > maxRemoteMTA || !printable(val) {
			return fmt.Errorf("rcpt field remote-mta %q is not up to %d printable characters", val, maxRemoteMTA)
		}
		r.RemoteMTA = val
	case "diag":
		if err := twice(r.DiagType != ""); err != nil {
			return err
		}
		if len(val) > maxDiagType || !isToken(val) {
			return fmt.Errorf("rcpt field diag %q is not an atom of up to %d characters", val, maxDiagType)
		}
		r.DiagType = val
	default:
		return fmt.Errorf("unknown rcpt field %q", key)
	}
	return nil
}

// printable: US-ASCII from space to tilde, what a host name, an address
// literal and a port are written in.
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// isToken: letters, digits and "-", as diagnostic types are named.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
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
