package imapd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"slices"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-sasl"
	"github.com/tern-mail/tern/internal/auth"
	"github.com/tern-mail/tern/maildir"
)

// Accounts is how a session logs a user in and opens their Maildir.
type Accounts struct {
	Authenticator auth.Authenticator
	// Open opens an account's Maildir, as the account: a process
	// running as root becomes the account's user first.
	Open func(a *auth.Account) (*maildir.Store, error)
}

// Session is an imapserver.Session over the account's Maildir: one per
// connection. It implements SessionIMAP4rev2 (NAMESPACE and MOVE),
// SessionSASL, SessionAppendLimit and QuotaSession.
type Session struct {
	st       *ConnState
	accounts Accounts
	remote   netip.Addr
	ctx      context.Context

	user  string
	store *maildir.Store

	folder *maildir.Folder
	view   *maildir.View
}

// imapserver panics at the first connection when a capability it is told
// of has no method behind it (IMAP4rev2, NAMESPACE, MOVE): these fail at
// compile time instead.
var (
	_ imapserver.SessionIMAP4rev2   = (*Session)(nil)
	_ imapserver.SessionSASL        = (*Session)(nil)
	_ imapserver.SessionAppendLimit = (*Session)(nil)
	_ QuotaSession                  = (*Session)(nil)
)

// NewSession returns a session that logs in through accounts. With
// preauth set, it is logged in as that account already.
func NewSession(ctx context.Context, st *ConnState, accounts Accounts, preauth *auth.Account) (*Session, error) {
	s := &Session{st: st, accounts: accounts, remote: st.Config.Remote, ctx: ctx}
	if preauth != nil {
		if err := s.open(preauth); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// specialUse are the folders every account gets on first login, marked
// in LIST with their RFC 6154 attributes.
var specialUse = []struct {
	name string
	attr imap.MailboxAttr
}{
	{"Sent", imap.MailboxAttrSent},
	{"Drafts", imap.MailboxAttrDrafts},
	{"Trash", imap.MailboxAttrTrash},
	{"Junk", imap.MailboxAttrJunk},
	{"Archive", imap.MailboxAttrArchive},
}

func specialUseOf(name string) imap.MailboxAttr {
	for _, su := range specialUse {
		if su.name == name {
			return su.attr
		}
	}
	return ""
}

// open becomes the account and opens its Maildir, making the special-use
// folders the first time.
func (s *Session) open(a *auth.Account) error {
	store, err := s.accounts.Open(a)
	if err != nil {
		s.st.Log.Error("cannot open the mailbox", "user", a.Name, "err", err)
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable, Text: "your mailbox cannot be opened now; try again later"}
	}
	s.user, s.store = a.Name, store
	s.st.Log = s.st.Log.With("user", a.Name)
	for _, su := range specialUse {
		if _, err := store.Folder(su.name); errors.Is(err, fs.ErrNotExist) {
			if _, err := store.CreateFolder(su.name); err != nil && !errors.Is(err, fs.ErrExist) {
				s.st.Log.Warn("cannot make a special-use folder", "folder", su.name, "err", err)
				continue
			}
			if err := store.Subscribe(su.name); err != nil {
				s.st.Log.Warn("cannot subscribe", "folder", su.name, "err", err)
			}
		}
	}
	s.st.Log.Info("login")
	return nil
}

// Close implements imapserver.Session.
func (s *Session) Close() error {
	if s.view != nil {
		s.view.Close()
		s.view, s.folder = nil, nil
	}
	return nil
}

// Login implements imapserver.Session.
func (s *Session) Login(user, pass string) error {
	a, err := s.accounts.Authenticator.Authenticate(s.ctx, user, pass, s.remote)
	if err != nil {
		return s.authError(user, err)
	}
	return s.open(a)
}

func (s *Session) authError(user string, err error) error {
	s.st.Log.Info("login failed", "user", user, "err", err)
	switch {
	case errors.Is(err, auth.ErrTemporary):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable, Text: "cannot check passwords now; try again later"}
	case errors.Is(err, auth.ErrBadSASL):
		return &imap.Error{Type: imap.StatusResponseTypeBad, Code: imap.ResponseCodeClientBug, Text: "malformed SASL response"}
	}
	return imapserver.ErrAuthFailed
}

// AuthenticateMechanisms implements imapserver.SessionSASL.
func (s *Session) AuthenticateMechanisms() []string { return auth.Mechanisms(true) }

