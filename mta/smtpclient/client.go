// Package smtpclient is the client side of one SMTP connection, as an MTA
// relaying to another needs it (RFC 5321): EHLO with our own name before
// and after STARTTLS, HELO when EHLO is refused, opportunistic or required
// STARTTLS with the caller's tls.Config, AUTH over TLS only, MAIL and RCPT
// with the parameters of SIZE, 8BITMIME, SMTPUTF8, DSN and REQUIRETLS,
// PIPELINING (RSET, MAIL, the RCPTs and DATA in one write), a reply kept
// for every recipient, DATA streamed with CRLF line ends and dot-stuffing,
// a deadline for every step, and the 7-bit conversion a server without
// 8BITMIME needs.
//
// Why it is written over bufio and not go-smtp's Client (as mox does):
// go-smtp v0.26.0's client has no opportunistic STARTTLS (it fails when
// STARTTLS is not offered), says "EHLO localhost" before STARTTLS whatever
// name it is given, stops at the first refused recipient, sets no deadline
// while the body is written, and does not pipeline. Each of these is what
// an MX client needs, so the conversation is ours; go-smtp's types
// (SMTPError, EnhancedCode) carry replies out as errors, and go-sasl's
// clients do the AUTH exchanges.
//
// A Client is used by one goroutine at a time; only Abort may be called
// from another.
package smtpclient

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
)

// Options are the client's name and its time limits. A zero duration
// means the default, which is RFC 5321 §4.5.3.2's.
type Options struct {
	Hostname string // the name this host gives in EHLO and HELO

	GreetingTimeout  time.Duration // the 220 greeting: 5 min (§4.5.3.2.1)
	EHLOTimeout      time.Duration // EHLO or HELO: 5 min, as MAIL (§4.5.3.2 names none)
	MailTimeout      time.Duration // MAIL: 5 min (§4.5.3.2.2)
	RcptTimeout      time.Duration // each RCPT: 5 min (§4.5.3.2.3)
	DataInitTimeout  time.Duration // DATA to its 354: 2 min (§4.5.3.2.4)
	DataBlockTimeout time.Duration // each block of the text written: 3 min (§4.5.3.2.5)
	DataEndTimeout   time.Duration // the final dot to its reply: 10 min (§4.5.3.2.6)
	CommandTimeout   time.Duration // STARTTLS with its handshake, AUTH, RSET, QUIT: 5 min

	MaxReplyLines int // lines in one reply; 0 means 100
}

// Defaults of Options.
const (
	DefaultGreetingTimeout  = 5 * time.Minute
	DefaultEHLOTimeout      = 5 * time.Minute
	DefaultMailTimeout      = 5 * time.Minute
	DefaultRcptTimeout      = 5 * time.Minute
	DefaultDataInitTimeout  = 2 * time.Minute
	DefaultDataBlockTimeout = 3 * time.Minute
	DefaultDataEndTimeout   = 10 * time.Minute
	DefaultCommandTimeout   = 5 * time.Minute
	DefaultMaxReplyLines    = 100
)

// MaxReplyLine bounds one line of a reply, line end included. RFC 5321
// §4.5.3.1.5 allows 512 octets; servers that write longer lines exist.
const MaxReplyLine = 4096

// bodyBuffer is the size of the writes to the connection while the text
// goes out.
const bodyBuffer = 32 << 10

func (o *Options) fill() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.GreetingTimeout, DefaultGreetingTimeout)
	def(&o.EHLOTimeout, DefaultEHLOTimeout)
	def(&o.MailTimeout, DefaultMailTimeout)
	def(&o.RcptTimeout, DefaultRcptTimeout)
	def(&o.DataInitTimeout, DefaultDataInitTimeout)
	def(&o.DataBlockTimeout, DefaultDataBlockTimeout)
	def(&o.DataEndTimeout, DefaultDataEndTimeout)
	def(&o.CommandTimeout, DefaultCommandTimeout)
	if o.MaxReplyLines <= 0 {
		o.MaxReplyLines = DefaultMaxReplyLines
	}
}

// ReplyError is a negative reply to a command. It unwraps to go-smtp's
// *smtp.SMTPError.
type ReplyError struct {
	Command string // the verb: "EHLO", "MAIL", "DATA", ...
	Reply   Reply
}

