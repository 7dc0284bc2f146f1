package smtpd

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// wire stands between go-smtp and the client. go-smtp has no hook for
// its replies or for STARTTLS on a connection it did not wrap itself, so
// the corrections are made here, on the bytes:
//
//   - reads hand the engine at most one line each, so that its buffer
//     never holds what the client sent after a command; at STARTTLS the
//     rest of ours is thrown away (CVE-2011-0411, RFC 3207 §4.2);
//   - which line is a command, and which is message data (after 354, and
//     BDAT's counted octets) or a SASL response (after 334), is followed
//     here from the protocol itself, so that a reply is known by the
//     command it answers and its code, never by the engine's wording;
//   - STARTTLS is answered here, through serve.Conn, whose handshake has
//     the per-read deadlines (the engine is told nothing of TLS and so
//     refuses the command, which is the cue);
//   - the greeting and the first EHLO line name this host, as RFC 5321
//     §4.2 has it; SIZE announces the true limit (the engine is given one
//     more byte: see Serve); REQUIRETLS is offered over TLS (RFC 8689 §4);
//   - replies are written when the engine next waits for the client, so
//     a turn is one segment however many lines go-smtp wrote;
//   - every error reply carries the connection id, and is counted: past
//     MaxErrors the client gets 421 and is cut off;
//   - 502 for a command out of sequence becomes 503 (RFC 5321 §4.2.4:
//     502 is for commands not implemented), and a bad base64 SASL line is
//     501, not the engine's temporary 454; AUTH success is 235 2.7.0;
//   - message data (DATA's and BDAT's) is checked here for bare CR and
//     bare LF as the client sent it, before the engine's dot unstuffing,
//     which drops a CR that follows a line's leading dot (see rawData).
type wire struct {
	ctx context.Context
	c   Conn
	s   *session

	inBuf [4096]byte
	in    []byte
	out   []byte
	batch []byte

	greeted bool
	inEHLO  bool
	errors  int

	// What the client's next octets are, as the protocol says: a
	// command, message data until the next reply (after 354), bdatLeft
	// octets of a BDAT chunk, or one SASL response line (after 334).
	expect   expect
	bdatLeft int64
	line     []byte // the command or SASL line read so far
	verb     string // the last command's verb, upper case
	arg      string // and its first argument
	// forced replaces the engine's error reply to the command or SASL
	// line just read: a reply of ours for a case the engine answers
	// otherwise.
	forced string
	cutOff bool
	dead   bool
	err    error

	// The message data as sent: rawCR says its last octet handed on was
	// a CR; rawBad holds the refusal for a bare CR or LF seen in it since
	// the transaction's MAIL. The engine runs Data for BDAT in a goroutine
	// of its own, hence the atomic.
	rawCR  bool
	rawBad atomic.Pointer[smtp.SMTPError]

	// The line being handed on (not in a BDAT chunk): its length so far
	// and its first octets, which say whether it is AUTH. tooLong, once
	// set, fails every read, as the engine's own line limit does.
	lineLen int
	head    []byte
	tooLong bool

	closed chan struct{}
	once   sync.Once
}

type expect int

const (
	expectCommand expect = iota
	expectData
	expectBDAT
	expectSASL
)

func newWire(ctx context.Context, c Conn, s *session) *wire {
	return &wire{ctx: ctx, c: c, s: s, closed: make(chan struct{})}
}

func (w *wire) isClosed() bool {
	select {
	case <-w.closed:
		return true
	default:
		return false
	}
}

