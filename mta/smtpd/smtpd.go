// Package smtpd is tern-smtpd: one ESMTP conversation per connection, with
// every message handed to the queue through a pipe (tern-enqueue, or a
// filter in front of it) and answered 250 only once that pipe said the
// message is on disk.
//
// The protocol engine is github.com/emersion/go-smtp. It is built for a
// trusting world, so this package stands between it and the client (see
// wire.go): it answers STARTTLS itself (through serve.Conn, so the TLS
// handshake has our deadlines and nothing sent in the clear after
// STARTTLS survives it), hands the engine one line per read, puts the
// connection id in every error reply, counts errors, and corrects the
// replies the engine gets wrong. The message itself is checked here, byte
// by byte, before any of it reaches the queue (message.go): bare CR, bare
// LF and NUL are refused, which closes SMTP smuggling (CVE-2023-51764).
package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/tern-mail/tern/internal/auth"
	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/internal/serve"
)

// Mode is what the port is for.
type Mode int

const (
	// MX receives mail for the local domains from anyone, and relays for
	// the relay networks, RELAYCLIENT and authenticated users (port 25).
	MX Mode = iota
	// Submission takes mail only from authenticated users (port 587, and
	// 465 with implicit TLS; RFC 6409).
	Submission
)

func (m Mode) String() string {
	if m == Submission {
		return "submission"
	}
	return "mx"
}

// ParseMode reads "mx" or "submission".
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(s) {
	case "mx", "smtp":
		return MX, nil
	case "submission", "msa":
		return Submission, nil
	}
	return 0, errors.New("unknown mode " + s + ": want mx or submission")
}

// Limits from RFC 5321 §4.5.3 and tern's defaults.
const (
	// MaxLine is the longest line, CRLF included (RFC 5321 §4.5.3.1.6).
	MaxLine = 1000
	// DefaultMaxSize is the default --max-size: 35 MB, what Gmail and
	// Outlook accept, so mail that reaches them reaches us.
	DefaultMaxSize = 35 << 20
	// DefaultMaxRecipients is the default --max-recipients: Postfix's
	// smtpd_recipient_limit. RFC 5321 §4.5.3.1.8 asks for at least 100;
	// a mailing list's message to more was refused whole at 100.
	DefaultMaxRecipients = 1000
	// DefaultMaxErrors is how many error replies a client gets before it
	// is cut off, as Postfix's smtpd_hard_error_limit.
	DefaultMaxErrors = 20
	// Idle is the server's timeout waiting for the client: RFC 5321
	// §4.5.3.2.7 asks for at least 5 minutes.
	Idle = 5 * time.Minute
)

// Config is what every conversation of one server shares.
type Config struct {
	Mode Mode
	// Conf is the control directory: hostname, domains, users, aliases,
	// relay networks.
	Conf *conf.Conf
	// Control, when set, gives each connection the control directory as
	// it is then (a conf.Watcher's Current), in place of Conf.
	Control func() *conf.Conf
	// Auth checks passwords; nil offers no AUTH.
	Auth auth.Authenticator
	// Enqueue takes accepted messages.
	Enqueue Enqueuer
	// TLS, when set, is offered through STARTTLS.
	TLS *tls.Config
	// MaxSize, MaxRecipients, MaxErrors: zero means the defaults.
	MaxSize       int64
	MaxRecipients int
	MaxErrors     int
	// GreetDelay is how long to wait before the greeting, watching for
	// clients that talk first (RFC 5321 §4.3.1 has the client wait for
	// it; spam engines often do not). Zero skips the check.
	GreetDelay time.Duration
	// InsecureAuth accepts passwords without TLS from anywhere: for a
	// server behind a TLS wrapper that reaches it over pipes.
	InsecureAuth bool
	// RelayClient is RELAYCLIENT being set in the environment, the
	// tcpserver way of granting relaying.
	RelayClient bool
	// LookupAddr and LookupHost resolve the client's name for the
	// Received line (a net.Resolver's methods); nil skips it.
	LookupAddr func(ctx context.Context, addr string) ([]string, error)
	LookupHost func(ctx context.Context, host string) ([]string, error)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// TempDir holds messages too large to keep in memory while they are
	// checked; "" means os.TempDir.
	TempDir string
}

// Conn is one client connection: serve.Conn is one.
type Conn interface {
	net.Conn
	StartTLS(cfg *tls.Config) error
	TLSState() (tls.ConnectionState, bool)
}

// Peer is what is known of the client before it says anything.
type Peer struct {
	ID     string         // connection id, on every log line and error reply
	Remote netip.AddrPort // the client's address; zero when unknown
	Host   string         // its name when the super-server looked it up (TCPREMOTEHOST)
	Log    *slog.Logger
}

func (cfg *Config) maxSize() int64 {
	if cfg.MaxSize > 0 {
		return cfg.MaxSize
	}
	return DefaultMaxSize
}

func (cfg *Config) maxRecipients() int {
	if cfg.MaxRecipients > 0 {
		return cfg.MaxRecipients
	}
	return DefaultMaxRecipients
}

func (cfg *Config) maxErrors() int {
	if cfg.MaxErrors > 0 {
		return cfg.MaxErrors
	}
	return DefaultMaxErrors
}