func (e *ReplyError) Error() string { return e.Command + " answered " + e.Reply.String() }
func (e *ReplyError) Unwrap() error { return e.Reply.Err() }

// BodyError is a failure to read the message text while DATA was under
// way: a local fault, not the server's. The connection was closed without
// the final dot, so nothing was delivered.
type BodyError struct{ Err error }

func (e *BodyError) Error() string { return "reading the message: " + e.Err.Error() }
func (e *BodyError) Unwrap() error { return e.Err }

// ErrAuthWithoutTLS refuses to send credentials over a connection that is
// not encrypted.
var ErrAuthWithoutTLS = errors.New("AUTH refused: the connection is not encrypted, credentials are sent only over TLS")

// Client is one SMTP connection.
type Client struct {
	conn     net.Conn // the TCP connection, or the TLS one over it
	br       *bufio.Reader
	bw       *bufio.Writer
	o        Options
	greeting Reply
	ext      Extensions
	tls      *tls.ConnectionState
	aborted  atomic.Bool
	cmd      []byte // a command line being built
}

// New reads the server's greeting on conn (RFC 5321 §3.1). A greeting
// other than 220 is returned as a *ReplyError after QUIT is sent; the
// connection is then closed.
func New(conn net.Conn, o Options) (*Client, error) {
	o.fill()
	if o.Hostname == "" {
		return nil, errors.New("smtpclient: no hostname to give in EHLO")
	}
	c := &Client{conn: conn, o: o}
	c.br = bufio.NewReaderSize(conn, MaxReplyLine)
	c.bw = bufio.NewWriterSize(conn, bodyBuffer)
	c.setDeadline(o.GreetingTimeout)
	r, err := readReply(c.br, o.MaxReplyLines)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("reading the greeting: %w", err)
	}
	c.greeting = r
	if r.Code != 220 {
		// RFC 5321 §3.1: after a 554 greeting the client sends QUIT; a 421
		// server closes by itself, and QUIT costs nothing then.
		c.quit()
		return nil, &ReplyError{Command: "greeting", Reply: r}
	}
	return c, nil
}

// Greeting is the server's 220 reply.
func (c *Client) Greeting() Reply { return c.greeting }

// Extensions is what the last EHLO offered.
func (c *Client) Extensions() Extensions { return c.ext }

// TLS returns the state of the TLS session, or nil before STARTTLS.
func (c *Client) TLS() *tls.ConnectionState { return c.tls }

// Conn is the connection the client speaks over.
func (c *Client) Conn() net.Conn { return c.conn }

// Abort makes the call under way, and every later one, fail at once; the
// caller then closes the client. It is how a cancelled context reaches a
// blocked read or write.
func (c *Client) Abort() {
	c.aborted.Store(true)
	c.conn.SetDeadline(time.Unix(1, 0))
}

func (c *Client) setDeadline(d time.Duration) {
	if c.aborted.Load() {
		return
	}
	c.conn.SetDeadline(time.Now().Add(d))
}

// command writes one command line and flushes.
func (c *Client) command(timeout time.Duration, format string, args ...any) error {
	c.setDeadline(timeout)
	c.cmd = fmt.Appendf(c.cmd[:0], format, args...)
	c.cmd = append(c.cmd, '\r', '\n')
	if _, err := c.bw.Write(c.cmd); err != nil {
		return err
	}
	return c.bw.Flush()
}

// do sends one command and reads its reply; a reply other than want is a
// *ReplyError, returned with the reply.
func (c *Client) do(timeout time.Duration, want int, verb, format string, args ...any) (Reply, error) {
	if err := c.command(timeout, format, args...); err != nil {
		return Reply{}, fmt.Errorf("sending %s: %w", verb, err)
	}
	r, err := readReply(c.br, c.o.MaxReplyLines)
	if err != nil {
		return Reply{}, fmt.Errorf("reading the reply to %s: %w", verb, err)
	}
	if r.Code != want {
		return r, &ReplyError{Command: verb, Reply: r}
	}
	return r, nil
}