// Read implements net.Conn for the engine.
func (w *wire) Read(p []byte) (int, error) {
	if w.isClosed() {
		return 0, net.ErrClosed
	}
	if w.cutOff {
		w.writeRaw("421 4.7.0 " + w.s.host() + " too many errors, closing connection cid=" + w.s.peer.ID + "\r\n")
		return 0, io.EOF
	}
	if w.dead {
		return 0, io.EOF
	}
	if w.tooLong {
		return 0, smtp.ErrTooLongLine
	}
	for len(w.in) == 0 {
		// About to wait for the client: send the replies held so far,
		// in one write (RFC 2920 §3.3 lets a server group them).
		w.flush()
		n, err := w.c.Read(w.inBuf[:])
		w.in = w.inBuf[:n]
		if n > 0 {
			break
		}
		if err == nil {
			continue
		}
		if isTimeout(err) && w.ctx.Err() != nil && !w.s.inData.Load() {
			// Told to stop (SIGTERM) and the client is between
			// commands: RFC 5321 §3.8 has the server say 421.
			w.writeRaw("421 4.3.2 " + w.s.host() + " shutting down, try again later cid=" + w.s.peer.ID + "\r\n")
			return 0, io.EOF
		}
		if isTimeout(err) {
			// RFC 5321 s. 4.5.3.2: a server that gives up on a silent
			// client says 421 before it closes. Whatever the engine
			// answers the failed read is not sent after it.
			w.s.log().Info("timeout", "in_data", w.s.inData.Load())
			w.writeRaw("421 4.4.2 " + w.s.host() + " timeout waiting for you, closing connection cid=" + w.s.peer.ID + "\r\n")
			w.dead = true
		}
		return 0, err
	}
	k := bytes.IndexByte(w.in, '\n') + 1
	if k == 0 {
		k = len(w.in)
	}
	k = min(k, len(p))
	if w.expect == expectBDAT && int64(k) > w.bdatLeft {
		// A chunk ends where its count says, not at a line end: what
		// follows it in the same packet is the next command, handed on
		// by itself.
		k = int(w.bdatLeft)
	}
	if w.expect != expectBDAT && w.overLong(w.in[:k]) {
		w.tooLong = true
		return 0, smtp.ErrTooLongLine
	}
	copy(p, w.in[:k])
	if w.expect == expectData || w.expect == expectBDAT {
		w.rawData(w.in[:k])
	}
	w.follow(w.in[:k])
	w.in = w.in[k:]
	return k, nil
}

// MaxAuthLine is the longest AUTH command line or SASL response taken,
// CRLF included: RFC 4954 s. 4 has a server take 12,288 octets of base64
// in one line, after "AUTH", a mechanism name of at most 20 characters
// (RFC 4422 s. 3.1) and their spaces. Every other line is at most MaxLine.
const MaxAuthLine = 12288 + len("AUTH ") + 20 + len(" ") + len("\r\n")

// overLong says whether handing b on would make the current line longer
// than it may be. The engine's own limit (Server.MaxLineLength) is set
// above MaxAuthLine, so that the limit is decided here, by what the line
// is: the engine would hold every line to one length.
func (w *wire) overLong(b []byte) bool {
	if len(w.head) < len("AUTH ") {
		w.head = append(w.head, b[:min(len(b), len("AUTH ")-len(w.head))]...)
	}
	limit := MaxLine
	if w.expect == expectSASL || w.expect == expectCommand && len(w.head) >= 5 && strings.EqualFold(string(w.head[:5]), "AUTH ") {
		limit = MaxAuthLine
	}
	w.lineLen += len(b)
	if w.lineLen > limit {
		return true
	}
	if b[len(b)-1] == '\n' {
		w.lineLen, w.head = 0, w.head[:0]
	}
	return false
}

// rawData checks message data as the client sent it. go-smtp's data
// reader (data.go, taken from net/textproto) drops a line's leading "."
// and a CR right after it, so "a\r\n.\rhidden" reaches the session as
// "a\r\nhidden" and the session's own check (checker) cannot see the
// bare CR: RFC 5321 s. 2.3.8 allows CR and LF only as CRLF. A CR ending
// one read (or one BDAT chunk) is judged by the next octet of data.
func (w *wire) rawData(b []byte) {
	for _, c := range b {
		switch {
		case w.rawCR && c != '\n':
			w.rawBad.CompareAndSwap(nil, errBareCR)
		case !w.rawCR && c == '\n':
			w.rawBad.CompareAndSwap(nil, errBareLF)
		}
		w.rawCR = c == '\r'
	}
}

// rawRefusal is the refusal for the data of this transaction as sent,
// nil when it had no bare CR or LF. Data asks once the engine has handed
// it the whole message, so every octet of it has passed rawData.
func (w *wire) rawRefusal() *smtp.SMTPError { return w.rawBad.Load() }

