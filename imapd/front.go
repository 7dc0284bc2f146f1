package imapd

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
)

// The front is the command dispatcher between the client and imapserver.
// It reads every client command whole, with its literals, before
// imapserver sees a byte of it, and hands imapserver one line per command
// over an in-memory connection. It exists because imapserver's own
// reading of literals cannot be made safe from outside (v2.0.0-beta.9):
//
//   - a synchronising literal over 4 KiB outside APPEND is refused by
//     imapserver without a "+" and without a tagged answer, so the client
//     waits for the continuation and the connection hangs;
//   - a refused non-synchronising literal ({5000+}) is not drained, nor is
//     any literal that follows a syntax error (imapserver skips to the
//     end of the line), so its payload is read and run as commands: "a2
//     SELECT {5000+}" carrying "x9 CREATE Injected" creates the mailbox.
//
// So outside APPEND the front inlines every literal as a quoted string
// (names, passwords and search strings never hold CR, LF or NUL; a
// literal that does is refused) and imapserver never sees a literal at
// all; APPEND, the one command whose literal is a message, the front
// serves itself, calling the session's Append with the literal streamed
// from the client.
//
// The front also owns what imapserver lacks: STARTTLS and the policy on
// passwords in the clear, ID (RFC 2971), COMPRESS=DEFLATE (RFC 4978),
// QUOTA (RFC 9208), and the CAPABILITY lists, which it rewrites to say
// what this server does rather than what imapserver guesses.
type front struct {
	cfg  *Config
	st   *ConnState
	conn io.ReadWriteCloser // the client, in the clear or TLS
	in   *bufio.Reader      // from the client (through inflate after COMPRESS)
	out  *clientOut

	lib  net.Conn // our end of the connection imapserver serves
	libW *bufio.Writer
	libR *bufio.Reader

	// mu guards what the relay goroutine shares with the command loop.
	mu       sync.Mutex
	waitTag  string // the tag whose completion is awaited, "" for none
	waitName string
	internal bool // the awaited command is the front's own: swallow its completion
	authed   bool
	captured [][]byte // untagged lines kept for the front (SORT's SEARCH)
	capture  string   // the untagged response name to keep, "" for none
	events   chan event

	compressed bool
	libGone    bool // imapserver ended the connection
}

// event is what the relay tells the command loop.
type event struct {
	cont   bool   // imapserver asked for a continuation ("+")
	status string // the awaited command completed: OK, NO or BAD
	closed bool   // imapserver closed the connection
}

// clientOut is the writing side towards the client, shared by the relay
// and the command loop.
type clientOut struct {
	mu sync.Mutex
	w  *bufio.Writer
	z  *flate.Writer // set once COMPRESS=DEFLATE is active
}

func (o *clientOut) write(b ...[]byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range b {
		if _, err := o.w.Write(p); err != nil {
			return err
		}
	}
	return nil
}

func (o *clientOut) flush() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.flushLocked()
}

func (o *clientOut) flushLocked() error {
	if err := o.w.Flush(); err != nil {
		return err
	}
	if o.z != nil {
		return o.z.Flush()
	}
	return nil
}

// line writes one response line and sends it.
func (o *clientOut) line(format string, v ...any) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, err := fmt.Fprintf(o.w, format+"\r\n", v...); err != nil {
		return err
	}
	return o.flushLocked()
}

var crlf = []byte("\r\n")

// DefaultPreAuthIdle is how long a client that has not logged in may
// be silent, unless Config says otherwise.
const DefaultPreAuthIdle = time.Minute

// errClientGone ends the command loop without a word to the client.
var errClientGone = errors.New("connection closed")

