package smtpd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/tern-mail/tern/internal/address"
	"github.com/tern-mail/tern/internal/auth"
	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/mta"
	"github.com/tern-mail/tern/mta/enqueue"
	"github.com/tern-mail/tern/mta/queue"
	"github.com/tern-mail/tern/mta/transport"
)

// Reserver is an Enqueuer that can tell, before a transaction, that its
// queue has no room for new mail (queue.ErrNoReserve).
type Reserver interface {
	Reserve(maxSize int64) error
}

// backend hands go-smtp the one session of the connection.
type backend struct{ s *session }

func (b backend) NewSession(*smtp.Conn) (smtp.Session, error) { return b.s, nil }

// session is the state of one conversation. The engine calls it from its
// own goroutine, and for BDAT runs Data in another, hence the lock.
type session struct {
	ctx  context.Context
	cfg  *Config
	conn Conn
	peer Peer
	wire *wire

	inData atomic.Bool

	rdnsDone chan struct{}
	rdnsName string

	mu       sync.Mutex
	heloName string
	esmtp    bool
	user     *auth.Account
	from     string
	fromSet  bool
	conv     enqueue.Conversation // MAIL FROM's parameters
	rcpts    []enqueue.Recipient
	messages int
}

func newSession(ctx context.Context, cfg *Config, c Conn, p Peer) *session {
	s := &session{ctx: ctx, cfg: cfg, conn: c, peer: p, rdnsDone: make(chan struct{})}
	go s.lookupName()
	return s
}

func (s *session) host() string      { return s.cfg.Conf.Hostname }
func (s *session) log() *slog.Logger { return s.peer.Log }
func (s *session) remote() netip.Addr {
	return s.peer.Remote.Addr().Unmap()
}

// lookupName finds the client's name for the Received line: the PTR
// record, if it resolves back to the address (forward-confirmed, as
// Postfix and Exim show it), else nothing.
func (s *session) lookupName() {
	defer close(s.rdnsDone)
	if s.peer.Host != "" {
		s.rdnsName = s.peer.Host
		return
	}
	ip := s.remote()
	if !ip.IsValid() || s.cfg.LookupAddr == nil {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	names, err := s.cfg.LookupAddr(ctx, ip.String())
	if err != nil {
		return
	}
	for _, n := range names[:min(len(names), 5)] {
		if s.cfg.LookupHost == nil {
			return
		}
		addrs, err := s.cfg.LookupHost(ctx, n)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if x, err := netip.ParseAddr(a); err == nil && x.Unmap() == ip {
				s.rdnsName = strings.TrimSuffix(n, ".")
				return
			}
		}
	}
}

func (s *session) tlsState() (string, bool) {
	st, ok := s.conn.TLSState()
	if !ok {
		return "", false
	}
	return tlsVersion(st.Version) + " " + tlsCipher(st.CipherSuite), true
}

func (s *session) isTLS() bool {
	_, ok := s.conn.TLSState()
	return ok
}

func (s *session) canStartTLS() bool { return s.cfg.TLS != nil && !s.isTLS() }

// busy: STARTTLS is refused in a transaction or after AUTH, rather than
// silently forgetting them.
func (s *session) busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fromSet || s.user != nil
}

// authSecure says whether passwords may be sent: over TLS, or in
// submission mode from loopback (a local webmail or a test), or anywhere
// when the administrator said so (behind a TLS wrapper that speaks to us
// over pipes). RFC 4954 §4 and RFC 8314 §3.
func (s *session) authSecure() bool {
	if s.isTLS() || s.cfg.InsecureAuth {
		return true
	}
	return s.cfg.Mode == Submission && s.remote().IsLoopback()
}

func (s *session) hello(domain string, esmtp bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.heloName, s.esmtp = domain, esmtp
}

// tlsStarted forgets everything learnt in the clear (RFC 3207 §4.2).
func (s *session) tlsStarted() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.heloName, s.esmtp = "", false
	s.user = nil
	s.from, s.fromSet, s.conv, s.rcpts = "", false, enqueue.Conversation{}, nil
	if v, ok := s.tlsState(); ok {
		s.log().Info("starttls", "tls", v)
	}
}

func (s *session) mayRelay() bool {
	return s.user != nil || s.cfg.RelayClient || (s.remote().IsValid() && s.cfg.Conf.Relay.Contains(s.remote()))
}

