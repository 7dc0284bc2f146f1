package smtpd

import (
	"bytes"
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// wire stands between go-smtp and the client. go-smtp has no hook for
// its replies or for STARTTLS on a connection it did not wrap itself, so
// the corrections are made here, on the bytes:
//
//   - reads hand the engine at most one line each, so that its buffer
//     never holds what the client sent after a command; at STARTTLS the
//     rest of ours is thrown away (CVE-2011-0411, RFC 3207 §4.2);
//   - STARTTLS is answered here, through serve.Conn, whose handshake has
//     the per-read deadlines (the engine is told nothing of TLS and so
//     answers "502 TLS not supported", which is the cue);
//   - the greeting and the first EHLO line name this host, as RFC 5321
//     §4.2 has it; SIZE announces the true limit (the engine is given one
//     more byte: see Serve);
//   - replies are written when the engine next waits for the client, so
//     a turn is one segment however many lines go-smtp wrote;
//   - every error reply carries the connection id, and is counted: past
//     MaxErrors the client gets 421 and is cut off;
//   - 502 for a command out of sequence becomes 503 (RFC 5321 §4.2.4:
//     502 is for commands not implemented), and a bad base64 SASL line is
//     501, not the engine's temporary 454; AUTH success is 235 2.7.0.
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
	cutOff  bool
	dead    bool
	err     error

	closed chan struct{}
	once   sync.Once
}

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
			w.s.log().Info("timeout", "in_data", w.s.inData.Load())
		}
		return 0, err
	}
	k := bytes.IndexByte(w.in, '\n') + 1
	if k == 0 {
		k = len(w.in)
	}
	k = min(k, len(p))
	copy(p, w.in[:k])
	w.in = w.in[k:]
	return k, nil
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
	if len(w.batch) == 0 || w.err != nil {
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
	switch {
	case !w.greeted && code == 220:
		w.greeted = true
		w.emit("220 " + host + " ESMTP tern ready cid=" + w.s.peer.ID)
		return
	case code == 250 && sep == '-' && !w.inEHLO && strings.HasPrefix(text, "Hello "):
		w.inEHLO = true
		d := strings.TrimPrefix(text, "Hello ")
		w.s.hello(d, true)
		w.emit("250-" + host + " hello " + d)
		if w.s.canStartTLS() {
			w.emit("250-STARTTLS")
		}
		if w.s.isTLS() {
			// RFC 8689 §4: only over TLS.
			w.emit("250-REQUIRETLS")
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
	case code == 250 && sep == ' ' && strings.HasPrefix(text, "2.0.0 Hello "):
		d := strings.TrimPrefix(text, "2.0.0 Hello ")
		w.s.hello(d, false)
		w.emit("250 " + host + " hello " + d)
		return
	case code == 502 && text == "5.5.1 TLS not supported":
		if w.startTLS() {
			return
		}
		code, text = w.lastTLSReply()
	case code == 502 && strings.HasPrefix(text, "5.5.4 "):
		code = 501
	case code == 502 && !strings.HasSuffix(text, "command not implemented"):
		code = 503
	case code == 235:
		// RFC 4954 §6.
		text = "2.7.0 authentication succeeded"
	case code == 454 && text == "4.7.0 Invalid base64 data":
		code, text = 501, "5.5.2 invalid base64 data"
	}
	if sep == ' ' && code >= 400 {
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
