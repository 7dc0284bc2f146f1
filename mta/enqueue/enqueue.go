// Package enqueue is tern-enqueue: one message from standard input, with
// its envelope, written durably into the queue. It is also what runs as
// sendmail and mailq (see Sendmail).
//
// Its whole interface is qmail-queue's: message on stdin, envelope in the
// arguments, the verdict in the exit status (0 queued, 75 try again, 64 or
// 65 refused). tern-smtpd relies on exactly that: see tern-enqueue(8).
package enqueue

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tern-mail/tern/internal/address"
	"github.com/tern-mail/tern/internal/sysexit"
	"github.com/tern-mail/tern/mta"
	"github.com/tern-mail/tern/mta/queue"
	"github.com/tern-mail/tern/mta/transport"
)

// MaxHeader bounds the header read into memory; a longer one is refused
// (65): no mail program writes one that large on purpose.
const MaxHeader = 1 << 20

// Options are tern-enqueue's command line.
type Options struct {
	ID             string      // the queue ID, made beforehand by the caller with the Queue's NewID; "" for a new one
	Queue          string      // queue directory
	Conf           string      // control directory, for the hostname file
	Host           string      // this host's name when the caller knows it (tern-smtpd's control directory); "" reads Conf
	Sender         string      // -f; "" or "<>" is the null sender when SenderSet
	SenderSet      bool        //
	Recipients     []Recipient // arguments
	ReadRecipients bool        // -t: take recipients from To, Cc and Bcc, and remove Bcc
	DotEnds        bool        // a line "." ends the message (sendmail without -i)
	FullName       string      // -F: the name in an added From
	Verbose        bool        // -v: print qid=ID on stdout
	MaxSize        int64       // refuse a larger message (65); 0 for no limit

	// What the SMTP conversation (or the command line) said about the
	// message, which the queue keeps for delivery (tern-queue(5)).
	Conversation
	// Notify is NOTIFY for every recipient that gives none of its own
	// (sendmail's -N); 0 for none.
	Notify transport.Notify
	// Scanned says that the caller has looked at every octet of the
	// message already (tern-smtpd's checker), and EightBit whether one is
	// over 127: Submit then does not look again.
	Scanned  bool
	EightBit bool
}

// Conversation is what an SMTP client says about a message beside its
// addresses, as MAIL FROM's parameters carry it.
type Conversation struct {
	SMTPUTF8   bool   // RFC 6531; set also when an envelope address is not ASCII
	Body       string // RFC 6152 BODY: "", "7BIT" or "8BITMIME"
	EnvID      string // RFC 3461 ENVID, decoded from xtext
	Ret        string // RFC 3461 RET: "", "FULL" or "HDRS"
	RequireTLS bool   // RFC 8689 REQUIRETLS
}

// check refuses values the queue would not keep (64: they come from the
// command line, or from an SMTP server that checked them already).
func (c Conversation) check() error {
	switch c.Body {
	case "", "7BIT", "8BITMIME":
	default:
		return sysexit.New(sysexit.Usage, "body %q: give 7bit or 8bitmime (RFC 6152)", c.Body)
	}
	switch c.Ret {
	case "", "FULL", "HDRS":
	default:
		return sysexit.New(sysexit.Usage, "ret %q: give full or hdrs (RFC 3461 section 4.3)", c.Ret)
	}
	if c.EnvID != "" {
		if err := mta.CheckEnvID(c.EnvID); err != nil {
			return sysexit.New(sysexit.Usage, "envid: %v", err)
		}
	}
	return nil
}

// EnvelopeVars are the environment variables of tern-enqueue's flags that
// say something about one message. A program that runs tern-enqueue for a
// message it received (tern-smtpd's --enqueue) leaves them out of the
// child's environment, so that the envelope comes from the arguments
// alone.
func EnvelopeVars() []string {
	return []string{
		"TERN_FROM", "TERN_READ_RECIPIENTS", "TERN_IGNORE_DOTS", "TERN_DOT", "TERN_FULL_NAME",
		"TERN_NOTIFY", "TERN_RET", "TERN_ENVID", "TERN_SMTPUTF8", "TERN_BODY", "TERN_REQUIRETLS",
	}
}

// Env is what the program takes from its surroundings.
type Env struct {
	Stdin    io.Reader
	Stdout   io.Writer
	Now      func() time.Time
	User     string                 // the invoking user's login name, for the default sender
	Hostname func() (string, error) // the system's host name
}