// Hello sends EHLO with the configured name, and HELO when EHLO gets a
// permanent refusal (RFC 5321 §3.2; a server too old for EHLO answers 500
// or 502).
func (c *Client) Hello() error {
	r, err := c.do(c.o.EHLOTimeout, 250, "EHLO", "EHLO %s", c.o.Hostname)
	if err == nil {
		c.ext = parseEHLO(r)
		return nil
	}
	var re *ReplyError
	if !errors.As(err, &re) || r.Code < 500 {
		return err
	}
	if _, err := c.do(c.o.EHLOTimeout, 250, "HELO", "HELO %s", c.o.Hostname); err != nil {
		return err
	}
	c.ext = Extensions{}
	return nil
}

// StartTLS sends STARTTLS (RFC 3207), makes the TLS handshake with cfg,
// and says EHLO again, as §4.2 requires: what the server offered before is
// forgotten. On an error the connection is of no further use.
func (c *Client) StartTLS(cfg *tls.Config) error {
	if _, err := c.do(c.o.CommandTimeout, 220, "STARTTLS", "STARTTLS"); err != nil {
		return err
	}
	if c.br.Buffered() > 0 {
		// RFC 3207 §5 / the STARTTLS injection attacks (CVE-2011-0411): a
		// server that sent more than its 220 before the handshake is not to
		// be trusted with what follows.
		return fmt.Errorf("%w: data after the 220 to STARTTLS", ErrProtocol)
	}
	tc := tls.Client(c.conn, cfg)
	c.setDeadline(c.o.CommandTimeout)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	st := tc.ConnectionState()
	c.conn, c.tls = tc, &st
	c.br.Reset(tc)
	c.bw.Reset(tc)
	c.ext = Extensions{}
	return c.Hello()
}

// Auth authenticates with a SASL mechanism (RFC 4954), only over TLS.
func (c *Client) Auth(a sasl.Client) error {
	if c.tls == nil {
		return ErrAuthWithoutTLS
	}
	mech, ir, err := a.Start()
	if err != nil {
		return fmt.Errorf("AUTH: %w", err)
	}
	var r Reply
	switch {
	case ir == nil:
		r, err = c.do(c.o.CommandTimeout, 0, "AUTH", "AUTH %s", mech)
	case len(ir) == 0:
		// RFC 4954 §4: "=" is an empty initial response.
		r, err = c.do(c.o.CommandTimeout, 0, "AUTH", "AUTH %s =", mech)
	default:
		r, err = c.do(c.o.CommandTimeout, 0, "AUTH", "AUTH %s %s", mech, base64.StdEncoding.EncodeToString(ir))
	}
	// Each challenge gets one response; a server that goes on for more
	// rounds than any mechanism we use has is refused.
	for round := 0; ; round++ {
		var re *ReplyError
		if err != nil && !errors.As(err, &re) {
			return err
		}
		switch {
		case r.Code == 235:
			return nil
		case r.Code != 334:
			return &ReplyError{Command: "AUTH", Reply: r}
		case round == 8:
			return fmt.Errorf("%w: AUTH did not end after %d challenges", ErrProtocol, round)
		}
		var chal []byte
		if len(r.Lines) > 0 {
			chal, err = base64.StdEncoding.DecodeString(r.Lines[0])
			if err != nil {
				return fmt.Errorf("%w: AUTH challenge is not base64", ErrProtocol)
			}
		}
		resp, err2 := a.Next(chal)
		if err2 != nil {
			c.do(c.o.CommandTimeout, 0, "AUTH", "*") // RFC 4954 §4: cancel
			return fmt.Errorf("AUTH: %w", err2)
		}
		r, err = c.do(c.o.CommandTimeout, 0, "AUTH", "%s", base64.StdEncoding.EncodeToString(resp))
	}
}

// Rcpt is one RCPT TO: the address and its parameters ("NOTIFY=FAILURE").
type Rcpt struct {
	Addr   string
	Params []string
}

// Transaction is the envelope of one mail transaction.
type Transaction struct {
	// Reset sends RSET first, in the same pipelined group when the server
	// pipelines: what a reused connection does before its next message.
	Reset      bool
	From       string   // the reverse-path without <>; "" is the null sender
	FromParams []string // MAIL parameters: "SIZE=1234", "BODY=8BITMIME"
	Rcpts      []Rcpt
	// Data sends DATA last in the group when the server pipelines
	// (RFC 2920 §3.1 allows it there), saving a round trip a message;
	// EnvelopeReplies.Data then holds its reply, and after a 354 the text
	// goes with Text. Without PIPELINING it is ignored: Data does it all.
	Data bool
}