// Authenticate implements imapserver.SessionSASL.
func (s *Session) Authenticate(mech string) (sasl.Server, error) {
	srv, account, err := auth.NewSASLServer(s.ctx, mech, s.accounts.Authenticator, s.remote)
	if err != nil {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "unsupported SASL mechanism " + mech}
	}
	return &saslOpen{Server: srv, s: s, account: account}, nil
}

// saslOpen opens the account once the exchange has succeeded.
type saslOpen struct {
	sasl.Server
	s       *Session
	account func() *auth.Account
}

func (o *saslOpen) Next(resp []byte) ([]byte, bool, error) {
	c, done, err := o.Server.Next(resp)
	if err != nil {
		return nil, true, o.s.authError("", err)
	}
	if done {
		a := o.account()
		if a == nil {
			return nil, true, imapserver.ErrAuthFailed
		}
		return nil, true, o.s.open(a)
	}
	return c, false, nil
}

// AppendLimit implements imapserver.SessionAppendLimit.
func (s *Session) AppendLimit() uint32 { return s.st.Config.appendLimit() }

// Quota implements QuotaSession from the Maildir++ maildirsize file.
func (s *Session) Quota() (Quota, bool, error) {
	q, err := s.store.Quota()
	if errors.Is(err, fs.ErrNotExist) {
		return Quota{}, false, nil
	}
	if err != nil {
		return Quota{}, false, err
	}
	if q.MaxBytes == 0 && q.MaxMessages == 0 {
		return Quota{}, false, nil
	}
	return Quota{Bytes: q.Bytes, MaxBytes: q.MaxBytes, Messages: q.Messages, MaxMessages: q.MaxMessages}, true, nil
}

// Errors with their response codes (RFC 5530).
func noSuchMailbox(name string) error {
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeNonExistent, Text: fmt.Sprintf("no mailbox %q", name)}
}

func tryCreate(name string) error {
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTryCreate, Text: fmt.Sprintf("no mailbox %q; create it first", name)}
}

var errReadOnly = &imap.Error{Type: imap.StatusResponseTypeNo, Code: "READ-ONLY", Text: "the mailbox was opened with EXAMINE: no changes"}

// checkName refuses names the store must never see (RFC 9051 §5.1): the
// wildcards, and what maildir.ValidateFolderName refuses (empty levels
// such as "..", "/", control characters, overlong names), so no name
// leaves the Maildir.
func checkName(name string) error {
	if name == "INBOX" {
		return nil
	}
	if strings.ContainsAny(name, "%*") {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "a mailbox name holds no % or *"}
	}
	if err := maildir.ValidateFolderName(name); err != nil {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: strings.TrimPrefix(err.Error(), "maildir: ")}
	}
	return nil
}

// folderOf opens a folder by its IMAP name; missing is what to answer
// when there is none.
func (s *Session) folderOf(name string, missing func(string) error) (*maildir.Folder, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	f, err := s.store.Folder(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, missing(name)
	}
	if err != nil {
		return nil, s.internal("open mailbox "+name, err)
	}
	return f, nil
}

// internal logs an error that is not the client's and answers it as a
// server failure.
func (s *Session) internal(what string, err error) error {
	s.st.Log.Error(what, "err", err)
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeServerBug, Text: what + ": failed; try again later"}
}

// Select implements imapserver.Session (SELECT and EXAMINE).
func (s *Session) Select(name string, options *imap.SelectOptions) (*imap.SelectData, error) {
	s.Close()
	f, err := s.folderOf(name, noSuchMailbox)
	if err != nil {
		return nil, err
	}
	v, err := f.View(options.ReadOnly)
	if err != nil {
		return nil, s.internal("select "+name, err)
	}
	s.folder, s.view = f, v
	flags := toFlags(v.Flags())
	perm := slices.Clone(flags)
	if v.ReadOnly() {
		perm = nil
	} else if v.CanCreateKeywords() {
		perm = append(perm, imap.FlagWildcard)
	}
	return &imap.SelectData{
		Flags:             flags,
		PermanentFlags:    perm,
		NumMessages:       v.Len(),
		FirstUnseenSeqNum: v.FirstUnseen(),
		NumRecent:         v.Recent(),
		UIDNext:           imap.UID(v.UIDNext()),
		UIDValidity:       v.UIDValidity(),
	}, nil
}

func toFlags(fs []string) []imap.Flag {
	out := make([]imap.Flag, len(fs))
	for i, f := range fs {
		out[i] = imap.Flag(f)
	}
	return out
}