// follow notes what the engine is handed, to know what each reply answers.
func (w *wire) follow(b []byte) {
	switch w.expect {
	case expectData:
		return
	case expectBDAT:
		w.bdatLeft -= int64(len(b))
		if w.bdatLeft <= 0 {
			w.expect = expectCommand
		}
		return
	}
	if len(w.line)+len(b) <= MaxAuthLine {
		w.line = append(w.line, b...)
	}
	if !bytes.HasSuffix(b, []byte{'\n'}) {
		return
	}
	line := strings.TrimRight(string(w.line), "\r\n")
	w.line = w.line[:0]
	if w.expect == expectSASL {
		// RFC 4954 §4: a response is base64, or "*" to cancel.
		w.expect = expectCommand
		if line != "*" && !isBase64(line) {
			w.forced = "501 5.5.2 invalid base64 data"
		}
		return
	}
	f := strings.Fields(line)
	w.verb, w.arg = "", ""
	if len(f) > 0 {
		w.verb = strings.ToUpper(f[0])
	}
	if len(f) > 1 {
		w.arg = f[1]
	}
	switch w.verb {
	case "MAIL":
		// A new transaction, and new message data.
		w.rawCR = false
		w.rawBad.Store(nil)
	case "BDAT":
		// RFC 3030 §2: "BDAT" SP chunk-size [SP "LAST"], and the
		// chunk's octets follow the command line, refused or not. A
		// malformed command has none; the engine reads chunk sizes of 32
		// bits.
		n, err := strconv.ParseUint(w.arg, 10, 32)
		if err == nil && n > 0 && (len(f) == 2 || len(f) == 3 && strings.EqualFold(f[2], "LAST")) {
			w.expect, w.bdatLeft = expectBDAT, int64(n)
		}
	case "AUTH":
		if len(f) > 2 && !isBase64(f[2]) {
			w.forced = "501 5.5.2 invalid base64 data"
		}
	}
}

// isBase64 says whether s is a SASL response as RFC 4954 §4 writes it:
// base64, or "=" for an empty one.
func isBase64(s string) bool {
	if s == "=" {
		return true
	}
	_, err := base64.StdEncoding.DecodeString(s)
	return err == nil
}

// notImplemented reports whether verb is a command RFC 5321 knows that the
// engine implements in no state: its 502 for them is right (§4.2.4), and
// any other 502 of its is a command out of sequence, 503.
func notImplemented(verb string) bool {
	switch verb {
	case "SEND", "SOML", "SAML", "EXPN", "HELP", "TURN":
		return true
	}
	return false
}

