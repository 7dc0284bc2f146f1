package lmtp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/emersion/go-smtp"
	"github.com/tern-mail/tern/internal/address"
	"github.com/tern-mail/tern/internal/crlf"
	"github.com/tern-mail/tern/internal/privdrop"
	"github.com/tern-mail/tern/internal/sysexit"
	"github.com/tern-mail/tern/maildir"
	"github.com/tern-mail/tern/mda"
)

// deliver stores the message for one account, as that account when this
// process is root: through ~/.forward when the account has one, else into
// its Maildir (the +detail folder when it exists), the entry flushed with
// whatever else reached that directory meanwhile.
func (s *session) deliver(sp *spooled, t target) error {
	acct := t.acct
	d := mda.Delivery{
		Envelope:  mda.Envelope{Sender: s.sender, Recipient: t.addr},
		Maildir:   acct.Maildir,
		Home:      acct.Home,
		Detail:    t.detail,
		QuotaHard: s.srv.QuotaHard,
		Unsynced:  true,
	}
	var stored maildir.Message
	work := func() error {
		rules, err := mda.ReadForward(acct.Home)
		if err != nil {
			return err
		}
		if len(rules) > 0 {
			return mda.FollowForward(sp.reader(), d, s.forwarding(t), rules)
		}
		m, err := mda.Deliver(sp.reader(), d)
		if err != nil {
			return err
		}
		dir := filepath.Dir(m.Path)
		if err := s.srv.flush(dir, func() error { return maildir.SyncEntry(m) }); err != nil {
			maildir.Discard(m)
			return sysexit.Wrap(sysexit.TempFail, err)
		}
		stored = m
		return nil
	}
	var err error
	if s.euid == 0 {
		gid := acct.GID
		if gid < 0 {
			gid = acct.UID
		}
		err = privdrop.AsUser(acct.UID, gid, work)
	} else {
		err = work()
	}
	switch {
	case err != nil:
		s.log.Info("not delivered", "from", s.sender, "to", t.addr, "user", acct.Name, "status", statusOf(s.reply(err)), "err", err)
	case stored.Path == "":
		s.log.Info("delivered", "from", s.sender, "to", t.addr, "user", acct.Name, "forward", true)
	default:
		s.log.Info("delivered", "from", s.sender, "to", t.addr, "user", acct.Name, "file", stored.Name, "size", stored.Size)
	}
	return err
}

// forwarding is what ~/.forward's commands and re-injections get: the
// server's environment and the account's, as qmail-local gives them
// (HOME, USER, LOCAL, DOMAIN, EXT, SENDER, RECIPIENT), run as the account
// when this process is root.
func (s *session) forwarding(t target) mda.Forward {
	local, domain := address.Split(t.addr)
	if domain == "" {
		domain = s.conf.Hostname
	}
	user, _ := address.Split(t.acct.Name)
	sender := s.sender
	if sender == address.NullSender {
		sender = ""
	}
	env := append(append([]string(nil), s.srv.Env...),
		"HOME="+t.acct.Home, "USER="+user, "LOGNAME="+user,
		"LOCAL="+local, "DOMAIN="+domain, "EXT="+t.detail,
		"SENDER="+sender, "RECIPIENT="+t.addr)
	f := mda.Forward{Enqueue: s.srv.Enqueue, Env: env, Stderr: io.Discard}
	if s.euid == 0 {
		gid := t.acct.GID
		if gid < 0 {
			gid = t.acct.UID
		}
		f.Credential = &syscall.Credential{Uid: uint32(t.acct.UID), Gid: uint32(gid), Groups: []uint32{}}
	}
	return f
}