// isSelected reports whether the mailbox of that name is selected.
func (s *Session) isSelected(name string) bool {
	return s.folder != nil && (s.folder.Name() == name || (name == "INBOX" && s.folder.Name() == "INBOX"))
}

// Unselect implements imapserver.Session.
func (s *Session) Unselect() error { return s.Close() }

// Create implements imapserver.Session. Maildir++ is flat, so a name
// with levels is one folder; a trailing separator is dropped (RFC 9051
// §6.3.4).
func (s *Session) Create(name string, options *imap.CreateOptions) error {
	name = strings.TrimSuffix(name, ".")
	if err := checkName(name); err != nil {
		return err
	}
	if name == "INBOX" {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAlreadyExists, Text: "INBOX is always there"}
	}
	if options != nil && len(options.SpecialUse) > 0 {
		// RFC 6154 §3: the special uses are the ones these names
		// have; others cannot be given.
		for _, u := range options.SpecialUse {
			if specialUseOf(name) != u {
				return &imap.Error{Type: imap.StatusResponseTypeNo, Code: "USEATTR", Text: fmt.Sprintf("only the folder named %s has that use here", nameOfUse(u))}
			}
		}
	}
	// RFC 9051 §6.3.4: the levels above are made too, so that the
	// hierarchy can be renamed and deleted level by level.
	for i := strings.IndexByte(name, '.'); i >= 0; i = nextDot(name, i) {
		if _, err := s.store.CreateFolder(name[:i]); err != nil && !errors.Is(err, fs.ErrExist) {
			return s.internal("create "+name[:i], err)
		}
	}
	if _, err := s.store.CreateFolder(name); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAlreadyExists, Text: fmt.Sprintf("mailbox %q exists", name)}
		}
		return s.internal("create "+name, err)
	}
	return nil
}

func nameOfUse(u imap.MailboxAttr) string {
	for _, su := range specialUse {
		if su.attr == u {
			return su.name
		}
	}
	return "(none)"
}

// Delete implements imapserver.Session.
func (s *Session) Delete(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if name == "INBOX" {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "INBOX cannot be deleted"}
	}
	if s.folder != nil && s.folder.Name() == name {
		s.Close()
	}
	err := s.store.DeleteFolder(name)
	if errors.Is(err, fs.ErrNotExist) {
		return noSuchMailbox(name)
	}
	if err != nil {
		return s.internal("delete "+name, err)
	}
	return nil
}

// Rename implements imapserver.Session: the folder and every folder
// below it.
func (s *Session) Rename(oldName, newName string, _ *imap.RenameOptions) error {
	for _, n := range []string{oldName, newName} {
		if err := checkName(n); err != nil {
			return err
		}
	}
	if newName == "INBOX" {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAlreadyExists, Text: "INBOX is always there"}
	}
	if oldName == "INBOX" {
		return s.renameInbox(newName)
	}
	err := s.store.RenameFolder(oldName, newName)
	switch {
	case errors.Is(err, fs.ErrExist):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAlreadyExists, Text: fmt.Sprintf("mailbox %q exists", newName)}
	case errors.Is(err, fs.ErrNotExist):
		return noSuchMailbox(oldName)
	case err != nil && strings.Contains(oldName+".", newName) || err != nil && strings.HasPrefix(newName, oldName+"."):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "a mailbox cannot move below itself"}
	case err != nil:
		return s.internal("rename "+oldName, err)
	}
	return nil
}

// renameInbox is RENAME of INBOX (RFC 9051 §6.3.6, RFC 3501 §6.3.5):
// every message moves to a new folder of that name and INBOX stays,
// empty; its subfolders are not touched (in Maildir++ INBOX is the root of
// them all). Each file is renamed, so a crash leaves every message in one
// folder or the other.
func (s *Session) renameInbox(newName string) error {
	if err := s.Create(newName, nil); err != nil {
		return err
	}
	dst, err := s.store.Folder(newName)
	if err != nil {
		return s.internal("rename INBOX", err)
	}
	inbox, err := s.store.Folder("INBOX")
	if err != nil {
		return s.internal("rename INBOX", err)
	}
	v, err := inbox.View(false)
	if err != nil {
		return s.internal("rename INBOX", err)
	}
	defer v.Close()
	var uids []uint32
	v.Each(1, v.Len(), func(m maildir.Message) bool {
		uids = append(uids, m.UID)
		return true
	})
	if _, _, err := v.Move(uids, dst); err != nil {
		return s.internal("rename INBOX", err)
	}
	return nil
}

// Subscribe implements imapserver.Session.
func (s *Session) Subscribe(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := s.store.Subscribe(name); err != nil {
		return s.internal("subscribe "+name, err)
	}
	return nil
}

