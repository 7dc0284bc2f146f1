// Package pop3d is the POP3 protocol of tern-pop3d: RFC 1939 with the
// extensions of RFC 2449 (CAPA, response codes), RFC 2595 (STLS) and
// RFC 5034 (AUTH), over a Mailbox that the caller opens after login.
//
// The package knows nothing of accounts, files or sockets: it talks to a
// net.Conn-like stream and to the Auth and Mailbox interfaces, so that it
// is tested in-process and the program wires it to internal/auth and
// maildir/.
package pop3d

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"strconv"
	"strings"

	"github.com/emersion/go-sasl"
)

// Limits on what a client may send.
const (
	// MaxLine bounds a command line. RFC 2449 §4 allows 255 octets for a
	// command; AUTH responses (RFC 5034 §4) may be longer, so lines are
	// read up to this size and a longer one is refused.
	MaxLine = 8 << 10
	// MaxErrors is how many bad commands (unknown, out of state, badly
	// formed, or failed logins) end a session; a valid command naming a
	// message that is not there does not count.
	MaxErrors = 10
)

// Errors the Auth implementation returns; anything else is reported as a
// temporary failure ([SYS/TEMP]).
var (
	ErrAuthFailed = errors.New("authentication failed")
	ErrInUse      = errors.New("mailbox in use")
	// ErrTemporary marks a SASL exchange that failed for a reason other
	// than the credentials (the users file unreadable, a checkpassword
	// program exiting 111); other SASL errors count as failed logins.
	ErrTemporary = errors.New("temporary failure")
)

// Auth authenticates a client and opens its mailbox. Opening includes
// whatever must happen once the user is known: dropping privileges,
// taking the mailbox's session lock (returning ErrInUse when another
// session holds it), moving new messages to cur/.
type Auth interface {
	// Mechanisms lists the SASL mechanisms offered; tls tells whether the
	// connection is encrypted or otherwise trusted for plain passwords.
	Mechanisms(tls bool) []string
	// Login checks a user name and password and opens the mailbox.
	Login(ctx context.Context, user, pass string) (Mailbox, error)
	// SASL starts a server-side exchange for mech; after it succeeds,
	// open returns the authenticated user's name and mailbox.
	SASL(ctx context.Context, mech string) (s sasl.Server, open func() (string, Mailbox, error), err error)
}

// Message is one message as the session sees it.
type Message struct {
	UID  string // the unique-id listing (RFC 1939 §7): the Maildir unique name
	Size int64  // the size with CRLF line endings, as RETR sends it
}

// Mailbox is a locked mailbox for the length of one session.
type Mailbox interface {
	// Messages is the maildrop as of login; it does not change during
	// the session (RFC 1939 §5).
	Messages() []Message
	// Open returns the content of message i (an index into Messages);
	// fs.ErrNotExist when it vanished.
	Open(i int) (io.ReadCloser, error)
	// Commit deletes the messages marked with DELE and marks the ones
	// retrieved as seen, both given as indexes into Messages; called only
	// in the UPDATE state (RFC 1939 §6).
	Commit(deleted, retrieved []int) error
	// Close releases the session lock.
	Close() error
}

// Config is what a session needs besides its connection.
type Config struct {
	Auth Auth
	// Secure reports whether plain passwords may be sent now: the
	// connection is TLS, the peer is loopback, or --insecure-auth.
	Secure func() bool
	// StartTLS upgrades the connection in place and returns the new
	// reader/writer; nil when no certificate is configured.
	StartTLS func() (io.Reader, io.Writer, error)
	// TLSActive reports whether the connection is encrypted already.
	TLSActive func() bool
	Greeting  string // the text after "+OK " in the greeting
	Log       *slog.Logger
}

type state int

const (
	authorization state = iota
	transaction
)

// Session is one POP3 conversation.
type Session struct {
	cfg     Config
	r       *bufio.Reader
	w       *bufio.Writer
	state   state
	user    string // from USER, waiting for PASS
	box     Mailbox
	msgs    []Message
	deleted []bool
	seen    []bool
	errors  int
	fatal   error // set when the session cannot go on (a reply cut short)
	log     *slog.Logger
	// msgr reads every message sent, one 32 KiB buffer for the session
	// rather than one per RETR: 100,000 RETRs made 3 GB of garbage.
	msgr *bufio.Reader
}