func smtpErr(code int, ec smtp.EnhancedCode, format string, args ...any) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: fmt.Sprintf(format, args...)}
}

// Mail implements smtp.Session.
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.heloName == "" {
		return smtpErr(503, smtp.EnhancedCode{5, 5, 1}, "send EHLO first")
	}
	if s.cfg.Mode == Submission && s.user == nil {
		// RFC 4954 §6.
		return smtpErr(530, smtp.EnhancedCode{5, 7, 0}, "authentication required")
	}
	if max := s.cfg.maxSize(); opts != nil && opts.Size > max {
		// RFC 1870 §6.1.
		return smtpErr(552, smtp.EnhancedCode{5, 3, 4}, "message size %d exceeds fixed maximum message size %d", opts.Size, max)
	}
	if from != "" {
		if _, err := address.Check(from); err != nil {
			return smtpErr(553, smtp.EnhancedCode{5, 1, 7}, "bad sender address syntax: %v", err)
		}
	}
	conv, err := s.mailParams(from, opts)
	if err != nil {
		return err
	}
	if r, ok := s.cfg.Enqueue.(Reserver); ok {
		if err := r.Reserve(s.cfg.maxSize()); errors.Is(err, queue.ErrNoReserve) {
			// RFC 5321 s. 4.5.3.1.10 and RFC 3463 4.3.1: asked at MAIL,
			// before the client sends anything, as Postfix does.
			s.log().Warn("queue full", "err", err)
			return smtpErr(452, smtp.EnhancedCode{4, 3, 1}, "insufficient system storage, try again later")
		}
	}
	if s.cfg.Mode == Submission && !s.owns(from) {
		s.log().Info("rejected", "from", "<"+from+">", "user", s.user.Name, "status", "553 5.7.1", "why", "sender not owned by user")
		return smtpErr(553, smtp.EnhancedCode{5, 7, 1}, "sender address <%s> is not one of %s's addresses", from, s.user.Name)
	}
	s.from, s.fromSet, s.rcpts = from, true, nil
	s.conv = conv
	// A client that begins a transaction is no idle squatter: near the
	// connection limit it keeps its place (Postfix's stress mode).
	s.trust()
	return nil
}

// trust tells the serving layer the client is at work (serve.Conn.Trust).
func (s *session) trust() {
	if t, ok := s.conn.(interface{ Trust() }); ok {
		t.Trust()
	}
}

// mailParams checks MAIL FROM's parameters beyond what the engine checks
// (it has parsed them, and refused malformed ones with 501 5.5.4) and
// returns them as the queue keeps them.
func (s *session) mailParams(from string, opts *smtp.MailOptions) (enqueue.Conversation, error) {
	var c enqueue.Conversation
	if opts == nil {
		opts = &smtp.MailOptions{}
	}
	c.SMTPUTF8 = opts.UTF8
	if !c.SMTPUTF8 && !mta.IsASCII(from) {
		// RFC 6531 §3.5.
		return c, smtpErr(553, smtp.EnhancedCode{5, 6, 7}, "non-ASCII address <%s> needs the SMTPUTF8 parameter", from)
	}
	if opts.RequireTLS && !s.isTLS() {
		// RFC 8689 §4: REQUIRETLS only over TLS, and it is advertised
		// only there.
		return c, smtpErr(530, smtp.EnhancedCode{5, 7, 10}, "REQUIRETLS needs TLS: STARTTLS first")
	}
	c.RequireTLS = opts.RequireTLS
	c.Body = string(opts.Body)
	c.Ret = string(opts.Return)
	if opts.EnvelopeID != "" {
		if err := mta.CheckEnvID(opts.EnvelopeID); err != nil {
			return c, smtpErr(501, smtp.EnhancedCode{5, 5, 4}, "malformed ENVID parameter: %v", err)
		}
		c.EnvID = opts.EnvelopeID
	}
	return c, nil
}