// relay copies imapserver's responses to the client, frames the literals
// in them, rewrites CAPABILITY lists and tells the command loop when the
// awaited command completes or asks for a continuation.
func (f *front) relay() {
	defer close(f.events)
	first := true
	for {
		line, err := readLineView(f.libR)
		if err != nil {
			// imapserver ended the connection (LOGOUT, its own
			// timeouts, an unknown command before login): so does
			// the front, and its read of the client ends.
			f.out.flush()
			f.stopReading()
			f.events <- event{closed: true}
			return
		}
		f.mu.Lock()
		tag, name, internal := f.waitTag, f.waitName, f.internal
		tagged := tag != "" && len(line) > len(tag) && string(line[:len(tag)]) == tag && line[len(tag)] == ' '
		var status string
		if tagged {
			status, _, _ = strings.Cut(string(line[len(tag)+1:]), " ")
			if status == "OK" && (name == "LOGIN" || name == "AUTHENTICATE") {
				f.authed = true
			}
			f.waitTag, f.waitName, f.internal = "", "", false
		}
		if first && bytes.HasPrefix(line, []byte("* PREAUTH ")) {
			f.authed = true
		}
		keep := f.capture != "" && isCaptured(line, f.capture)
		if keep {
			f.captured = append(f.captured, bytes.Clone(line))
		}
		authed := f.authed
		f.mu.Unlock()

		line = f.rewriteCaps(line, authed)
		if first {
			line = f.rewriteGreeting(line)
			first = false
		}
		swallow := keep || (tagged && internal)
		if !swallow {
			err = f.out.write(line, crlf)
		}
		for err == nil {
			lit, ok := literalAt(line)
			if !ok {
				break
			}
			if swallow {
				_, err = io.CopyN(io.Discard, f.libR, lit.size)
			} else {
				err = f.copyToClient(lit.size)
			}
			if err != nil {
				break
			}
			if line, err = readLineView(f.libR); err == nil && !swallow {
				err = f.out.write(line, crlf)
			}
		}
		if err == nil && f.libR.Buffered() == 0 {
			err = f.out.flush()
		}
		if err != nil {
			// The client is gone; imapserver learns it when the
			// command loop closes its side.
			f.lib.Close()
			f.events <- event{closed: true}
			return
		}
		switch {
		case tagged:
			f.events <- event{status: status}
		case len(line) > 0 && line[0] == '+':
			f.mu.Lock()
			waiting := f.waitTag != ""
			f.mu.Unlock()
			if waiting {
				f.events <- event{cont: true}
			}
		}
	}
}

// stopReading ends the command loop's wait for the client: with a
// deadline where the connection takes one, so that its owner closes it
// once, else by closing it.
func (f *front) stopReading() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.libGone = true
	if d, ok := f.conn.(interface{ SetReadDeadline(time.Time) error }); ok {
		d.SetReadDeadline(time.Now())
		return
	}
	f.conn.Close()
}

// isCaptured reports whether an untagged line is the response the front
// waits for: "* SEARCH", with numbers or none, or its "* ESEARCH" form
// (IMAP4rev2 or RETURN).
func isCaptured(line []byte, name string) bool {
	for _, p := range []string{"* " + name, "* E" + name} {
		if rest, ok := bytes.CutPrefix(line, []byte(p)); ok && (len(rest) == 0 || rest[0] == ' ') {
			return true
		}
	}
	return false
}

func (f *front) copyToClient(n int64) error {
	f.out.mu.Lock()
	defer f.out.mu.Unlock()
	_, err := io.CopyN(f.out.w, f.libR, n)
	return err
}

// readLine reads a line and returns it without its CRLF (or bare LF).
// max bounds it (0: no bound, for imapserver's own output); a longer line
// is errLineTooLong, with the rest of it left unread.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := r.ReadSlice('\n')
		if err == nil || err == bufio.ErrBufferFull {
			line = append(line, frag...)
			if max > 0 && len(line) > max+2 {
				return nil, errLineTooLong
			}
			if err == nil {
				break
			}
			continue
		}
		if len(line)+len(frag) > 0 && errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

var errLineTooLong = errors.New("line too long")