// Serve runs a session until QUIT, an error, or ctx is done (checked
// between commands, so the command in progress finishes).
func Serve(ctx context.Context, rw io.ReadWriter, cfg Config) error {
	s := &Session{cfg: cfg, log: cfg.Log}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.setConn(rw, rw)
	defer func() {
		if s.box != nil {
			s.box.Close()
		}
	}()
	greeting := cfg.Greeting
	if greeting == "" {
		greeting = "POP3 server ready"
	}
	s.reply(true, "%s", greeting)
	for {
		if err := s.w.Flush(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			s.reply(false, "[SYS/TEMP] server shutting down, try again later")
			return s.w.Flush()
		}
		line, err := s.readLine()
		if err == errLineTooLong {
			s.reply(false, "line too long")
			if s.bad() {
				return s.w.Flush()
			}
			continue
		}
		if err != nil {
			if err == io.EOF {
				s.log.Info("disconnected without QUIT", "user", s.userName())
				return nil
			}
			return err
		}
		done, err := s.command(ctx, line)
		if err == nil {
			err = s.fatal
		}
		if err != nil {
			s.w.Flush()
			return err
		}
		if done {
			return s.w.Flush()
		}
	}
}

func (s *Session) setConn(r io.Reader, w io.Writer) {
	s.r = bufio.NewReaderSize(r, 4096)
	s.w = bufio.NewWriterSize(w, 32<<10)
}

var errLineTooLong = errors.New("line too long")

// readLine returns one line without its CRLF (or bare LF). Output is
// flushed first unless more pipelined commands are already waiting
// (RFC 2449 §6.6: the server may then send the replies together).
func (s *Session) readLine() (string, error) {
	if s.r.Buffered() == 0 {
		if err := s.w.Flush(); err != nil {
			return "", err
		}
	}
	var line []byte
	for {
		frag, err := s.r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			if len(line)+len(frag) > MaxLine {
				// Discard the rest of the line.
				for err == bufio.ErrBufferFull {
					_, err = s.r.ReadSlice('\n')
				}
				if err != nil {
					return "", err
				}
				return "", errLineTooLong
			}
			line = append(line, frag...)
			continue
		}
		if err != nil {
			return "", err
		}
		line = append(line, frag...)
		break
	}
	if len(line) > MaxLine {
		return "", errLineTooLong
	}
	return strings.TrimRight(string(line), "\r\n"), nil
}

func (s *Session) reply(ok bool, format string, args ...any) {
	if ok {
		s.w.WriteString("+OK")
	} else {
		s.w.WriteString("-ERR")
	}
	if format != "" {
		s.w.WriteByte(' ')
		fmt.Fprintf(s.w, format, args...)
	}
	s.w.WriteString("\r\n")
}

// bad counts a failed command and reports whether the session should end.
func (s *Session) bad() bool {
	s.errors++
	if s.errors >= MaxErrors {
		s.reply(false, "too many bad commands, closing")
		s.log.Warn("too many bad commands", "user", s.userName())
		return true
	}
	return false
}

func (s *Session) userName() string { return s.user }

// command runs one command line; done is true after QUIT or when the
// session must end.
func (s *Session) command(ctx context.Context, line string) (done bool, err error) {
	verb, arg, _ := strings.Cut(line, " ")
	verb = strings.ToUpper(verb)
	switch verb {
	case "QUIT":
		return true, s.quit()
	case "CAPA":
		s.capa()
		return false, nil
	case "NOOP":
		if s.state == transaction {
			s.reply(true, "")
			return false, nil
		}
	}
	if s.state == authorization {
		switch verb {
		case "USER":
			return s.userCmd(arg), nil
		case "PASS":
			return s.pass(ctx, arg), nil
		case "AUTH":
			return s.auth(ctx, arg)
		case "STLS":
			return s.stls()
		case "APOP":
			s.reply(false, "APOP is not supported: use USER/PASS or AUTH over TLS")
			return s.bad(), nil
		}
	} else {
		if handled, done := s.transactionCmd(verb, arg); handled {
			return done, nil
		}
	}
	if known(verb) {
		s.reply(false, "%s is not valid in this state", verb)
	} else {
		s.reply(false, "unknown command")
	}
	return s.bad(), nil
}

func known(verb string) bool {
	switch verb {
	case "USER", "PASS", "AUTH", "STLS", "APOP", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "QUIT", "CAPA":
		return true
	}
	return false
}