// Envelope's outcome: the MAIL reply, and a reply for each recipient, in
// order. Rcpts is nil when MAIL was refused and the RCPTs were not sent.
type EnvelopeReplies struct {
	Mail  Reply
	Rcpts []Reply
	// Data is the reply to a pipelined DATA; its Code is 0 when DATA was
	// not sent. After a 354 the client must send a text with Text, even
	// when no recipient was taken (RFC 2920 §3.1).
	Data Reply
}

// ErrResetFailed means RSET failed on a reused connection: it is dead or
// confused, and nothing of the transaction was accepted.
var ErrResetFailed = errors.New("RSET failed")

// Envelope sends RSET (if asked), MAIL and the RCPTs. With PIPELINING
// (RFC 2920 §3.1) they go out in one write and the replies are read in
// order; otherwise one at a time, and no RCPT after a refused MAIL. An
// error is an I/O failure or a broken reply: the connection is then of no
// further use, and the replies read so far are returned.
func (c *Client) Envelope(tx *Transaction) (EnvelopeReplies, error) {
	var out EnvelopeReplies
	if !c.ext.Pipelining {
		if tx.Reset {
			if err := c.Reset(); err != nil {
				return out, fmt.Errorf("%w: %w", ErrResetFailed, err)
			}
		}
		r, err := c.do(c.o.MailTimeout, 250, "MAIL", "%s", mailLine(nil, tx))
		var re *ReplyError
		if err != nil && !errors.As(err, &re) {
			return out, err
		}
		out.Mail = r
		if re != nil {
			return out, nil
		}
		out.Rcpts = make([]Reply, 0, len(tx.Rcpts))
		for _, rc := range tx.Rcpts {
			r, err := c.do(c.o.RcptTimeout, 250, "RCPT", "%s", rcptLine(nil, rc))
			if err != nil && !errors.As(err, &re) {
				return out, err
			}
			out.Rcpts = append(out.Rcpts, r)
		}
		return out, nil
	}
	c.setDeadline(c.o.MailTimeout)
	if tx.Reset {
		c.bw.WriteString("RSET\r\n")
	}
	c.cmd = mailLine(c.cmd[:0], tx)
	c.cmd = append(c.cmd, '\r', '\n')
	for _, rc := range tx.Rcpts {
		c.cmd = rcptLine(c.cmd, rc)
		c.cmd = append(c.cmd, '\r', '\n')
	}
	if tx.Data {
		c.cmd = append(c.cmd, "DATA\r\n"...)
	}
	c.bw.Write(c.cmd)
	if err := c.bw.Flush(); err != nil {
		if tx.Reset {
			return out, fmt.Errorf("%w: sending MAIL: %w", ErrResetFailed, err)
		}
		return out, fmt.Errorf("sending MAIL: %w", err)
	}
	if tx.Reset {
		r, err := readReply(c.br, c.o.MaxReplyLines)
		if err == nil && r.Code != 250 {
			err = &ReplyError{Command: "RSET", Reply: r}
		}
		if err != nil {
			return out, fmt.Errorf("%w: %w", ErrResetFailed, err)
		}
	}
	r, err := readReply(c.br, c.o.MaxReplyLines)
	if err != nil {
		return out, fmt.Errorf("reading the reply to MAIL: %w", err)
	}
	out.Mail = r
	out.Rcpts = make([]Reply, 0, len(tx.Rcpts))
	for range tx.Rcpts {
		c.setDeadline(c.o.RcptTimeout)
		r, err := readReply(c.br, c.o.MaxReplyLines)
		if err != nil {
			return out, fmt.Errorf("reading the reply to RCPT: %w", err)
		}
		out.Rcpts = append(out.Rcpts, r)
	}
	if tx.Data {
		c.setDeadline(c.o.DataInitTimeout)
		r, err := readReply(c.br, c.o.MaxReplyLines)
		if err != nil {
			return out, fmt.Errorf("reading the reply to DATA: %w", err)
		}
		out.Data = r
	}
	if out.Mail.Code != 250 {
		// RFC 2920 §3.1: the RCPT replies of a refused MAIL mean nothing.
		out.Rcpts = nil
	}
	return out, nil
}