// readLineView is readLine for imapserver's output, the relay's hot
// path: a line that fits the buffer is returned in place, valid until
// the next read, not copied.
func readLineView(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		head := bytes.Clone(line) // the next read reuses the buffer
		rest, err := readLine(r, 0)
		if err != nil {
			return nil, err
		}
		return append(head, rest...), nil
	}
	if err != nil {
		if len(line) > 0 && errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// rewriteCaps replaces the capability list of a CAPABILITY response or
// response code with the front's own.
func (f *front) rewriteCaps(line []byte, authed bool) []byte {
	const untagged = "* CAPABILITY "
	if bytes.HasPrefix(line, []byte(untagged)) {
		return []byte(untagged + f.caps(authed))
	}
	i := bytes.Index(line, []byte(" [CAPABILITY "))
	if i < 0 || bytes.HasPrefix(line, []byte("+")) {
		return line
	}
	// Only a status response carries it: "* OK [", "tag OK [", "* PREAUTH [".
	head := line[:i]
	if sp := bytes.IndexByte(head, ' '); sp < 0 || bytes.IndexByte(head[sp+1:], ' ') >= 0 {
		return line
	}
	end := bytes.IndexByte(line[i:], ']')
	if end < 0 {
		return line
	}
	var b []byte
	b = append(b, line[:i]...)
	b = append(b, " [CAPABILITY "...)
	b = append(b, f.caps(authed)...)
	b = append(b, line[i+end:]...)
	return b
}

// rewriteGreeting names the host and the connection in the greeting.
func (f *front) rewriteGreeting(line []byte) []byte {
	i := bytes.LastIndexByte(line, ']')
	if i < 0 || !(bytes.HasPrefix(line, []byte("* OK [")) || bytes.HasPrefix(line, []byte("* PREAUTH ["))) {
		return line
	}
	return append(line[:i+1:i+1], (" " + f.cfg.greeting())...)
}

// caps is the capability list for the client's state now (RFC 9051
// §7.2.2): what imapserver serves, what the front adds, and the login
// policy.
func (f *front) caps(authed bool) string {
	c := []string{"IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE"}
	if !authed {
		if f.cfg.TLS != nil && !f.cfg.isTLS() {
			c = append(c, "STARTTLS")
		}
		if f.cfg.secure() {
			c = append(c, "AUTH=PLAIN", "AUTH=LOGIN")
		} else {
			// RFC 9051 §6.2.3: LOGIN is refused until TLS is on.
			c = append(c, "LOGINDISABLED")
		}
		return strings.Join(c, " ")
	}
	c = append(c, "IDLE", "UIDPLUS", "MOVE", "NAMESPACE", "UNSELECT",
		"CHILDREN", "LIST-EXTENDED", "LIST-STATUS", "STATUS=SIZE",
		"ESEARCH", "SEARCHRES", "BINARY", "SPECIAL-USE", "CREATE-SPECIAL-USE",
		"UTF8=ACCEPT", fmt.Sprintf("APPENDLIMIT=%d", f.cfg.appendLimit()))
	if _, ok := f.st.session().(QuotaSession); ok {
		c = append(c, "QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE")
	}
	if _, ok := f.st.session().(*Session); ok {
		c = append(c, "SORT", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES")
	}
	f.mu.Lock()
	compressed := f.compressed
	f.mu.Unlock()
	if !compressed {
		c = append(c, "COMPRESS=DEFLATE")
	}
	return strings.Join(c, " ")
}

// await waits for the command sent to imapserver to complete, reading a
// client line for each continuation request (AUTHENTICATE's responses,
// IDLE's DONE) and passing it on whole.
func (f *front) await() (string, error) {
	for ev := range f.events {
		switch {
		case ev.closed:
			return "", errClientGone
		case ev.cont:
			line, err := readLine(f.in, MaxLine)
			if err != nil {
				return "", err
			}
			if err := f.toLib(line); err != nil {
				return "", err
			}
		default:
			return ev.status, nil
		}
	}
	return "", errClientGone
}

// toLib sends one line to imapserver.
func (f *front) toLib(line []byte) error {
	if _, err := f.libW.Write(line); err != nil {
		return errClientGone
	}
	if _, err := f.libW.Write(crlf); err != nil {
		return errClientGone
	}
	if err := f.libW.Flush(); err != nil {
		return errClientGone
	}
	return nil
}

// forward hands a framed command to imapserver and waits for its end.
func (f *front) forward(tag, name string, line []byte) (string, error) {
	f.mu.Lock()
	f.waitTag, f.waitName, f.internal = tag, name, false
	f.mu.Unlock()
	if err := f.toLib(line); err != nil {
		return "", err
	}
	return f.await()
}

// internalTag marks the front's own commands to imapserver; a client may
// use it too, since commands never overlap.
const internalTag = "tern.internal"

// internalCommand runs a command of the front's own through imapserver:
// its untagged responses reach the client, its completion does not.
func (f *front) internalCommand(cmd string) (string, error) {
	f.mu.Lock()
	f.waitTag, f.waitName, f.internal = internalTag, cmd, true
	f.mu.Unlock()
	if err := f.toLib([]byte(internalTag + " " + cmd)); err != nil {
		return "", err
	}
	return f.await()
}

func (f *front) isAuthed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.authed
}

// serve is the command loop.
func (f *front) serve(ctx context.Context) error {
	// The greeting comes first, from imapserver through the relay
	// (waitTag is "*" from the start, see Serve).
	if _, err := f.await(); err != nil {
		return nil
	}
	dl, canDeadline := f.conn.(interface{ SetReadDeadline(time.Time) error })
	for {
		// RFC 9051 §5.4: a client that has not logged in may be
		// logged out sooner than the 30 minutes an idle one gets.
		// Under mu, so that stopReading's deadline is not undone.
		f.mu.Lock()
		preauth, gone := !f.authed, f.libGone
		if canDeadline && !gone {
			if preauth {
				dl.SetReadDeadline(time.Now().Add(f.cfg.preAuthIdle()))
			} else {
				dl.SetReadDeadline(time.Time{})
			}
		}
		f.mu.Unlock()
		if gone {
			return nil
		}
		line, err := readLine(f.in, MaxLine)
		if err != nil {
			f.mu.Lock()
			gone := f.libGone
			f.mu.Unlock()
			if gone {
				return nil
			}
			if preauth && errors.Is(err, os.ErrDeadlineExceeded) {
				f.out.line("* BYE autologout: log in within %v", f.cfg.preAuthIdle())
				return nil
			}
			if errors.Is(err, errLineTooLong) {
				// The rest of the line cannot be told from a command.
				f.out.line("* BYE [TOOBIG] command line longer than %d octets", MaxLine)
				return nil
			}
			if ctx.Err() != nil {
				f.out.line("* BYE server shutting down")
				return nil
			}
			return clientErr(err)
		}
		if len(line) == 0 {
			continue // RFC 9051 allows none, but clients send them; so does imapserver
		}
		tag, name, err := splitCommand(line)
		if err != nil {
			if err := f.out.line("* BAD [CLIENTBUG] %v", err); err != nil {
				return clientErr(err)
			}
			if err := f.skipLiterals(line); err != nil {
				return err
			}
			continue
		}
		if name == "" {
			if err := f.out.line("%s BAD [CLIENTBUG] a command name is missing", tag); err != nil {
				return clientErr(err)
			}
			continue
		}
		done, err := f.command(ctx, tag, name, line)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// clientErr is how a read or write error of the client ends the loop.
func clientErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil
	}
	return err
}

// command serves one command; done says the connection is over.
func (f *front) command(ctx context.Context, tag, name string, line []byte) (done bool, err error) {
	if name == "APPEND" {
		return false, f.appendCmd(tag, line)
	}
	if (name == "LOGIN" || name == "AUTHENTICATE") && !f.cfg.secure() && !f.isAuthed() {
		// RFC 9051 §6.2.3 and §7.1: refused in the clear, and never
		// passed on, so no password is checked (or throttled) that
		// travelled unencrypted; refused before a "+", so a client
		// that sends its password as a literal keeps it.
		if lit, ok := literalAt(line); ok && lit.nonSync {
			if err := f.discard(lit.size); err != nil {
				return false, err
			}
		}
		return false, f.out.line("%s NO [PRIVACYREQUIRED] use STARTTLS before logging in", tag)
	}
	cmd, refused, err := f.frame(tag, line)
	if err != nil || refused {
		return false, err
	}
	rest := ""
	if i := len(tag) + 1 + len(name); i < len(cmd) {
		rest = strings.TrimPrefix(string(cmd[i:]), " ")
	}
	switch name {
	case "STARTTLS":
		return false, f.startTLS(tag, rest)
	case "ID":
		return false, f.id(tag, rest)
	case "COMPRESS":
		return false, f.compress(tag, rest)
	case "GETQUOTA", "GETQUOTAROOT", "SETQUOTA":
		return false, f.quota(tag, name, rest)
	case "SORT", "UID SORT":
		if f.isAuthed() {
			return false, f.sortCmd(tag, name, rest)
		}
	case "THREAD", "UID THREAD":
		if f.isAuthed() {
			return false, f.thread(tag, name, rest)
		}
	case "LOGOUT":
		status, err := f.forward(tag, name, cmd)
		return status == "OK" || err != nil, err
	}
	status, err := f.forward(tag, name, cmd)
	if err == nil && status == "OK" && (name == "LOGIN" || name == "AUTHENTICATE") {
		f.st.loggedIn()
	}
	return false, err
}

// frame reads the rest of a command whose first line is line, with its
// literals, and returns it as one line with every literal inlined as a
// quoted string. refused means the command was answered already (a
// literal too large or not inlineable) and must not go further.
func (f *front) frame(tag string, line []byte) (cmd []byte, refused bool, err error) {
	lit, ok := literalAt(line)
	if !ok {
		return line, false, nil
	}
	cmd = make([]byte, 0, len(line)+64)
	bad := ""
	for n := 0; ok; n++ {
		cmd = append(cmd, line[:lit.start]...)
		switch {
		case n >= MaxLiterals:
			bad = fmt.Sprintf("more than %d literals in one command", MaxLiterals)
		case lit.size > MaxInlineLiteral || len(cmd)+int(lit.size) > MaxCommand:
			bad = fmt.Sprintf("literal of %d octets: at most %d are taken outside APPEND", lit.size, MaxInlineLiteral)
		}
		if bad != "" {
			return nil, true, f.refuseLiteral(tag, lit, bad)
		}
		if !lit.nonSync {
			if err := f.out.line("+ Ready for literal data"); err != nil {
				return nil, true, clientErr(err)
			}
		}
		data := make([]byte, lit.size)
		if _, err := io.ReadFull(f.in, data); err != nil {
			return nil, true, clientErr(err)
		}
		if !inlineable(data) || lit.binary {
			bad = "a literal holding CR, LF or NUL is not taken outside APPEND"
		}
		cmd = appendQuoted(cmd, data)
		if line, err = readLine(f.in, MaxLine); err != nil {
			if errors.Is(err, errLineTooLong) {
				f.out.line("* BYE [TOOBIG] command line longer than %d octets", MaxLine)
				return nil, true, errClientGone
			}
			return nil, true, clientErr(err)
		}
		lit, ok = literalAt(line)
	}
	cmd = append(cmd, line...)
	if len(cmd) > MaxCommand {
		bad = fmt.Sprintf("command longer than %d octets", MaxCommand)
	}
	if bad != "" {
		return nil, true, f.out.line("%s BAD [CLIENTBUG] %s", tag, bad)
	}
	return cmd, false, nil
}

// refuseLiteral answers a literal the front will not take. A
// synchronising one has not been sent: the answer ends the command (RFC
// 9051 §7.5). A non-synchronising one is on its way and is read and
// thrown away with the rest of its command, so that not a byte of it is
// taken for a command; past maxDiscard the connection is closed instead
// (RFC 7888 §4).
func (f *front) refuseLiteral(tag string, lit literal, why string) error {
	if !lit.nonSync {
		return f.out.line("%s NO [TOOBIG] %s", tag, why)
	}
	if err := f.discard(lit.size); err != nil {
		return err
	}
	return f.out.line("%s BAD [TOOBIG] %s", tag, why)
}

// discard throws away a literal the client sends unasked and the rest of
// its command, literals included.
func (f *front) discard(size int64) error {
	total := int64(0)
	for n := 0; ; n++ {
		total += size
		if total > maxDiscard || n > MaxLiterals {
			f.out.line("* BYE [TOOBIG] command larger than %d octets", maxDiscard)
			return errClientGone
		}
		if _, err := io.CopyN(io.Discard, f.in, size); err != nil {
			return clientErr(err)
		}
		line, err := readLine(f.in, MaxLine)
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				f.out.line("* BYE [TOOBIG] command line longer than %d octets", MaxLine)
				return errClientGone
			}
			return clientErr(err)
		}
		lit, ok := literalAt(line)
		if !ok {
			return nil
		}
		if !lit.nonSync {
			// The client waits for a "+" that will not come: the
			// command is refused here, and the literal not sent.
			return nil
		}
		size = lit.size
	}
}