// The replies after DATA. The text a client sees names no path or
// command of this host: the log line with the same cid= has them.
func (s *session) reply(err error) *smtp.SMTPError {
	var se *smtp.SMTPError
	switch {
	case errors.As(err, &se):
		return se
	case errors.Is(err, mda.ErrLoop):
		// RFC 5321 §6.3: a message that has looped is refused for good.
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 4, 6}, Message: "this message is looping: it already has a Delivered-To line for this recipient"}
	case errors.Is(err, maildir.ErrQuotaExceeded) && s.srv.QuotaHard:
		return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 2, 2}, Message: "mailbox is full cid=" + s.id}
	case errors.Is(err, maildir.ErrQuotaExceeded):
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox is full, try again later cid=" + s.id}
	}
	switch sysexit.Code(err) {
	case sysexit.DataErr:
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "message refused: " + oneLine(err) + " cid=" + s.id}
	case sysexit.Unavailable:
		// A ~/.forward command that failed for good, or a forward refused.
		// Its exit status goes into the reply (the sender's bounce says
		// what failed, as tern-deliver's does); its words and the command
		// itself stay in the log.
		why := "refused the message"
		var exit *mda.CommandExit
		if errors.As(err, &exit) {
			why = fmt.Sprintf("command exited %d", exit.Status)
		}
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 3, 0}, Message: "the recipient's .forward " + why + " cid=" + s.id}
	case sysexit.NoUser:
		return errNoUser
	}
	// Everything else may be mended by the administrator (a Maildir's
	// permissions, a missing home, a full disk): the client keeps the
	// message and tries again, as it does for Dovecot's 451.
	return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "temporary failure, try again later cid=" + s.id}
}

// oneLine is an error's text cut to one short line.
func oneLine(err error) string {
	t := err.Error()
	if i := bytes.IndexAny([]byte(t), "\r\n"); i >= 0 {
		t = t[:i]
	}
	if len(t) > 200 {
		t = t[:200]
	}
	return t
}

func isTemporary(err error) bool {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code/100 == 4
	}
	return false
}

// statusOf is an error's enhanced status code, for log lines.
func statusOf(err error) string {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	}
	return "4.3.0"
}

func tempError(what string, err error) error {
	return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: what + ": " + oneLine(err)}
}

// spoolInMemory is the largest message kept in memory; a larger one goes
// to an unlinked temporary file, so a connection holds at most this much.
const spoolInMemory = 1 << 20

// spooled is the message as received, read once per delivery.
type spooled struct {
	mem  []byte
	file *os.File
	size int64
}

// spool reads the message, refusing it past max bytes as sent, and keeps
// it with LF line ends: the form of a message in Unix files and pipes,
// which the commands of ~/.forward read as tern-queue gives it to them
// (the Maildir stores LF either way).
func spool(r io.Reader, max int64, tmp string) (*spooled, error) {
	tooBig := &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: fmt.Sprintf("message larger than the limit of %d bytes", max)}
	var buf bytes.Buffer
	lf := &crlf.LFWriter{W: &buf}
	n, err := io.Copy(lf, io.LimitReader(r, min(max, spoolInMemory)+1))
	if err != nil {
		return nil, spoolError(err, tooBig)
	}
	if n > max {
		return nil, tooBig
	}
	if n <= spoolInMemory {
		lf.Flush()
		return &spooled{mem: buf.Bytes(), size: int64(buf.Len())}, nil
	}
	f, err := os.CreateTemp(tmp, "tern-lmtp-")
	if err != nil {
		return nil, tempError("spool the message", err)
	}
	os.Remove(f.Name())
	sp := &spooled{file: f}
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		return nil, tempError("spool the message", err)
	}
	written := int64(buf.Len())
	cw := &countingWriter{w: f}
	lf.W = cw
	m, err := io.Copy(lf, io.LimitReader(r, max-n+1))
	if err == nil {
		err = lf.Flush()
	}
	if err != nil {
		f.Close()
		return nil, spoolError(err, tooBig)
	}
	if n+m > max {
		f.Close()
		return nil, tooBig
	}
	sp.size = written + cw.n
	return sp, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// spoolError is the reply to a failed read of the message: go-smtp's own
// (its size limit) as it is, the connection's as temporary.
func spoolError(err error, tooBig *smtp.SMTPError) error {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		if se.Code == 552 {
			return tooBig
		}
		return se
	}
	return tempError("read the message", err)
}

func (sp *spooled) reader() io.Reader {
	if sp.file != nil {
		return io.NewSectionReader(sp.file, 0, sp.size)
	}
	return bytes.NewReader(sp.mem)
}

func (sp *spooled) Close() error {
	if sp.file != nil {
		return sp.file.Close()
	}
	return nil
}