func mailLine(b []byte, tx *Transaction) []byte {
	b = append(b, "MAIL FROM:<"...)
	b = append(b, tx.From...)
	b = append(b, '>')
	for _, p := range tx.FromParams {
		b = append(b, ' ')
		b = append(b, p...)
	}
	return b
}

func rcptLine(b []byte, rc Rcpt) []byte {
	b = append(b, "RCPT TO:<"...)
	b = append(b, rc.Addr...)
	b = append(b, '>')
	for _, p := range rc.Params {
		b = append(b, ' ')
		b = append(b, p...)
	}
	return b
}

// Data sends DATA and, after the 354, the message text that write writes
// (LF or CRLF line ends; the client converts to CRLF and dot-stuffs),
// then the final dot, and returns the reply to it. The connection's
// deadline is renewed as the text goes out, so a slow but moving
// transfer is not cut off while a stalled one is (RFC 5321 §4.5.3.2.5).
// A negative reply is a *ReplyError returned with the reply; an error from
// write is a *BodyError, and the connection is closed without the final
// dot so that half a message is never delivered.
func (c *Client) Data(write func(w io.Writer) error) (Reply, error) {
	if r, err := c.do(c.o.DataInitTimeout, 354, "DATA", "DATA"); err != nil {
		return r, err
	}
	return c.Text(write)
}

// Text sends the message text and the final dot after a 354 to a DATA
// sent in the envelope's group, and returns the reply, as Data does.
func (c *Client) Text(write func(w io.Writer) error) (Reply, error) {
	dw := newDotWriter(c.bw)
	rw := &renewingWriter{c: c, w: dw}
	c.setDeadline(c.o.DataBlockTimeout)
	rw.renewed = time.Now()
	if err := write(rw); err != nil {
		if rw.err != nil {
			return Reply{}, fmt.Errorf("sending the message: %w", rw.err)
		}
		c.conn.Close()
		return Reply{}, &BodyError{Err: err}
	}
	if err := dw.Close(); err != nil {
		return Reply{}, fmt.Errorf("sending the message: %w", err)
	}
	c.setDeadline(c.o.DataEndTimeout)
	if err := c.bw.Flush(); err != nil {
		return Reply{}, fmt.Errorf("sending the message: %w", err)
	}
	r, err := readReply(c.br, c.o.MaxReplyLines)
	if err != nil {
		return Reply{}, fmt.Errorf("reading the reply to the final dot: %w", err)
	}
	if r.Code != 250 {
		return r, &ReplyError{Command: "DATA", Reply: r}
	}
	return r, nil
}

// Copy is a write function for Data that copies r through buf, which the
// caller lends for the time of the copy (a pool of them spares an
// allocation a message).
func Copy(r io.Reader, buf []byte) func(io.Writer) error {
	return func(w io.Writer) error {
		for {
			n, err := r.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return werr
				}
			}
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
}

// renewingWriter is what the text is written to: it renews the
// connection's deadline for the next block, once a second at most, and
// keeps the connection's write errors apart from the text's read errors.
type renewingWriter struct {
	c       *Client
	w       io.Writer
	renewed time.Time
	err     error
}

func (r *renewingWriter) Write(p []byte) (int, error) {
	if now := time.Now(); now.Sub(r.renewed) > time.Second {
		r.c.setDeadline(r.c.o.DataBlockTimeout)
		r.renewed = now
	}
	n, err := r.w.Write(p)
	if err != nil {
		r.err = err
	}
	return n, err
}

// Reset sends RSET (RFC 5321 §4.1.1.5).
func (c *Client) Reset() error {
	_, err := c.do(c.o.CommandTimeout, 250, "RSET", "RSET")
	return err
}

// Quit sends QUIT (RFC 5321 §4.1.1.10), waits for its reply, and closes
// the connection.
func (c *Client) Quit() error { return c.quit() }

func (c *Client) quit() error {
	_, err := c.do(c.o.CommandTimeout, 221, "QUIT", "QUIT")
	c.conn.Close()
	return err
}

// Close closes the connection without QUIT.
func (c *Client) Close() error { return c.conn.Close() }