// skipLiterals reads and throws away the literals a line announces, for
// a command refused before it was framed.
func (f *front) skipLiterals(line []byte) error {
	lit, ok := literalAt(line)
	if !ok || !lit.nonSync {
		return nil
	}
	return f.discard(lit.size)
}

// startTLS serves STARTTLS (RFC 9051 §6.2.1).
func (f *front) startTLS(tag, rest string) error {
	switch {
	case rest != "":
		return f.out.line("%s BAD [CLIENTBUG] STARTTLS takes no arguments", tag)
	case f.cfg.TLS == nil:
		return f.out.line("%s NO [UNAVAILABLE] no certificate is configured (tls.crt and tls.key)", tag)
	case f.cfg.isTLS():
		return f.out.line("%s BAD [CLIENTBUG] TLS is on already", tag)
	case f.isAuthed():
		return f.out.line("%s BAD [CLIENTBUG] STARTTLS is taken only before login", tag)
	}
	if err := f.out.line("%s OK begin TLS negotiation now", tag); err != nil {
		return clientErr(err)
	}
	// Anything the client sent after STARTTLS in the clear is thrown
	// away, never taken as sent through TLS (RFC 9051 §6.2.1,
	// CVE-2011-0411).
	if n := f.in.Buffered(); n > 0 {
		f.in.Discard(n)
	}
	if err := f.cfg.StartTLS(); err != nil {
		return err
	}
	f.in.Reset(f.conn)
	f.out.mu.Lock()
	f.out.w.Reset(f.conn)
	f.out.mu.Unlock()
	return nil
}

