package imapd

import (
	"fmt"
	"github.com/tern-mail/tern/maildir"
	"strings"
)

// Quota is an account's limits and usage, for QUOTA (RFC 9208). A zero
// limit means none on that resource.
type Quota struct {
	Bytes, MaxBytes       int64
	Messages, MaxMessages int64
}

// QuotaSession is a session whose account may have a quota: one root,
// named "", over all its mailboxes, as the Maildir++ maildirsize file
// has it.
type QuotaSession interface {
	// Quota returns the account's quota; ok is false when it has none.
	Quota() (q Quota, ok bool, err error)
}

// quota serves GETQUOTA, GETQUOTAROOT and SETQUOTA (RFC 9208 §4.1).
func (f *front) quota(tag, name, rest string) error {
	qs, ok := f.st.session().(QuotaSession)
	if !ok || !f.isAuthed() {
		return f.out.line("%s BAD [CLIENTBUG] %s is taken after login", tag, name)
	}
	a := &args{s: rest}
	switch name {
	case "SETQUOTA":
		// QUOTASET is not offered: limits are the administrator's,
		// in the maildirsize file (RFC 9208 §4.1.4).
		return f.out.line("%s NO [NOPERM] the quota is set by the administrator", tag)
	case "GETQUOTAROOT":
		mbox, ok := a.mailbox()
		if !ok || !a.done() {
			return f.out.line("%s BAD [CLIENTBUG] GETQUOTAROOT wants a mailbox name", tag)
		}
		q, has, err := qs.Quota()
		if err != nil {
			f.cfg.Log.Warn("cannot read the quota", "err", err)
			return f.out.line("%s NO [UNAVAILABLE] cannot read the quota now", tag)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "* QUOTAROOT %s", quoteString(encodeMailbox(mbox)))
		if has {
			b.WriteString(` ""`)
		}
		if err := f.out.line("%s", b.String()); err != nil {
			return clientErr(err)
		}
		if has {
			if err := f.out.line("%s", quotaLine(q)); err != nil {
				return clientErr(err)
			}
		}
		return f.out.line("%s OK GETQUOTAROOT completed", tag)
	}
	root, ok := a.astring()
	if !ok || !a.done() {
		return f.out.line("%s BAD [CLIENTBUG] GETQUOTA wants a quota root name", tag)
	}
	q, has, err := qs.Quota()
	if err != nil {
		f.cfg.Log.Warn("cannot read the quota", "err", err)
		return f.out.line("%s NO [UNAVAILABLE] cannot read the quota now", tag)
	}
	if !has || root != "" {
		return f.out.line("%s NO [NONEXISTENT] no such quota root", tag)
	}
	if err := f.out.line("%s", quotaLine(q)); err != nil {
		return clientErr(err)
	}
	return f.out.line("%s OK GETQUOTA completed", tag)
}

// quotaLine is the QUOTA response for the one root; STORAGE counts units
// of 1024 octets (RFC 9208 §5.1).
func quotaLine(q Quota) string {
	var res []string
	if q.MaxBytes > 0 {
		res = append(res, fmt.Sprintf("STORAGE %d %d", (q.Bytes+1023)/1024, q.MaxBytes/1024))
	}
	if q.MaxMessages > 0 {
		res = append(res, fmt.Sprintf("MESSAGE %d %d", q.Messages, q.MaxMessages))
	}
	return `* QUOTA "" (` + strings.Join(res, " ") + ")"
}

// quoteString is s as an IMAP quoted string.
func quoteString(s string) string { return string(appendQuoted(nil, []byte(s))) }

// encodeMailbox is a mailbox name as a client that has not enabled
// UTF8=ACCEPT reads it: modified UTF-7 (RFC 9051 §5.1.3).
func encodeMailbox(name string) string {
	if enc, err := maildir.EncodeMUTF7(name); err == nil {
		return enc
	}
	return name
}