// capa answers RFC 2449 §5; what is offered depends on the state.
func (s *Session) capa() {
	s.reply(true, "Capability list follows")
	lines := []string{"TOP", "UIDL", "PIPELINING", "RESP-CODES", "AUTH-RESP-CODE"}
	if s.state == authorization {
		if s.cfg.Secure == nil || s.cfg.Secure() {
			lines = append(lines, "USER")
		}
		if mechs := s.cfg.Auth.Mechanisms(s.secure()); len(mechs) > 0 {
			lines = append(lines, "SASL "+strings.Join(mechs, " "))
		}
		if s.cfg.StartTLS != nil && !s.tlsActive() {
			lines = append(lines, "STLS")
		}
	}
	lines = append(lines, "IMPLEMENTATION tern")
	for _, l := range lines {
		s.w.WriteString(l + "\r\n")
	}
	s.w.WriteString(".\r\n")
}

func (s *Session) secure() bool    { return s.cfg.Secure == nil || s.cfg.Secure() }
func (s *Session) tlsActive() bool { return s.cfg.TLSActive != nil && s.cfg.TLSActive() }

func (s *Session) userCmd(arg string) bool {
	if !s.secure() {
		s.reply(false, "[AUTH] plain-text passwords are refused on an unencrypted connection: use STLS first")
		return s.bad()
	}
	if arg == "" {
		s.reply(false, "USER needs a name")
		return s.bad()
	}
	s.user = arg
	s.reply(true, "")
	return false
}

func (s *Session) pass(ctx context.Context, arg string) bool {
	if !s.secure() {
		s.reply(false, "[AUTH] plain-text passwords are refused on an unencrypted connection: use STLS first")
		return s.bad()
	}
	if s.user == "" {
		s.reply(false, "USER first")
		return s.bad()
	}
	user := s.user
	s.user = ""
	box, err := s.cfg.Auth.Login(ctx, user, arg)
	return s.loggedIn(user, "USER", box, err)
}

// loggedIn finishes a login attempt. RFC 2449 §8.1 ([IN-USE]) and
// RFC 3206 ([AUTH], [SYS/TEMP]) say which codes go with which failure.
func (s *Session) loggedIn(user, how string, box Mailbox, err error) bool {
	switch {
	case err == nil:
	case errors.Is(err, ErrAuthFailed):
		s.log.Info("login failed", "user", user, "mech", how)
		s.reply(false, "[AUTH] authentication failed")
		return s.bad()
	case errors.Is(err, ErrInUse):
		s.log.Info("mailbox in use", "user", user)
		s.reply(false, "[IN-USE] another POP3 session has this mailbox open; try again later")
		return s.bad()
	default:
		s.log.Error("login", "user", user, "mech", how, "err", err)
		s.reply(false, "[SYS/TEMP] cannot open the mailbox now, try again later")
		return s.bad()
	}
	s.box = box
	s.user = user
	s.msgs = box.Messages()
	s.deleted = make([]bool, len(s.msgs))
	s.seen = make([]bool, len(s.msgs))
	s.state = transaction
	n, size := s.stat()
	s.log.Info("login", "user", user, "mech", how, "messages", n, "size", size)
	s.reply(true, "logged in, %d messages (%d octets)", n, size)
	return false
}

// auth runs RFC 5034's exchange.
func (s *Session) auth(ctx context.Context, arg string) (bool, error) {
	mech, initial, hasInitial := strings.Cut(arg, " ")
	mech = strings.ToUpper(mech)
	if mech == "" {
		// RFC 1734 clients list the mechanisms this way.
		s.reply(true, "")
		for _, m := range s.cfg.Auth.Mechanisms(s.secure()) {
			s.w.WriteString(m + "\r\n")
		}
		s.w.WriteString(".\r\n")
		return false, nil
	}
	offered := false
	for _, m := range s.cfg.Auth.Mechanisms(s.secure()) {
		offered = offered || m == mech
	}
	if !offered {
		if !s.secure() && (mech == "PLAIN" || mech == "LOGIN") {
			s.reply(false, "[AUTH] plain-text passwords are refused on an unencrypted connection: use STLS first")
		} else {
			s.reply(false, "mechanism %s is not supported", mech)
		}
		return s.bad(), nil
	}
	srv, open, err := s.cfg.Auth.SASL(ctx, mech)
	if err != nil {
		s.reply(false, "[SYS/TEMP] %v", err)
		return s.bad(), nil
	}
	var resp []byte
	if hasInitial {
		if initial != "=" { // RFC 5034 §4: "=" is an empty initial response
			resp, err = base64.StdEncoding.DecodeString(initial)
			if err != nil {
				s.reply(false, "invalid base64 in the initial response")
				return s.bad(), nil
			}
		}
	}
	for range 10 {
		challenge, done, err := srv.Next(resp)
		if err != nil {
			if !errors.Is(err, ErrTemporary) {
				err = fmt.Errorf("%w: %w", ErrAuthFailed, err)
			}
			return s.loggedIn("", mech, nil, err), nil
		}
		if done {
			user, box, err := open()
			return s.loggedIn(user, mech, box, err), nil
		}
		s.w.WriteString("+ " + base64.StdEncoding.EncodeToString(challenge) + "\r\n")
		line, err := s.readLine()
		if err != nil {
			if err == errLineTooLong {
				s.reply(false, "response too long")
				return s.bad(), nil
			}
			return true, err
		}
		if line == "*" {
			s.reply(false, "authentication cancelled")
			return s.bad(), nil
		}
		resp, err = base64.StdEncoding.DecodeString(line)
		if err != nil {
			s.reply(false, "invalid base64 in the response")
			return s.bad(), nil
		}
	}
	s.reply(false, "too many SASL steps")
	return true, nil
}