// id serves ID (RFC 2971): the client's list is logged, ours sent.
func (f *front) id(tag, rest string) error {
	a := &args{s: rest}
	params, ok := a.idParams()
	if !ok || !a.done() {
		return f.out.line("%s BAD [CLIENTBUG] ID takes NIL or a list of field and value strings", tag)
	}
	if len(params) > 0 {
		f.cfg.Log.Info("client id", "name", params["name"], "version", params["version"], "os", params["os"])
	}
	if err := f.out.line(`* ID ("name" "tern" "vendor" "tern mail system" "support-url" "man:tern-imapd(8)")`); err != nil {
		return clientErr(err)
	}
	return f.out.line("%s OK ID completed", tag)
}

// compress serves COMPRESS DEFLATE (RFC 4978 §3): after the OK, both
// directions are raw deflate streams (RFC 1951).
func (f *front) compress(tag, rest string) error {
	f.mu.Lock()
	already := f.compressed
	f.mu.Unlock()
	switch {
	case !f.isAuthed():
		return f.out.line("%s BAD [CLIENTBUG] COMPRESS is taken after login", tag)
	case !strings.EqualFold(rest, "DEFLATE"):
		return f.out.line("%s BAD [CLIENTBUG] the one mechanism is DEFLATE", tag)
	case already:
		return f.out.line("%s NO [COMPRESSIONACTIVE] DEFLATE is on already", tag)
	}
	if err := f.out.line("%s OK DEFLATE active", tag); err != nil {
		return clientErr(err)
	}
	// What the client sent after the command, already in the buffer, is
	// compressed: the inflater reads the old buffer first. It is our
	// own (inflate.go), so that a command flushed with zlib's
	// Z_PARTIAL_FLUSH is read at once; our output is written by
	// compress/flate, with sync flushes.
	f.in = bufio.NewReader(newInflater(f.in))
	z, err := flate.NewWriter(f.conn, flate.DefaultCompression)
	if err != nil {
		return err
	}
	f.out.mu.Lock()
	f.out.z = z
	f.out.w = bufio.NewWriter(z)
	f.out.mu.Unlock()
	f.mu.Lock()
	f.compressed = true
	f.mu.Unlock()
	return nil
}