// Run reads one message from env.Stdin and queues it in o.Queue.
func Run(o Options, env Env) (string, error) {
	q, err := queue.Open(o.Queue)
	if err != nil {
		return "", err
	}
	return Submit(q, o, env)
}

// readers are Submit's input buffers: tern-smtpd --listen queues every
// message of every connection in one process, and a 64 KiB buffer made for
// each was most of what it allocated.
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 64<<10) }}

// Submit is Run into a queue already open: tern-smtpd queues each message
// this way, in its own process, with the same checks and the same verdicts
// as the tern-enqueue program (see tern-smtpd(8)). o.Queue is not used.
func Submit(q *queue.Queue, o Options, env Env) (string, error) {
	host := o.Host
	if host == "" {
		var err error
		if host, err = hostname(o.Conf, env.Hostname); err != nil {
			return "", err
		}
	}
	sender, err := o.sender(env.User, host)
	if err != nil {
		return "", err
	}
	if err := o.Conversation.check(); err != nil {
		return "", err
	}
	var rcpts []*queue.Recipient
	seen := map[string]bool{}
	// A recipient named twice is queued once, with what its first
	// mention said.
	add := func(r Recipient, where string) error {
		c, err := address.Check(r.Addr)
		if err != nil {
			return sysexit.New(sysexit.DataErr, "%s: %v", where, err)
		}
		if k := strings.ToLower(c); !seen[k] {
			seen[k] = true
			qr := &queue.Recipient{Addr: c, State: queue.Queued, Notify: r.Notify, ORcpt: r.ORcpt}
			if qr.Notify == 0 {
				qr.Notify = o.Notify
			}
			rcpts = append(rcpts, qr)
		}
		return nil
	}
	for _, r := range o.Recipients {
		if err := r.check(); err != nil {
			return "", err
		}
		if err := add(r, "recipient argument"); err != nil {
			err.(*sysexit.Error).Code = sysexit.Usage
			return "", err
		}
	}
	in := readers.Get().(*bufio.Reader)
	in.Reset(env.Stdin)
	defer func() {
		in.Reset(nil)
		readers.Put(in)
	}()
	h, err := readHeader(in, o.DotEnds)
	if err != nil {
		return "", err
	}
	if o.ReadRecipients {
		for _, name := range []string{"To", "Cc", "Bcc"} {
			for _, v := range h.values(name) {
				addrs, err := parseAddressList(v)
				if err != nil {
					return "", sysexit.New(sysexit.DataErr, "%s header %q: %v", name, v, err)
				}
				for _, a := range addrs {
					if err := add(Recipient{Addr: a}, name+" header"); err != nil {
						return "", err
					}
				}
			}
		}
		// RFC 5322 §3.6.3: Bcc recipients are not shown to the others.
		h.remove("Bcc")
	}
	if len(rcpts) == 0 {
		if o.ReadRecipients {
			return "", sysexit.New(sysexit.DataErr, "no recipients in the To, Cc or Bcc header, nor as arguments")
		}
		return "", sysexit.New(sysexit.Usage, "no recipients: name them as arguments (after --) or use -t")
	}
	now := env.Now()
	// The Queue's IDs differ even for one nanosecond, which matters when
	// one tern-smtpd queues for many connections at once.
	id := o.ID
	if id == "" {
		id = q.NewID(now)
	}
	c := o.Conversation
	e := &queue.Envelope{ID: id, Sender: sender, UID: -1, Recipients: rcpts,
		SMTPUTF8: c.SMTPUTF8, Body: c.Body, EnvID: c.EnvID, Ret: c.Ret, RequireTLS: c.RequireTLS}
	// RFC 6531 §3.4: an address that is not ASCII can go on only with
	// SMTPUTF8; a local program that names one means it.
	if !e.SMTPUTF8 && !mta.IsASCII(sender) {
		e.SMTPUTF8 = true
	}
	for _, r := range rcpts {
		if !e.SMTPUTF8 && !mta.IsASCII(r.Addr) {
			e.SMTPUTF8 = true
		}
	}
	// RFC 5322 §3.6: Date and From are required; Message-ID should be
	// there (§3.6.4). A submission client that left them out counts on the
	// MSA to add them (RFC 6409 §8).
	if !h.has("Date") {
		h.add("Date", now.Format(time.RFC1123Z))
	}
	if !h.has("Message-ID") {
		h.add("Message-ID", "<"+e.ID+"@"+host+">")
	}
	if !h.has("From") {
		from := sender
		if from == address.NullSender {
			from = "MAILER-DAEMON@" + host
		}
		if o.FullName != "" {
			from = mime2047(o.FullName) + " <" + from + ">"
		}
		h.add("From", from)
	}
	body := &bodyReader{r: in, dotEnds: o.DotEnds, buf: h.rest, done: h.ended}
	var msg io.Reader = io.MultiReader(bytes.NewReader(h.bytes()), body)
	if o.MaxSize > 0 {
		msg = &limitReader{r: msg, left: o.MaxSize, max: o.MaxSize}
	}
	if err := q.Reserve(o.MaxSize); err != nil {
		return "", err
	}
	if o.Scanned {
		// What was scanned is the text as given; the fields added here
		// were not part of it.
		e.EightBit = o.EightBit || h.added8Bit
		id, err = q.InjectScanned(e, msg, now)
	} else {
		id, err = q.Inject(e, msg, now)
	}
	if err != nil {
		return "", err
	}
	if o.Verbose {
		fmt.Fprintf(env.Stdout, "qid=%s\n", id)
	}
	return id, nil
}