// Unsubscribe implements imapserver.Session.
func (s *Session) Unsubscribe(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := s.store.Unsubscribe(name); err != nil {
		return s.internal("unsubscribe "+name, err)
	}
	return nil
}

// Namespace implements imapserver.SessionNamespace: one personal
// namespace, "." as the separator (RFC 2342).
func (s *Session) Namespace() (*imap.NamespaceData, error) {
	return &imap.NamespaceData{Personal: []imap.NamespaceDescriptor{{Prefix: "", Delim: '.'}}}, nil
}

// Status implements imapserver.Session from the folder's index alone.
func (s *Session) Status(name string, options *imap.StatusOptions) (*imap.StatusData, error) {
	f, err := s.folderOf(name, noSuchMailbox)
	if err != nil {
		return nil, err
	}
	return s.statusOf(f, options)
}

func (s *Session) statusOf(f *maildir.Folder, options *imap.StatusOptions) (*imap.StatusData, error) {
	st, err := f.Status()
	if err != nil {
		return nil, s.internal("status of "+f.Name(), err)
	}
	d := &imap.StatusData{Mailbox: f.Name()}
	if options.NumMessages {
		d.NumMessages = &st.Messages
	}
	if options.NumRecent {
		d.NumRecent = &st.Recent
	}
	if options.UIDNext {
		d.UIDNext = imap.UID(st.UIDNext)
	}
	if options.UIDValidity {
		d.UIDValidity = st.UIDValidity
	}
	if options.NumUnseen {
		d.NumUnseen = &st.Unseen
	}
	if options.NumDeleted {
		d.NumDeleted = &st.Deleted
	}
	if options.Size {
		d.Size = &st.Size
	}
	if options.AppendLimit {
		l := s.AppendLimit()
		d.AppendLimit = &l
	}
	return d, nil
}

// List implements imapserver.Session (LIST and LSUB, with LIST-EXTENDED,
// LIST-STATUS, SPECIAL-USE and CHILDREN).
func (s *Session) List(w *imapserver.ListWriter, ref string, patterns []string, options *imap.ListOptions) error {
	if len(patterns) == 1 && patterns[0] == "" && !options.SelectSubscribed {
		// RFC 9051 §6.3.9: the separator and the root.
		return w.WriteList(&imap.ListData{Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}, Delim: '.', Mailbox: ""})
	}
	names, err := s.store.Folders()
	if err != nil {
		return s.internal("list", err)
	}
	subs, err := s.store.Subscriptions()
	if err != nil {
		return s.internal("list subscriptions", err)
	}
	exists := map[string]bool{}
	for _, n := range names {
		exists[n] = true
	}
	subscribed := map[string]bool{}
	for _, n := range subs {
		subscribed[n] = true
	}
	// Maildir++ has ".a.b" without ".a": "a" is listed as a parent
	// that cannot be selected (RFC 9051 §6.3.9, \NonExistent).
	all := map[string]bool{}
	for _, n := range names {
		all[n] = true
		for i := strings.IndexByte(n, '.'); i >= 0; i = nextDot(n, i) {
			all[n[:i]] = true
		}
	}
	if options.SelectSubscribed {
		for n := range subscribed {
			all[n] = true
		}
	}
	hasChildren := map[string]bool{}
	for n := range all {
		if i := strings.LastIndexByte(n, '.'); i > 0 && exists[n] {
			for p := n[:i]; ; {
				hasChildren[p] = true
				j := strings.LastIndexByte(p, '.')
				if j <= 0 {
					break
				}
				p = p[:j]
			}
		}
	}
	sorted := make([]string, 0, len(all))
	for n := range all {
		sorted = append(sorted, n)
	}
	slices.SortFunc(sorted, func(a, b string) int {
		if a == "INBOX" {
			return -1
		}
		if b == "INBOX" {
			return 1
		}
		return strings.Compare(a, b)
	})
	for _, n := range sorted {
		match := false
		for _, p := range patterns {
			if imapserver.MatchList(n, '.', ref, p) {
				match = true
				break
			}
		}
		if !match {
			continue
		}
		if options.SelectSubscribed && !subscribed[n] {
			continue
		}
		var attrs []imap.MailboxAttr
		if !exists[n] {
			attrs = append(attrs, imap.MailboxAttrNonExistent)
			if !options.SelectSubscribed {
				attrs = append(attrs, imap.MailboxAttrNoSelect)
			}
		}
		if hasChildren[n] {
			attrs = append(attrs, imap.MailboxAttrHasChildren)
		} else {
			attrs = append(attrs, imap.MailboxAttrHasNoChildren)
		}
		if subscribed[n] && (options.SelectSubscribed || options.ReturnSubscribed) {
			attrs = append(attrs, imap.MailboxAttrSubscribed)
		}
		su := specialUseOf(n)
		if su != "" && exists[n] {
			attrs = append(attrs, su)
		}
		if options.SelectSpecialUse && su == "" {
			continue
		}
		d := &imap.ListData{Attrs: attrs, Delim: '.', Mailbox: n}
		if options.ReturnStatus != nil && exists[n] {
			if f, err := s.store.Folder(n); err == nil {
				if st, err := s.statusOf(f, options.ReturnStatus); err == nil {
					d.Status = st
				}
			}
		}
		if err := w.WriteList(d); err != nil {
			return err
		}
	}
	return nil
}