// appendCmd serves APPEND (RFC 9051 §6.3.12) itself: the literal goes
// from the client to the session's Append as it arrives, never through
// imapserver's reader.
func (f *front) appendCmd(tag string, line []byte) error {
	cmd := make([]byte, 0, len(line))
	head := len(tag) + 1 + len("APPEND")
	for n := 0; ; n++ {
		lit, ok := literalAt(line)
		if !ok {
			cmd = append(cmd, line...)
			// No message literal at all: bad syntax.
			if len(cmd) > MaxCommand {
				return f.out.line("%s BAD [CLIENTBUG] command longer than %d octets", tag, MaxCommand)
			}
			return f.out.line("%s BAD [CLIENTBUG] APPEND wants a mailbox name and a message literal", tag)
		}
		cmd = append(cmd, line[:lit.start]...)
		var rest string
		if head < len(cmd) {
			rest = strings.TrimPrefix(string(cmd[head:]), " ")
		}
		h, complete, err := parseAppendHead(rest)
		if err != nil {
			return f.refuseLiteral(tag, lit, "APPEND: "+strings.TrimPrefix(err.Error(), errSyntax.Error()+": "))
		}
		if complete {
			return f.appendMessage(tag, h, lit)
		}
		// The literal is the mailbox name.
		if n > 0 || lit.size > MaxInlineLiteral || lit.binary {
			return f.refuseLiteral(tag, lit, "APPEND wants a mailbox name and a message literal")
		}
		if !lit.nonSync {
			if err := f.out.line("+ Ready for literal data"); err != nil {
				return clientErr(err)
			}
		}
		data := make([]byte, lit.size)
		if _, err := io.ReadFull(f.in, data); err != nil {
			return clientErr(err)
		}
		if !inlineable(data) {
			return f.out.line("%s BAD [CLIENTBUG] a mailbox name holds no CR, LF or NUL", tag)
		}
		cmd = appendQuoted(cmd, data)
		if line, err = readLine(f.in, MaxLine); err != nil {
			return clientErr(err)
		}
	}
}