func (o Options) sender(user, host string) (string, error) {
	if o.SenderSet {
		s := strings.TrimSpace(o.Sender)
		if s == "" || s == address.NullSender {
			return address.NullSender, nil
		}
		c, err := address.Check(s)
		if err != nil {
			return "", sysexit.New(sysexit.Usage, "sender (-f): %v", err)
		}
		if !strings.Contains(c, "@") {
			c += "@" + host
		}
		return c, nil
	}
	if user == "" {
		return "", sysexit.New(sysexit.Usage, "no sender: give one with -f (who you are could not be found)")
	}
	c, err := address.Check(user + "@" + host)
	if err != nil {
		return "", sysexit.New(sysexit.Usage, "default sender from the login name %q: %v; give one with -f", user, err)
	}
	return c, nil
}

// hostname reads the control directory's hostname file (its first line
// that is not a comment), else asks the system. Only that file is read:
// the rest of the control directory (the users file) need not be readable
// by the user who sends mail.
func hostname(dir string, system func() (string, error)) (string, error) {
	if dir != "" {
		b, err := os.ReadFile(filepath.Join(dir, "hostname"))
		if err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				line = strings.TrimSpace(line)
				if line != "" && line[0] != '#' {
					h, err := address.CheckDomain(line)
					if err != nil {
						return "", sysexit.New(sysexit.Config, "%s: %v", filepath.Join(dir, "hostname"), err)
					}
					return h, nil
				}
			}
		}
	}
	h, err := system()
	if err != nil {
		return "", sysexit.Wrap(sysexit.Config, fmt.Errorf("hostname: %w", err))
	}
	d, err := address.CheckDomain(h)
	if err != nil {
		return "", sysexit.New(sysexit.Config, "system hostname %q: %v; write one in the control directory's hostname file", h, err)
	}
	return d, nil
}

// parseAddressList reads the addresses of a To, Cc or Bcc field
// (RFC 5322 §3.4), groups included; an empty group, such as
// "undisclosed-recipients:;", gives none.
func parseAddressList(v string) ([]string, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, nil
	}
	list, err := (&mail.AddressParser{}).ParseList(v)
	if err != nil {
		if strings.HasSuffix(v, ":;") || strings.HasSuffix(v, ": ;") {
			return nil, nil
		}
		return nil, err
	}
	out := make([]string, len(list))
	for i, a := range list {
		out[i] = a.Address
	}
	return out, nil
}

// mime2047 quotes a display name for a From field: a phrase of atoms as is,
// printable ASCII as a quoted string, anything else as an RFC 2047
// encoded-word.
func mime2047(name string) string {
	const addr = "x@x"
	return strings.TrimSuffix((&mail.Address{Name: name, Address: addr}).String(), " <"+addr+">")
}

type limitReader struct {
	r         io.Reader
	left, max int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return 0, sysexit.New(sysexit.DataErr, "message larger than the limit of %d bytes (#5.3.4)", l.max)
	}
	return n, err
}

var errHeaderTooBig = sysexit.New(sysexit.DataErr, "header larger than %d bytes", MaxHeader)

// header is the message's header as lines (LF ends, folded lines kept
// with their field), plus the fields added here.
type header struct {
	fields    [][]byte // each a whole field, continuation lines included, ending in "\n"
	ended     bool     // the message ended inside the header (EOF or a "." line)
	rest      []byte   // the body's first line, read while looking for the header's end
	added8Bit bool     // a field added here has an octet over 127 (an address that is not ASCII)
}