// stls upgrades the connection (RFC 2595 §4). The buffered reader must be
// empty: a client that pipelines past STLS would have plain-text commands
// run after the handshake (the CVE-2011-0411 class of bug).
func (s *Session) stls() (bool, error) {
	if s.cfg.StartTLS == nil || s.tlsActive() {
		s.reply(false, "STLS is not available")
		return s.bad(), nil
	}
	if s.r.Buffered() > 0 {
		s.reply(false, "commands sent after STLS before the handshake; closing")
		return true, nil
	}
	s.reply(true, "begin TLS negotiation")
	if err := s.w.Flush(); err != nil {
		return true, err
	}
	r, w, err := s.cfg.StartTLS()
	if err != nil {
		s.log.Info("TLS handshake failed", "err", err)
		return true, nil
	}
	s.setConn(r, w)
	s.user = ""
	return false, nil
}

func (s *Session) stat() (n int, size int64) {
	for i, m := range s.msgs {
		if !s.deleted[i] {
			n++
			size += m.Size
		}
	}
	return n, size
}

// msgArg parses a message number; it replies itself on error.
func (s *Session) msgArg(arg string) (int, bool) {
	n, err := strconv.Atoi(strings.TrimSpace(arg))
	if err != nil || n < 1 || n > len(s.msgs) {
		s.reply(false, "no such message")
		return 0, false
	}
	if s.deleted[n-1] {
		s.reply(false, "message %d is deleted", n)
		return 0, false
	}
	return n - 1, true
}

// transactionCmd runs a TRANSACTION-state command (RFC 1939 §5).
func (s *Session) transactionCmd(verb, arg string) (handled, done bool) {
	switch verb {
	case "STAT":
		n, size := s.stat()
		s.reply(true, "%d %d", n, size)
	case "LIST", "UIDL":
		s.listing(verb, arg)
	case "RETR":
		i, ok := s.msgArg(arg)
		if !ok {
			return true, false
		}
		if s.send(i, -1) {
			s.seen[i] = true
		}
	case "TOP":
		a, b, _ := strings.Cut(strings.TrimSpace(arg), " ")
		lines, err := strconv.Atoi(strings.TrimSpace(b))
		if err != nil || lines < 0 {
			s.reply(false, "usage: TOP msg lines")
			return true, s.bad()
		}
		i, ok := s.msgArg(a)
		if !ok {
			return true, false
		}
		s.send(i, lines)
	case "DELE":
		i, ok := s.msgArg(arg)
		if !ok {
			return true, false
		}
		s.deleted[i] = true
		s.reply(true, "message %d deleted", i+1)
	case "RSET":
		for i := range s.deleted {
			s.deleted[i] = false
		}
		n, size := s.stat()
		s.reply(true, "%d messages (%d octets)", n, size)
	default:
		return false, false
	}
	return true, false
}