// rcptParams checks RCPT TO's DSN parameters (RFC 3461 §4.1, §4.2), as
// the engine parsed them, and returns the recipient as the queue keeps
// it.
func rcptParams(addr string, opts *smtp.RcptOptions) (enqueue.Recipient, error) {
	r := enqueue.Recipient{Addr: addr}
	if opts == nil {
		return r, nil
	}
	if len(opts.Notify) > 0 {
		words := make([]string, len(opts.Notify))
		for i, w := range opts.Notify {
			words[i] = string(w)
		}
		n, err := transport.ParseNotify(strings.Join(words, ","))
		if err != nil {
			return r, smtpErr(501, smtp.EnhancedCode{5, 5, 4}, "malformed NOTIFY parameter: %v", err)
		}
		r.Notify = n
	}
	if opts.OriginalRecipient != "" {
		// The engine has decoded it, but lets a "utf-8" address carry
		// controls (\x{9} becomes a TAB) and any length: the queue's
		// bounds are checked here.
		o, err := mta.CheckORcpt(string(opts.OriginalRecipientType) + ";" + opts.OriginalRecipient)
		if err != nil {
			return r, smtpErr(501, smtp.EnhancedCode{5, 5, 4}, "malformed ORCPT parameter: %v", err)
		}
		r.ORcpt = o
	}
	return r, nil
}

// owns says whether the authenticated user may send as from: their own
// address (with or without a subaddress), or an alias that leads to them.
func (s *session) owns(from string) bool {
	if from == "" || s.user == nil {
		return false
	}
	name := strings.ToLower(s.user.Name)
	if strings.EqualFold(from, name) {
		return true
	}
	local, domain := address.Split(from)
	if !strings.Contains(name, "@") && domain != "" && s.cfg.Conf.IsLocalDomain(domain) {
		base, _, _ := strings.Cut(local, conf.RecipientDelimiter)
		if strings.EqualFold(base, name) {
			return true
		}
	}
	r, err := s.cfg.Conf.LookupUser(from)
	if err != nil {
		return false
	}
	return s.leadsTo(r, name, 0)
}

// leadsTo follows aliases to local users, to a bounded depth.
func (s *session) leadsTo(r *conf.Recipient, name string, depth int) bool {
	if r.Account != nil {
		return strings.EqualFold(r.Account.Name, name)
	}
	if r.Alias == nil || depth > 8 {
		return false
	}
	for _, t := range r.Alias.Targets {
		if t.Kind != conf.TargetLocal && t.Kind != conf.TargetAddress {
			continue
		}
		next, err := s.cfg.Conf.LookupUser(t.Value)
		if err == nil && s.leadsTo(next, name, depth+1) {
			return true
		}
	}
	return false
}

// Rcpt implements smtp.Session. Local recipients are checked now, so that
// mail for nobody is refused in the conversation and never bounced later
// to a forged sender (backscatter).
func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.fromSet {
		return smtpErr(503, smtp.EnhancedCode{5, 5, 1}, "need MAIL before RCPT")
	}
	addr, err := address.Check(to)
	if err != nil {
		return smtpErr(553, smtp.EnhancedCode{5, 1, 3}, "bad recipient address syntax: %v", err)
	}
	if !s.conv.SMTPUTF8 && !mta.IsASCII(to) {
		// RFC 6531 §3.5.
		return smtpErr(553, smtp.EnhancedCode{5, 6, 7}, "non-ASCII address <%s> needs MAIL FROM with SMTPUTF8", to)
	}
	rcpt, err := rcptParams(to, opts)
	if err != nil {
		return err
	}
	local, domain := address.Split(addr)
	if domain == "" && !strings.EqualFold(local, "postmaster") {
		// RFC 5321 §4.1.1.3: only Postmaster may come without a domain.
		return smtpErr(553, smtp.EnhancedCode{5, 1, 3}, "recipient address <%s> needs a domain", to)
	}
	if domain == "" || s.cfg.Conf.IsLocalDomain(domain) {
		_, err := s.cfg.Conf.LookupUser(addr)
		switch {
		case errors.Is(err, conf.ErrNoUser):
			s.log().Info("rejected", "from", "<"+s.from+">", "to", "<"+to+">", "status", "550 5.1.1", "why", "no such user")
			return smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "<%s>: no such user here", to)
		case err != nil:
			s.log().Warn("recipient lookup failed", "to", "<"+to+">", "err", err)
			return smtpErr(451, smtp.EnhancedCode{4, 3, 0}, "cannot look up <%s> now, try again later", to)
		}
	} else if !s.mayRelay() {
		s.log().Info("rejected", "from", "<"+s.from+">", "to", "<"+to+">", "status", "554 5.7.1", "why", "relaying denied")
		return smtpErr(554, smtp.EnhancedCode{5, 7, 1}, "relay access denied: %s is not a domain of this host", domain)
	}
	s.rcpts = append(s.rcpts, rcpt)
	return nil
}