// readHeader reads the header: lines up to the empty line. CRLF becomes
// LF (the queue stores LF, as Maildir does). A leading mbox "From " line
// is dropped. A line that is neither a field nor a continuation starts the
// body, and an empty line is put before it (RFC 5322 §2.1).
func readHeader(r *bufio.Reader, dotEnds bool) (*header, error) {
	h := &header{}
	total := 0
	first := true
	for {
		line, err := readLine(r)
		if err != nil && err != io.EOF {
			return nil, sysexit.Wrap(sysexit.IOErr, fmt.Errorf("read message: %w", err))
		}
		if len(line) == 0 && err == io.EOF {
			h.ended = true
			return h, nil
		}
		total += len(line)
		if total > MaxHeader {
			return nil, errHeaderTooBig
		}
		if first && bytes.HasPrefix(line, []byte("From ")) {
			first = false
			continue
		}
		first = false
		if dotEnds && string(line) == ".\n" {
			h.ended = true
			return h, nil
		}
		if !bytes.HasSuffix(line, []byte("\n")) {
			line = append(line, '\n')
		}
		switch {
		case string(line) == "\n":
			return h, nil
		case (line[0] == ' ' || line[0] == '\t') && len(h.fields) > 0:
			h.fields[len(h.fields)-1] = append(h.fields[len(h.fields)-1], line...)
		case isField(line):
			h.fields = append(h.fields, line)
		default:
			// The body starts without an empty line: give it one, and put the
			// line back for the body.
			h.fields = append(h.fields, nil)
			h.rest = line
			return h, nil
		}
		if err == io.EOF {
			h.ended = true
			return h, nil
		}
	}
}

// readLine reads one line, CRLF turned to LF, whatever its length.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		frag, err := r.ReadSlice('\n')
		line = append(line, frag...)
		if err == bufio.ErrBufferFull {
			if len(line) > MaxHeader {
				return nil, errHeaderTooBig
			}
			continue
		}
		if bytes.HasSuffix(line, []byte("\r\n")) {
			line = append(line[:len(line)-2], '\n')
		}
		return line, err
	}
}

// isField: field-name ":" with field-name printable ASCII but colon
// (RFC 5322 §2.2).
func isField(line []byte) bool {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return false
	}
	for _, c := range line[:i] {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

func (h *header) name(f []byte) string {
	n, _, _ := bytes.Cut(f, []byte(":"))
	return string(n)
}

func (h *header) has(name string) bool {
	for _, f := range h.fields {
		if f != nil && strings.EqualFold(h.name(f), name) {
			return true
		}
	}
	return false
}

// values returns the unfolded values of every field called name.
func (h *header) values(name string) []string {
	var out []string
	for _, f := range h.fields {
		if f != nil && strings.EqualFold(h.name(f), name) {
			_, v, _ := bytes.Cut(f, []byte(":"))
			s := strings.NewReplacer("\r", "", "\n", "").Replace(string(v))
			out = append(out, strings.TrimSpace(s))
		}
	}
	return out
}

func (h *header) remove(name string) {
	out := h.fields[:0]
	for _, f := range h.fields {
		if f == nil || !strings.EqualFold(h.name(f), name) {
			out = append(out, f)
		}
	}
	h.fields = out
}

// add puts a field at the end of the header.
func (h *header) add(name, value string) {
	f := []byte(name + ": " + value + "\n")
	if !mta.IsASCII(value) {
		h.added8Bit = true
	}
	// Keep a nil marker (the missing empty line) last.
	if n := len(h.fields); n > 0 && h.fields[n-1] == nil {
		h.fields = append(h.fields[:n-1], f, nil)
		return
	}
	h.fields = append(h.fields, f)
}

// bytes is the header as stored, with the empty line after it.
func (h *header) bytes() []byte {
	var b bytes.Buffer
	for _, f := range h.fields {
		b.Write(f)
	}
	b.WriteByte('\n')
	return b.Bytes()
}

// bodyReader copies the body, CRLF turned to LF, stopping at a "." line
// when dotEnds.
type bodyReader struct {
	r       *bufio.Reader
	dotEnds bool
	buf     []byte
	done    bool
}

func (b *bodyReader) Read(p []byte) (int, error) {
	for len(b.buf) == 0 {
		if b.done {
			return 0, io.EOF
		}
		line, err := readLine(b.r)
		if err != nil && err != io.EOF {
			return 0, sysexit.Wrap(sysexit.IOErr, fmt.Errorf("read message: %w", err))
		}
		if err == io.EOF {
			b.done = true
		}
		if b.dotEnds && string(line) == ".\n" {
			b.done = true
			line = nil
		}
		b.buf = line
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	return n, nil
}