func (s *Session) listing(verb, arg string) {
	entry := func(i int) string {
		if verb == "UIDL" {
			return fmt.Sprintf("%d %s", i+1, s.msgs[i].UID)
		}
		return fmt.Sprintf("%d %d", i+1, s.msgs[i].Size)
	}
	if strings.TrimSpace(arg) != "" {
		i, ok := s.msgArg(arg)
		if ok {
			s.reply(true, "%s", entry(i))
		}
		return
	}
	n, size := s.stat()
	if verb == "LIST" {
		s.reply(true, "%d messages (%d octets)", n, size)
	} else {
		s.reply(true, "")
	}
	// Written field by field: a listing of 100,000 messages is as many
	// lines, and formatting each into a string of its own was most of
	// the time it took.
	var num [20]byte
	for i := range s.msgs {
		if s.deleted[i] {
			continue
		}
		s.w.Write(strconv.AppendInt(num[:0], int64(i+1), 10))
		s.w.WriteByte(' ')
		if verb == "UIDL" {
			s.w.WriteString(s.msgs[i].UID)
		} else {
			s.w.Write(strconv.AppendInt(num[:0], s.msgs[i].Size, 10))
		}
		s.w.WriteString("\r\n")
	}
	s.w.WriteString(".\r\n")
}

// send writes message i as RETR (lines < 0) or TOP (header and that many
// body lines), with CRLF endings and dot-stuffing (RFC 1939 §3) whatever
// the stored line endings. It reports whether the message was sent.
func (s *Session) send(i, lines int) bool {
	f, err := s.box.Open(i)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			s.reply(false, "message %d was removed by another program", i+1)
		} else {
			s.log.Error("open message", "user", s.user, "uid", s.msgs[i].UID, "err", err)
			s.reply(false, "[SYS/TEMP] cannot read message %d now", i+1)
		}
		return false
	}
	defer f.Close()
	if lines < 0 {
		s.reply(true, "%d octets", s.msgs[i].Size)
	} else {
		s.reply(true, "top of message follows")
	}
	if s.msgr == nil {
		s.msgr = bufio.NewReaderSize(f, 32<<10)
	} else {
		s.msgr.Reset(f)
	}
	err = writeDotStuffed(s.w, s.msgr, lines)
	s.msgr.Reset(nil)
	if err == nil {
		s.w.WriteString(".\r\n")
	}
	if err != nil {
		// The +OK has gone out: the only honest end is to cut the
		// connection rather than pretend the message was complete.
		s.log.Error("read message", "user", s.user, "uid", s.msgs[i].UID, "err", err)
		s.fatal = fmt.Errorf("read message %s: %w", s.msgs[i].UID, err)
		return false
	}
	return true
}

// writeDotStuffed copies r to w line by line. bodyLines < 0 copies all;
// otherwise the header, the blank line and bodyLines lines of the body.
func writeDotStuffed(w *bufio.Writer, br *bufio.Reader, bodyLines int) error {
	inBody := false
	lineStart := true
	for {
		frag, err := br.ReadSlice('\n')
		if len(frag) > 0 {
			complete := frag[len(frag)-1] == '\n'
			if lineStart {
				if inBody && bodyLines >= 0 {
					if bodyLines == 0 {
						return nil
					}
					bodyLines--
				}
				if frag[0] == '.' {
					w.WriteByte('.')
				}
				if !inBody && (string(frag) == "\n" || string(frag) == "\r\n") {
					inBody = true
				}
			}
			if complete {
				body := frag[:len(frag)-1]
				if len(body) > 0 && body[len(body)-1] == '\r' {
					body = body[:len(body)-1]
				}
				w.Write(body)
				w.WriteString("\r\n")
			} else {
				w.Write(frag)
			}
			lineStart = complete
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			if !lineStart {
				w.WriteString("\r\n")
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// quit ends the session; in TRANSACTION state it enters UPDATE and
// commits the deletions (RFC 1939 §6).
func (s *Session) quit() error {
	if s.state != transaction {
		s.reply(true, "bye")
		return nil
	}
	// Sized first: at 100,000 messages, growing the slices by append
	// left megabytes of garbage for a collection to find right at QUIT.
	var nd, nr int
	for i := range s.msgs {
		switch {
		case s.deleted[i]:
			nd++
		case s.seen[i]:
			nr++
		}
	}
	deleted, retrieved := make([]int, 0, nd), make([]int, 0, nr)
	for i := range s.msgs {
		switch {
		case s.deleted[i]:
			deleted = append(deleted, i)
		case s.seen[i]:
			retrieved = append(retrieved, i)
		}
	}
	if err := s.box.Commit(deleted, retrieved); err != nil {
		s.log.Error("update", "user", s.user, "err", err)
		s.reply(false, "[SYS/TEMP] some deleted messages were not removed")
		return nil
	}
	n, _ := s.stat()
	s.log.Info("logout", "user", s.user, "deleted", len(deleted), "left", n)
	s.reply(true, "bye, %d messages deleted, %d left", len(deleted), n)
	return nil
}