// Reset implements smtp.Session (RSET, and EHLO again).
func (s *session) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.from, s.fromSet, s.conv, s.rcpts = "", false, enqueue.Conversation{}, nil
}

// Logout implements smtp.Session.
func (s *session) Logout() error { return nil }

// AuthMechanisms implements smtp.AuthSession: none on a connection where a
// password would travel in the clear.
func (s *session) AuthMechanisms() []string {
	if s.cfg.Auth == nil || !s.authSecure() {
		return nil
	}
	return auth.Mechanisms(true)
}

// Auth implements smtp.AuthSession.
func (s *session) Auth(mech string) (sasl.Server, error) {
	if s.cfg.Auth == nil {
		return nil, smtpErr(502, smtp.EnhancedCode{5, 5, 1}, "AUTH not available")
	}
	if !s.authSecure() {
		// RFC 4954 §6.
		return nil, smtpErr(538, smtp.EnhancedCode{5, 7, 11}, "encryption required for requested authentication mechanism: STARTTLS first")
	}
	srv, account, err := auth.NewSASLServer(s.ctx, mech, s.cfg.Auth, s.remote())
	if err != nil {
		return nil, smtpErr(504, smtp.EnhancedCode{5, 5, 4}, "unrecognized authentication type %s", mech)
	}
	return &saslServer{Server: srv, account: account, s: s, mech: strings.ToUpper(mech)}, nil
}

// saslServer turns internal/auth's errors into SMTP's: a wrong password is
// 535 5.7.8 (after the throttle's delay), never the engine's 454 for
// errors it does not know.
type saslServer struct {
	sasl.Server
	account func() *auth.Account
	s       *session
	mech    string
}

func (a *saslServer) Next(resp []byte) ([]byte, bool, error) {
	c, done, err := a.Server.Next(resp)
	switch {
	case err != nil:
		return nil, false, a.s.authFailed(a.mech, err)
	case done:
		acct := a.account()
		if acct == nil {
			return nil, false, a.s.authFailed(a.mech, auth.ErrAuthFailed)
		}
		a.s.mu.Lock()
		a.s.user = acct
		a.s.mu.Unlock()
		a.s.trust()
		a.s.log().Info("login", "user", acct.Name, "mech", a.mech)
	}
	return c, done, err
}

func (s *session) authFailed(mech string, err error) error {
	switch {
	case errors.Is(err, auth.ErrTemporary):
		s.log().Warn("auth unavailable", "mech", mech, "err", err)
		return smtpErr(454, smtp.EnhancedCode{4, 7, 0}, "temporary authentication failure, try again later")
	case errors.Is(err, auth.ErrBadSASL):
		s.log().Info("auth failed", "mech", mech, "err", err)
		return smtpErr(501, smtp.EnhancedCode{5, 5, 2}, "malformed authentication response")
	}
	s.log().Info("auth failed", "mech", mech, "remote", s.remote())
	return smtp.ErrAuthFailed
}