func (cfg *Config) now() time.Time {
	if cfg.Now != nil {
		return cfg.Now()
	}
	return time.Now()
}

// Serve holds one SMTP conversation on c and returns when it is over.
// The caller closes c.
func (cfg *Config) Serve(ctx context.Context, c Conn, p Peer) error {
	if p.Log == nil {
		p.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Control != nil {
		now := *cfg
		now.Conf = cfg.Control()
		cfg = &now
	}
	host := cfg.Conf.Hostname
	if cfg.GreetDelay > 0 {
		talked, err := earlyTalker(c, cfg.GreetDelay)
		if err != nil {
			return err
		}
		if talked {
			p.Log.Info("rejected early talker", "remote", p.Remote.Addr())
			return refuseEarlyTalker(c, host, p.ID)
		}
	}

	s := newSession(ctx, cfg, c, p)
	w := newWire(ctx, c, s)
	s.wire = w
	srv := smtp.NewServer(backend{s})
	srv.Domain = host
	// go-smtp refuses a message of exactly MaxMessageBytes, so it gets
	// one more and the session enforces the limit itself; the wire
	// announces the true limit in EHLO.
	srv.MaxMessageBytes = cfg.maxSize() + 1
	// The wire holds lines to MaxLine, and AUTH's to MaxAuthLine.
	srv.MaxLineLength = MaxAuthLine + 2
	srv.MaxRecipients = cfg.maxRecipients()
	// The session decides who may AUTH (it offers no mechanism on an
	// insecure connection), so the engine must not refuse on its own
	// idea of TLS, which never sees ours.
	srv.AllowInsecureAuth = true
	srv.EnableSMTPUTF8 = true
	// RFC 3461: the queue keeps NOTIFY, RET, ENVID and ORCPT, and
	// delivery honours them.
	srv.EnableDSN = true
	// RFC 8689: the engine parses the parameter; the session refuses it
	// without TLS, and the wire advertises it only over TLS (the engine
	// never sees ours, so it would not).
	srv.EnableREQUIRETLS = true
	// Timeouts are per read, in serve.Conn: the engine's ReadTimeout is
	// not renewed during DATA.
	srv.ReadTimeout, srv.WriteTimeout = 0, 0
	srv.ErrorLog = logAdapter{p.Log}

	ln := serve.Listener(w)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	var err error
	select {
	case <-w.closed:
	case err = <-done:
	}
	srv.Close()
	if err == nil {
		err = w.err
	}
	return err
}

// earlyTalker waits d for the client to say something before our greeting.
func earlyTalker(c Conn, d time.Duration) (bool, error) {
	c.SetReadDeadline(time.Now().Add(d))
	var b [1]byte
	n, err := c.Read(b[:])
	c.SetReadDeadline(time.Time{})
	switch {
	case n > 0:
		return true, nil
	case err == nil:
		return false, nil
	case isTimeout(err):
		return false, nil
	}
	return false, err
}

// refuseEarlyTalker answers 554 instead of 220. RFC 5321 §3.1 then has the
// server wait for QUIT, answering 503 to anything else, so it does, for a
// bounded number of lines.
func refuseEarlyTalker(c Conn, host, id string) error {
	if _, err := io.WriteString(c, "554 5.5.1 "+host+" protocol error: you talked before my greeting cid="+id+"\r\n"); err != nil {
		return err
	}
	r := &lineReader{r: c}
	for range 20 {
		line, err := r.line()
		if err != nil {
			return nil
		}
		if strings.EqualFold(strings.TrimSpace(line), "QUIT") {
			_, err := io.WriteString(c, "221 2.0.0 "+host+" closing connection\r\n")
			return err
		}
		if _, err := io.WriteString(c, "503 5.5.1 bad sequence of commands: only QUIT now cid="+id+"\r\n"); err != nil {
			return err
		}
	}
	return nil
}

// lineReader reads lines of at most MaxLine octets without buffering past
// them.
type lineReader struct {
	r   io.Reader
	buf []byte
}

func (l *lineReader) line() (string, error) {
	var b [512]byte
	for {
		if i := strings.IndexByte(string(l.buf), '\n'); i >= 0 {
			s := string(l.buf[:i])
			l.buf = l.buf[i+1:]
			return strings.TrimSuffix(s, "\r"), nil
		}
		if len(l.buf) > MaxLine {
			return "", errors.New("line too long")
		}
		n, err := l.r.Read(b[:])
		l.buf = append(l.buf, b[:n]...)
		if err != nil {
			return "", err
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// logAdapter sends go-smtp's own complaints (panics, odd errors) to the
// connection's log.
type logAdapter struct{ log *slog.Logger }

func (l logAdapter) Printf(format string, v ...any) {
	l.log.Warn("smtp engine: " + strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (l logAdapter) Println(v ...any) {
	l.log.Warn("smtp engine: " + strings.TrimSpace(fmt.Sprintln(v...)))
}

// DefaultGreetDelay is the pause before the greeting in mx mode: long
// enough to catch engines that do not wait, short enough that no sender
// notices.
const DefaultGreetDelay = time.Second