// appendMessage takes the message literal of an APPEND.
func (f *front) appendMessage(tag string, h appendHead, lit literal) error {
	limit := f.cfg.appendLimit()
	switch {
	case !f.isAuthed():
		return f.refuseLiteral(tag, lit, "APPEND is taken after login")
	case lit.size > int64(limit):
		// RFC 7889 §4: TOOBIG, before the client sends it.
		return f.refuseLiteral(tag, lit, fmt.Sprintf("the message is larger than the APPENDLIMIT of %d octets", limit))
	}
	if !lit.nonSync {
		if err := f.out.line("+ Ready for literal data"); err != nil {
			return clientErr(err)
		}
	}
	body := &literalReader{r: io.LimitReader(f.in, lit.size), size: lit.size}
	opts := &imap.AppendOptions{Flags: h.Flags, Time: h.Time}
	data, appendErr := f.st.session().Append(h.Mailbox, body, opts)
	// Whatever the session did not read is drained: it is the message,
	// not commands.
	if _, err := io.Copy(io.Discard, body.r); err != nil {
		return clientErr(err)
	}
	line, err := readLine(f.in, MaxLine)
	if err != nil {
		return clientErr(err)
	}
	want := ""
	if h.UTF8 {
		want = ")"
	}
	if string(line) != want {
		return f.out.line("%s BAD [CLIENTBUG] unexpected %q after the message literal", tag, line)
	}
	if appendErr != nil {
		return f.out.line("%s %s", tag, statusText(appendErr))
	}
	// A NOOP of the front's own lets imapserver report the new message
	// to a client that has the mailbox selected (RFC 9051 §6.3.12); an
	// APPEND to another mailbox has nothing to report.
	if sess, ok := f.st.session().(*Session); !ok || sess.isSelected(h.Mailbox) {
		if _, err := f.internalCommand("NOOP"); err != nil {
			return err
		}
	}
	if data != nil && data.UID != 0 {
		return f.out.line("%s OK [APPENDUID %d %d] APPEND completed", tag, data.UIDValidity, data.UID)
	}
	return f.out.line("%s OK APPEND completed", tag)
}

// statusText is a session error as the rest of a tagged response.
func statusText(err error) string {
	var ie *imap.Error
	if errors.As(err, &ie) {
		t := string(ie.Type)
		if ie.Code != "" {
			t += " [" + string(ie.Code) + "]"
		}
		return t + " " + ie.Text
	}
	return "NO [SERVERBUG] internal error"
}

// literalReader is an imap.LiteralReader over the client's stream.
type literalReader struct {
	r    io.Reader
	size int64
}

func (l *literalReader) Read(p []byte) (int, error) { return l.r.Read(p) }
func (l *literalReader) Size() int64                { return l.size }