// Data implements smtp.Session: the message is read whole, checked, and
// only then given to the queue.
func (s *session) Data(r io.Reader) error {
	s.inData.Store(true)
	defer s.inData.Store(false)

	select {
	case <-s.rdnsDone:
	case <-s.ctx.Done():
	}
	qid := ""
	if m, ok := s.cfg.Enqueue.(IDMaker); ok {
		// A failure here (no queue yet) is met again, and answered, when
		// the message is queued.
		qid, _ = m.NewID()
	}
	s.mu.Lock()
	if !s.fromSet || len(s.rcpts) == 0 {
		s.mu.Unlock()
		return smtpErr(503, smtp.EnhancedCode{5, 5, 1}, "need MAIL and RCPT before DATA")
	}
	s.messages++
	env := Envelope{ID: qid, Sender: s.from, Recipients: append([]enqueue.Recipient(nil), s.rcpts...), Conversation: s.conv}
	// Without a queue ID yet (a pipe makes its own), the connection id
	// and the message's number; the "accepted" log line has both.
	id := qid
	if id == "" {
		id = fmt.Sprintf("%s.%d", s.peer.ID, s.messages)
	}
	rec := s.receivedLocked(id, env)
	user := ""
	if s.user != nil {
		user = s.user.Name
	}
	s.mu.Unlock()

	sp := &spool{dir: s.cfg.TempDir}
	defer sp.Close()
	if _, err := sp.Write([]byte(rec)); err != nil {
		return s.spoolFailed(err)
	}
	bufs := dataBuffers.Get().(*dataBuffer)
	defer dataBuffers.Put(bufs)
	chk := checker{max: s.cfg.maxSize(), out: bufs.out[:0]}
	buf := bufs.in[:]
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			out, cerr := chk.scan(buf[:n])
			if cerr != nil {
				return s.refuse(env, cerr)
			}
			if _, err := sp.Write(out); err != nil {
				return s.spoolFailed(err)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return s.readFailed(env, rerr)
		}
	}
	tail, cerr := chk.end()
	if cerr != nil {
		return s.refuse(env, cerr)
	}
	if rerr := s.wire.rawRefusal(); rerr != nil {
		// What the engine's unstuffing hid from the checker.
		return s.refuse(env, rerr)
	}
	// The checker saw every octet of the client's text; the Received
	// line names a recipient that may not be ASCII.
	env.EightBit = chk.eightBit() || !mta.IsASCII(rec)
	if _, err := sp.Write(tail); err != nil {
		return s.spoolFailed(err)
	}
	msg, err := sp.Reader()
	if err != nil {
		return s.spoolFailed(err)
	}
	env.Env = []string{"TERN_CID=" + s.peer.ID}
	if ip := s.remote(); ip.IsValid() {
		env.Env = append(env.Env, "TCPREMOTEIP="+ip.String())
	}
	if user != "" {
		env.Env = append(env.Env, "TERN_AUTH_USER="+user)
	}
	// The client is owed an answer even when we are told to stop: the
	// queue gets the message whatever the context says.
	qid, err = s.cfg.Enqueue.Enqueue(context.WithoutCancel(s.ctx), env, msg)
	attrs := []any{"from", "<" + env.Sender + ">", "rcpts", len(env.Recipients), "size", chk.size, "remote", s.remote(), "id", id}
	if user != "" {
		attrs = append(attrs, "user", user)
	}
	if err != nil {
		var ee *EnqueueError
		if errors.As(err, &ee) && !ee.Temporary {
			s.log().Info("rejected", append(attrs, "status", "554 5.3.0", "why", err.Error())...)
			return smtpErr(554, smtp.EnhancedCode{5, 3, 0}, "message refused by the queue")
		}
		s.log().Warn("not queued", append(attrs, "status", "451 4.3.0", "why", err.Error())...)
		return smtpErr(451, smtp.EnhancedCode{4, 3, 0}, "cannot queue the message now, try again later")
	}
	s.log().Info("accepted", append([]any{"qid", qid}, attrs...)...)
	// go-smtp writes whatever SMTPError Data returns, so a 250 carrying
	// the queue id is returned this way: its own success text has none.
	return smtpErr(250, smtp.EnhancedCode{2, 0, 0}, "ok: queued as %s", qid)
}

// dataBuffer is what Data reads a message through: the bytes as read, and
// as checked. A process serving every connection (--listen) reused them
// instead of making 64 KiB for each message, which kept the collector
// running (tests/bench/smtp.sh).
type dataBuffer struct {
	in  [32 << 10]byte
	out []byte
}

var dataBuffers = sync.Pool{New: func() any { return &dataBuffer{out: make([]byte, 0, 32<<10)} }}

func (s *session) refuse(env Envelope, err *smtp.SMTPError) error {
	s.log().Info("rejected", "from", "<"+env.Sender+">", "rcpts", len(env.Recipients), "remote", s.remote(),
		"status", fmt.Sprintf("%d %d.%d.%d", err.Code, err.EnhancedCode[0], err.EnhancedCode[1], err.EnhancedCode[2]), "why", err.Message)
	return err
}

func (s *session) spoolFailed(err error) error {
	s.log().Warn("cannot hold the message", "err", err)
	return smtpErr(451, smtp.EnhancedCode{4, 3, 0}, "local error holding the message, try again later")
}

func (s *session) readFailed(env Envelope, err error) error {
	switch {
	case errors.Is(err, smtp.ErrDataTooLarge):
		return s.refuse(env, errTooBig(s.cfg.maxSize()))
	case errors.Is(err, smtp.ErrTooLongLine):
		return s.refuse(env, errLongLine)
	case isTimeout(err):
		s.log().Info("timeout in DATA", "from", "<"+env.Sender+">")
		return smtpErr(451, smtp.EnhancedCode{4, 4, 2}, "timeout reading the message")
	}
	return err
}