// Write implements net.Conn for the engine: replies, a line or more at a
// time.
func (w *wire) Write(p []byte) (int, error) {
	if w.isClosed() {
		return 0, net.ErrClosed
	}
	w.out = append(w.out, p...)
	for {
		i := bytes.IndexByte(w.out, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(w.out[:i]), "\r")
		w.out = w.out[:copy(w.out, w.out[i+1:])]
		w.reply(line)
	}
	// Replies are held until the engine reads again (or there are many):
	// go-smtp writes each line on its own, and a socket from tcpserver or
	// inetd has Nagle's algorithm on, so separate small writes would wait
	// for the client's delayed ACK, 40 ms and more, at every turn.
	if len(w.batch) > 16<<10 {
		w.flush()
	}
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

func (w *wire) emit(line string) {
	w.batch = append(w.batch, line...)
	w.batch = append(w.batch, '\r', '\n')
}

func (w *wire) flush() {
	if len(w.batch) == 0 || w.err != nil || w.dead {
		w.batch = w.batch[:0]
		return
	}
	if _, err := w.c.Write(w.batch); err != nil {
		w.err = err
		w.dead = true
	}
	w.batch = w.batch[:0]
}

func (w *wire) writeRaw(s string) {
	w.emit(strings.TrimSuffix(s, "\r\n"))
	w.flush()
}

// reply rewrites one reply line of the engine's.
func (w *wire) reply(line string) {
	if len(line) < 4 {
		w.emit(line)
		return
	}
	code, err := strconv.Atoi(line[:3])
	if err != nil {
		w.emit(line)
		return
	}
	sep, text := line[3], line[4:]
	host := w.s.host()
	// What the client sends next, as this reply says (RFC 5321 §4.3.2,
	// RFC 4954 §4).
	if sep == ' ' || sep == '-' {
		switch {
		case code == 354:
			w.expect = expectData
		case code == 334:
			w.expect = expectSASL
		case w.expect == expectData:
			w.expect = expectCommand
		}
	}
	if w.forced != "" && sep == ' ' {
		forced := w.forced
		w.forced = ""
		if code >= 400 {
			code, _ = strconv.Atoi(forced[:3])
			text = forced[4:]
			w.countError(code, sep, text)
			return
		}
	}
	switch {
	case !w.greeted && code == 220:
		w.greeted = true
		w.emit("220 " + host + " ESMTP tern ready cid=" + w.s.peer.ID)
		return
	case code == 250 && w.verb == "EHLO" && !w.inEHLO:
		// The engine's first line of its EHLO reply; the client's name
		// as the engine takes it, the first word after EHLO.
		w.inEHLO = sep == '-'
		d := w.arg
		w.s.hello(d, true)
		var caps []string
		if w.s.canStartTLS() {
			caps = append(caps, "STARTTLS")
		}
		if w.s.isTLS() {
			// RFC 8689 §4: only over TLS.
			caps = append(caps, "REQUIRETLS")
		}
		if sep == ' ' && len(caps) == 0 {
			w.emit("250 " + host + " hello " + d)
			return
		}
		w.emit("250-" + host + " hello " + d)
		for i, c := range caps {
			if i == len(caps)-1 && sep == ' ' {
				w.emit("250 " + c)
			} else {
				w.emit("250-" + c)
			}
		}
		return
	case w.inEHLO:
		if sep == ' ' {
			w.inEHLO = false
		}
		if text == "SIZE" || strings.HasPrefix(text, "SIZE ") {
			text = "SIZE " + strconv.FormatInt(w.s.cfg.maxSize(), 10)
		}
		w.emit(line[:4] + text)
		return
	case code == 250 && w.verb == "HELO":
		d := w.arg
		w.s.hello(d, false)
		w.emit("250 " + host + " hello " + d)
		return
	case w.verb == "STARTTLS" && code >= 400 && sep == ' ':
		// The engine, told nothing of TLS, refuses it: ours to answer.
		if w.startTLS() {
			return
		}
		code, text = w.lastTLSReply()
	case code == 502 && strings.HasPrefix(text, "5.5.4 "):
		// A missing or bad argument: RFC 5321 §4.2.4's 501.
		code = 501
	case code == 502 && !notImplemented(w.verb):
		code = 503
	case code == 235:
		// RFC 4954 §6.
		text = "2.7.0 authentication succeeded"
	}
	w.countError(code, sep, text)
}

// countError emits a reply line, and counts it when it is the last line
// of an error: past MaxErrors the client is cut off. Each error carries
// the connection id.
func (w *wire) countError(code int, sep byte, text string) {
	// RFC 5321 s. 4.5.3.1.10: a client may be sent 452 for recipients
	// past the limit and send them again in another transaction; that is
	// the limit working, not the client erring.
	if sep == ' ' && code >= 400 && !(code == 452 && w.verb == "RCPT") {
		w.errors++
		if !strings.Contains(text, "cid=") {
			text += " cid=" + w.s.peer.ID
		}
		if w.errors >= w.s.cfg.maxErrors() {
			w.cutOff = true
		}
	}
	w.emit(strconv.Itoa(code) + string(sep) + text)
}

// startTLS answers STARTTLS (RFC 3207). It reports whether TLS is now on;
// if not, lastTLSReply says why.
func (w *wire) startTLS() bool {
	if !w.s.canStartTLS() {
		return false
	}
	if w.s.busy() {
		return false
	}
	w.emit("220 2.0.0 ready to start TLS")
	w.flush()
	if w.err != nil {
		return true
	}
	// Whatever the client sent after STARTTLS, in the clear, must not
	// be read as coming through TLS.
	w.in = nil
	if err := w.c.StartTLS(w.s.cfg.TLS); err != nil {
		w.s.log().Info("TLS handshake failed", "err", err)
		w.dead = true
		return true
	}
	w.s.tlsStarted()
	return true
}

func (w *wire) lastTLSReply() (int, string) {
	switch {
	case w.s.cfg.TLS == nil:
		return 502, "5.5.1 STARTTLS not available here"
	case w.s.isTLS():
		return 503, "5.5.1 TLS is already on"
	default:
		return 503, "5.5.1 STARTTLS must come before MAIL and AUTH"
	}
}

// Close implements net.Conn for the engine; the connection itself is
// closed by whoever called Serve.
func (w *wire) Close() error {
	w.once.Do(func() {
		w.flush()
		close(w.closed)
	})
	return nil
}

func (w *wire) LocalAddr() net.Addr  { return w.c.LocalAddr() }
func (w *wire) RemoteAddr() net.Addr { return w.c.RemoteAddr() }

// The engine's own deadlines are off (Serve sets its timeouts to zero);
// serve.Conn keeps the per-read ones.
func (w *wire) SetDeadline(t time.Time) error      { return w.c.SetDeadline(t) }
func (w *wire) SetReadDeadline(t time.Time) error  { return w.c.SetReadDeadline(t) }
func (w *wire) SetWriteDeadline(t time.Time) error { return w.c.SetWriteDeadline(t) }