func nextDot(s string, i int) int {
	j := strings.IndexByte(s[i+1:], '.')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// Append implements imapserver.Session. The message is on disk and
// fsynced before the OK (maildir.Folder.Append); its internal date is
// the file's mtime.
func (s *Session) Append(mailbox string, r imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error) {
	f, err := s.folderOf(mailbox, tryCreate)
	if err != nil {
		return nil, err
	}
	var flags []string
	for _, fl := range options.Flags {
		if !strings.EqualFold(string(fl), string(flagRecent)) {
			flags = append(flags, string(fl))
		}
	}
	m, validity, err := f.Append(r, flags, options.Time, int64(s.AppendLimit()))
	switch {
	case errors.Is(err, maildir.ErrQuotaExceeded):
		return nil, errOverQuota
	case errors.Is(err, maildir.ErrMessageTooLarge):
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTooBig, Text: "the message is larger than the APPENDLIMIT"}
	case errors.Is(err, maildir.ErrTooManyKeywords):
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeLimit, Text: "the mailbox has 26 keywords already"}
	case err != nil:
		return nil, s.internal("append to "+mailbox, err)
	}
	return &imap.AppendData{UID: imap.UID(m.UID), UIDValidity: validity}, nil
}

// Poll implements imapserver.Session: what the view learnt since the
// last command, in the order RFC 9051 §7 wants.
func (s *Session) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	if s.view == nil {
		return nil
	}
	ch, err := s.view.Poll(allowExpunge)
	if errors.Is(err, maildir.ErrValidityChanged) {
		// RFC 9051 §2.3.1.1: every UID the client holds is void.
		s.st.Log.Warn("UIDVALIDITY changed under a session", "folder", s.folder.Name())
		return &imap.Error{Type: imap.StatusResponseTypeBye, Code: "UIDNOTSTICKY", Text: "the mailbox was rebuilt; select it again"}
	}
	if err != nil {
		return s.internal("poll", err)
	}
	return writeChanges(w, ch)
}

func writeChanges(w *imapserver.UpdateWriter, ch *maildir.Changes) error {
	for _, e := range ch.Expunged {
		if err := w.WriteExpunge(e.Seq); err != nil {
			return err
		}
	}
	if ch.MailboxFlags != nil {
		if err := w.WriteMailboxFlags(toFlags(ch.MailboxFlags)); err != nil {
			return err
		}
	}
	if ch.Exists > 0 || len(ch.Expunged) > 0 {
		if err := w.WriteNumMessages(ch.Exists); err != nil {
			return err
		}
		if len(ch.Added) > 0 {
			if err := w.WriteNumRecent(ch.Recent); err != nil {
				return err
			}
		}
	}
	for _, m := range ch.Flagged {
		if err := w.WriteMessageFlags(m.Seq, imap.UID(m.UID), toFlags(m.Flags)); err != nil {
			return err
		}
	}
	return nil
}

// Idle implements imapserver.Session: changes reach the client within
// the watch's interval (inotify, or a look every second).
func (s *Session) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	if s.view == nil {
		<-stop
		return nil
	}
	watch, err := s.folder.Watch(0)
	if err != nil {
		return s.internal("watch", err)
	}
	defer watch.Close()
	for {
		if err := s.Poll(w, true); err != nil {
			return err
		}
		select {
		case <-stop:
			return nil
		case <-watch.C:
		}
	}
}

// flagRecent is IMAP4rev1's \Recent (RFC 3501 §2.3.2), gone from
// go-imap's constants with IMAP4rev2.
const flagRecent imap.Flag = `\Recent`
