package maildir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrReadOnly is returned by a View's write calls when it was opened
// read-only (IMAP EXAMINE, RFC 9051 §6.3.3).
var ErrReadOnly = errors.New("maildir: folder opened read-only")

// ErrValidityChanged is returned by Poll when the folder's UIDVALIDITY is
// no longer the one the view was opened with (its index was lost and
// rebuilt): every UID the client holds is void, and the session must end
// the selection (RFC 9051 §2.3.1.1).
var ErrValidityChanged = errors.New("maildir: UIDVALIDITY changed")

// ErrNoSuchMessage is wrapped when a UID or sequence number names no
// message of the view.
var ErrNoSuchMessage = errors.New("maildir: no such message")

// View is one session's view of a folder: the messages the client has
// been told of, numbered 1..Len by sequence number (RFC 9051 §2.3.1.2) in
// UID order. It changes only when its own calls change it, so sequence
// numbers the client sent mean what the client meant: Poll brings it up
// to date and says what to tell the client.
//
// A View is what SELECT and EXAMINE open; every IMAP command of the
// selected state maps to one of its calls:
//
//	SELECT / EXAMINE    Folder.View (UIDValidity, UIDNext, Len, Recent, Flags)
//	FETCH               Each, Message, Open (nothing but Open reads a file)
//	STORE               Store
//	EXPUNGE, CLOSE      Expunge
//	COPY, MOVE          Copy, Move (UIDPLUS: the new UIDs)
//	NOOP, IDLE, others  Poll (IDLE waits on Folder.Watch between polls)
//
// A View is not safe for concurrent use; a session uses its own.
type View struct {
	f        *Folder
	readOnly bool
	validity uint32
	next     uint32 // UIDNEXT as the client was told it
	msgs     []viewMsg
	kw       *Keywords
	kwList   []string
	keepNew  bool
	changed  bool // a write call of the view changed a file
	mu       sync.Mutex
}

// viewMsg is a message as the view holds it.
type viewMsg struct {
	e indexEntry
	// recent is RFC 3501's \Recent: this view was the first to see the
	// message, in new/.
	recent bool
	// gone marks an expunge not yet told (Poll without allowExpunge).
	gone bool
}

// View opens a session's view of the folder. Unless readOnly, messages in
// new/ move to cur/ and are \Recent in this view only (RFC 3501 §2.3.2):
// no other session will see them as recent.
func (f *Folder) View(readOnly bool) (*View, error) {
	return f.OpenView(ViewOptions{ReadOnly: readOnly})
}

// ViewOptions change what OpenView does.
type ViewOptions struct {
	// ReadOnly refuses every write call (EXAMINE).
	ReadOnly bool
	// KeepNew leaves messages in new/ where they are, none \Recent: a
	// POP3 maildrop moves them at QUIT (ClaimNew), when the session
	// has committed.
	KeepNew bool
}

// OpenView is View with options.
func (f *Folder) OpenView(opt ViewOptions) (*View, error) {
	readOnly := opt.ReadOnly || opt.KeepNew
	v := &View{f: f, readOnly: opt.ReadOnly}
	snap, err := f.snapshot()
	if err != nil {
		return nil, err
	}
	v.validity, v.next = snap.validity, snap.next
	if err := v.loadKeywords(); err != nil {
		return nil, err
	}
	v.msgs = make([]viewMsg, len(snap.entries))
	var fresh []int
	for i, e := range snap.entries {
		v.msgs[i] = viewMsg{e: e}
		if e.new && !readOnly {
			v.msgs[i].recent = true
			fresh = append(fresh, i)
		}
	}
	if err := v.claimRecent(fresh); err != nil {
		return nil, err
	}
	v.keepNew = opt.KeepNew
	return v, nil
}

// claimRecent moves the messages at these places of the view from new/
// to cur/, and follows them there.
func (v *View) claimRecent(at []int) error {
	if len(at) == 0 {
		return nil
	}
	items := make([]known, len(at))
	for k, i := range at {
		e := &v.msgs[i].e
		items[k] = known{uid: e.uid, name: e.name, new: e.new}
	}
	v.changed = true
	out, err := v.f.renameKnown(items, func(old string) string { return old })
	if err != nil {
		return err
	}
	for k, i := range at {
		if out[k].name != "" {
			v.msgs[i].e.setName(out[k].name, out[k].new)
		}
	}
	return nil
}

func (v *View) loadKeywords() error {
	kw, err := v.f.Keywords()
	if err != nil {
		return err
	}
	v.kw, v.kwList = kw, kw.List()
	return nil
}

// Folder returns the folder the view is of.
func (v *View) Folder() *Folder { return v.f }

// ReadOnly reports whether the view was opened read-only.
func (v *View) ReadOnly() bool { return v.readOnly }

// UIDValidity is the folder's UIDVALIDITY (RFC 9051 §2.3.1.1).
func (v *View) UIDValidity() uint32 { return v.validity }

// UIDNext is the UID the next message will get, as the client was last
// told (RFC 9051 §7.3.1).
func (v *View) UIDNext() uint32 { return v.next }

// Len is the number of messages in the view (EXISTS).
func (v *View) Len() uint32 { return uint32(len(v.msgs)) }

// Recent is how many messages are \Recent in this view.
func (v *View) Recent() uint32 {
	var n uint32
	for _, m := range v.msgs {
		if m.recent {
			n++
		}
	}
	return n
}

// Flags are the flags messages of the folder can have: the system flags
// and the folder's keywords (the FLAGS response, RFC 9051 §7.3.5).
func (v *View) Flags() []string { return append(SystemFlags(), v.kwList...) }

// CanCreateKeywords reports whether a STORE may add keywords the folder
// has not seen yet (PERMANENTFLAGS' \*): false when the 26 letters are
// spent.
func (v *View) CanCreateKeywords() bool { return len(v.kwList) < 26 }

// FirstUnseen is the sequence number of the first message without \Seen,
// 0 when there is none (the UNSEEN response of IMAP4rev1).
func (v *View) FirstUnseen() uint32 {
	for i, m := range v.msgs {
		if !m.e.mask.has('S') {
			return uint32(i + 1)
		}
	}
	return 0
}

func hasLetter(letters string, c byte) bool {
	for i := 0; i < len(letters); i++ {
		if letters[i] == c {
			return true
		}
	}
	return false
}

// UID returns the UID of sequence number seq (1-based), 0 when out of
// range.
func (v *View) UID(seq uint32) uint32 {
	if seq < 1 || int(seq) > len(v.msgs) {
		return 0
	}
	return v.msgs[seq-1].e.uid
}

// Seq returns the sequence number of a UID in the view, 0 when the view
// has no such message.
func (v *View) Seq(uid uint32) uint32 {
	i, ok := v.index(uid)
	if !ok {
		return 0
	}
	return uint32(i + 1)
}

func (v *View) index(uid uint32) (int, bool) {
	i := sort.Search(len(v.msgs), func(i int) bool { return v.msgs[i].e.uid >= uid })
	return i, i < len(v.msgs) && v.msgs[i].e.uid == uid
}

// Message returns the message at sequence number seq.
func (v *View) Message(seq uint32) (Message, error) {
	if seq < 1 || int(seq) > len(v.msgs) {
		return Message{}, fmt.Errorf("%w: sequence number %d of %d", ErrNoSuchMessage, seq, len(v.msgs))
	}
	return v.message(int(seq - 1)), nil
}

func (v *View) message(i int) Message {
	m := v.msgs[i]
	msg := v.f.entryMessage(m.e, v.kw)
	msg.Seq, msg.Recent = uint32(i+1), m.recent
	return msg
}

// Each calls fn with the messages whose sequence numbers are from..to
// (both included, clamped to the view), in order, until fn returns false.
// It reads no file: everything a Message holds comes from the index.
func (v *View) Each(from, to uint32, fn func(Message) bool) {
	if from < 1 {
		from = 1
	}
	to = min(to, uint32(len(v.msgs)))
	for seq := from; seq <= to; seq++ {
		if !fn(v.message(int(seq - 1))) {
			return
		}
	}
}

// Open opens the file of a message of the view for reading (FETCH of a
// body section). The error wraps fs.ErrNotExist when another session or
// program has removed it meanwhile.
func (v *View) Open(uid uint32) (*os.File, error) {
	i, ok := v.index(uid)
	if !ok {
		return nil, fmt.Errorf("%w: UID %d", ErrNoSuchMessage, uid)
	}
	e := &v.msgs[i].e
	// Where the view saw it first; looked for only when it has moved.
	// open(2) and os.NewFile, not os.Open: a regular file opened
	// blocking is not put in Go's poller, for which os.Open makes
	// system calls of its own for every message (a POP3 session opens
	// every one).
	p := v.f.path + "/" + dirOf(e.new) + "/" + e.name
	fd, err := openRetry(p, unix.O_RDONLY, 0)
	if err == nil {
		return os.NewFile(uintptr(fd), p), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return v.f.OpenFile(e.unique())
}

// Unique returns the unique name of the message at sequence number seq
// (POP3's UIDL), "" when out of range. It makes no string.
func (v *View) Unique(seq uint32) string {
	if seq < 1 || int(seq) > len(v.msgs) {
		return ""
	}
	return v.msgs[seq-1].e.unique()
}

// Size returns the RFC 822 size (LF counted as CRLF) of the message at
// sequence number seq, -1 when out of range.
func (v *View) Size(seq uint32) int64 {
	if seq < 1 || int(seq) > len(v.msgs) {
		return -1
	}
	return v.msgs[seq-1].e.rfc822
}

// IsNew reports whether the message at sequence number seq is in new/:
// delivered and seen by no session yet.
func (v *View) IsNew(seq uint32) bool {
	return seq >= 1 && int(seq) <= len(v.msgs) && v.msgs[seq-1].e.new
}

// HasFlag reports whether the message at sequence number seq has a flag.
func (v *View) HasFlag(seq uint32, flag string) bool {
	if seq < 1 || int(seq) > len(v.msgs) {
		return false
	}
	if c, ok := systemLetter(flag); ok {
		return v.msgs[seq-1].e.mask.has(c)
	}
	c, ok := v.kw.Letter(flag)
	return ok && v.msgs[seq-1].e.mask.has(c)
}

// Delete removes the messages with the given UIDs whatever their flags
// (POP3's DELE at QUIT, RFC 1939 §6) and returns their EXPUNGE responses,
// with those of expunges by others the view had not told yet. A message
// already gone counts as removed.
func (v *View) Delete(uids []uint32) ([]Expunged, error) {
	if v.readOnly {
		return nil, ErrReadOnly
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	var at []int
	var items []known
	for _, uid := range uids {
		if i, ok := v.index(uid); ok && !v.msgs[i].gone {
			e := &v.msgs[i].e
			at = append(at, i)
			items = append(items, known{uid: e.uid, name: e.name, new: e.new})
		}
	}
	v.changed = v.changed || len(items) > 0
	removed, err := v.f.removeKnown(items, nil)
	for k, i := range at {
		if removed[k] {
			v.msgs[i].gone = true
		}
	}
	if err != nil {
		return nil, err
	}
	return v.dropGone(), nil
}

// ClaimNew moves the messages of the view still in new/ to cur/, their
// flags kept: a POP3 session has seen them, and they are no longer new
// to an IMAP client (qmail-pop3d and Dovecot do the same).
func (v *View) ClaimNew() error {
	if v.readOnly {
		return ErrReadOnly
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	var at []int
	for i := range v.msgs {
		if v.msgs[i].e.new && !v.msgs[i].gone {
			at = append(at, i)
		}
	}
	return v.claimRecent(at)
}

// Expunged is one message gone from a view: the sequence number to send
// in an EXPUNGE response when the list is sent in its order (each number
// already counts the ones before it as gone), and its UID.
type Expunged struct {
	Seq, UID uint32
}

// Changes is what a Poll found: what to tell the client, in the order the
// fields are listed, every list in UID order.
type Changes struct {
	// Expunged are EXPUNGE responses (empty when Poll was told not to
	// send them).
	Expunged []Expunged
	// Exists is the new message count for an EXISTS response, 0 when
	// there is none to send (no message added or expunged).
	Exists uint32
	// Recent is the count for a RECENT response, sent with EXISTS.
	Recent uint32
	// Added are the messages that came in, with their sequence numbers.
	Added []Message
	// Flagged are messages whose flags another session or program
	// changed: a FETCH (FLAGS) response each.
	Flagged []Message
	// MailboxFlags, when not nil, is a new FLAGS response: keywords were
	// added to the folder.
	MailboxFlags []string
}

// Empty reports whether there is nothing to tell.
func (c *Changes) Empty() bool {
	return len(c.Expunged) == 0 && c.Exists == 0 && len(c.Flagged) == 0 && c.MailboxFlags == nil
}

// Poll brings the view up to date with the folder and returns what
// changed since the last Poll (or since View), for the untagged responses
// of RFC 9051 §7.
//
// allowExpunge false is for the commands during which EXPUNGE must not be
// sent (FETCH, STORE and SEARCH by sequence number, RFC 9051 §7.5.1): the
// expunged messages then stay in the view, their sequence numbers still
// valid, until a Poll that allows it. New messages, flag changes and new
// keywords are reported either way.
func (v *View) Poll(allowExpunge bool) (*Changes, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	snap, err := v.f.snapshot()
	if err != nil {
		return nil, err
	}
	if snap.validity != v.validity {
		return nil, fmt.Errorf("%w: %d, was %d", ErrValidityChanged, snap.validity, v.validity)
	}
	ch := &Changes{}
	oldKw := v.kwList
	if err := v.loadKeywords(); err != nil {
		return nil, err
	}
	if !slices.Equal(oldKw, v.kwList) {
		ch.MailboxFlags = v.Flags()
	}
	// A merge of the view and the folder, both in UID order.
	cur := snap.entries
	j := 0
	var flagged []int // indexes into v.msgs, before expunges
	for i := range v.msgs {
		m := &v.msgs[i]
		for j < len(cur) && cur[j].uid < m.e.uid {
			j++ // a UID the view never had below its last: see snapshot
		}
		if j < len(cur) && cur[j].uid == m.e.uid {
			if cur[j].mask != m.e.mask {
				flagged = append(flagged, i)
			}
			m.e = cur[j]
			j++
			continue
		}
		m.gone = true
	}
	var lastUID uint32
	if n := len(v.msgs); n > 0 {
		lastUID = v.msgs[n-1].e.uid
	}
	var fresh []int
	added := len(v.msgs)
	for ; j < len(cur); j++ {
		if cur[j].uid <= lastUID {
			continue
		}
		vm := viewMsg{e: cur[j]}
		if cur[j].new && !v.readOnly && !v.keepNew {
			vm.recent = true
			fresh = append(fresh, len(v.msgs))
		}
		v.msgs = append(v.msgs, vm)
	}
	if snap.next > v.next {
		v.next = snap.next
	}
	if err := v.claimRecent(fresh); err != nil {
		return nil, err
	}
	flaggedUIDs := make([]uint32, 0, len(flagged))
	for _, i := range flagged {
		if !v.msgs[i].gone {
			flaggedUIDs = append(flaggedUIDs, v.msgs[i].e.uid)
		}
	}
	// Counted before the expunges, after which the added messages are
	// still the last ones.
	nAdded := len(v.msgs) - added
	if allowExpunge {
		ch.Expunged = v.dropGone()
	}
	for i := len(v.msgs) - nAdded; i < len(v.msgs); i++ {
		ch.Added = append(ch.Added, v.message(i))
	}
	for _, uid := range flaggedUIDs {
		if i, ok := v.index(uid); ok {
			ch.Flagged = append(ch.Flagged, v.message(i))
		}
	}
	if nAdded > 0 || len(ch.Expunged) > 0 {
		ch.Exists = uint32(len(v.msgs))
		ch.Recent = v.Recent()
	}
	return ch, nil
}

// dropGone removes the messages marked gone and returns their EXPUNGE
// responses.
func (v *View) dropGone() []Expunged {
	if !slices.ContainsFunc(v.msgs, func(m viewMsg) bool { return m.gone }) {
		return nil // the usual case: nothing is moved
	}
	var out []Expunged
	k := 0
	for _, m := range v.msgs {
		if m.gone {
			// Earlier ones are removed already: this one's number is
			// its place among those kept so far.
			out = append(out, Expunged{Seq: uint32(k + 1), UID: m.e.uid})
			continue
		}
		v.msgs[k] = m
		k++
	}
	clear(v.msgs[k:])
	v.msgs = v.msgs[:k]
	return out
}

// Store changes the flags of the messages with the given UIDs (STORE and
// UID STORE, RFC 9051 §6.4.6) and returns them as they are now, in UID
// order, for the FETCH responses. Flags are in IMAP's terms; a keyword
// the folder has not seen gets a letter (ErrTooManyKeywords when the 26
// are spent). Add and remove apply to the flags each file has on disk
// now, so a change another session made meanwhile is kept. UIDs the view
// does not have are skipped; a message expunged meanwhile is left out of
// the result.
func (v *View) Store(uids []uint32, op FlagOp, flags []string) ([]Message, error) {
	done, err := v.store(uids, op, flags)
	if err != nil {
		return nil, err
	}
	return v.messagesByUID(done), nil
}

// StoreSilent is Store without the messages as they are after it: STORE
// FLAGS.SILENT (RFC 9051 §6.4.6), or POP3's QUIT, which make no FETCH
// response for the 100,000 messages they may flag.
func (v *View) StoreSilent(uids []uint32, op FlagOp, flags []string) error {
	_, err := v.store(uids, op, flags)
	return err
}

func (v *View) store(uids []uint32, op FlagOp, flags []string) ([]uint32, error) {
	if v.readOnly {
		return nil, ErrReadOnly
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	change, err := v.f.newFlagChange(op, flags)
	if err != nil {
		return nil, err
	}
	if !change.set && !change.hasSomething {
		return uids, nil
	}
	// Sized once: a POP3 QUIT flags 100,000 messages, and growing these
	// by doubling was most of the garbage it made.
	at := make([]int, 0, len(uids))
	items := make([]known, 0, len(uids))
	for _, uid := range uids {
		if i, ok := v.index(uid); ok && !v.msgs[i].gone {
			e := &v.msgs[i].e
			at = append(at, i)
			items = append(items, known{uid: e.uid, name: e.name, new: e.new})
		}
	}
	v.changed = v.changed || len(items) > 0
	out, err := v.f.renameKnown(items, change.apply)
	if err != nil {
		return nil, err
	}
	if err := v.loadKeywords(); err != nil {
		return nil, err
	}
	// The view takes the names the renames left, so Poll does not tell
	// the session of its own change again.
	done := make([]uint32, 0, len(at))
	for k, i := range at {
		if out[k].name == "" {
			continue // gone: its expunge comes with a Poll
		}
		v.msgs[i].e.setName(out[k].name, out[k].new)
		done = append(done, v.msgs[i].e.uid)
	}
	return done, nil
}

func (v *View) messagesByUID(uids []uint32) []Message {
	sorted := slices.Clone(uids)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	out := make([]Message, 0, len(sorted))
	for _, uid := range sorted {
		if i, ok := v.index(uid); ok && !v.msgs[i].gone {
			out = append(out, v.message(i))
		}
	}
	return out
}

// Expunge removes the messages with \Deleted (EXPUNGE, CLOSE; with uids,
// UID EXPUNGE of RFC 4315 §2.1: only those of them) and returns the
// EXPUNGE responses, which include expunges by others that the view had
// not told yet. A message is removed only if its file still has \Deleted
// at the moment of removal, so a session that took the flag away
// meanwhile wins.
func (v *View) Expunge(uids []uint32) ([]Expunged, error) {
	if v.readOnly {
		return nil, ErrReadOnly
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	var only map[uint32]bool
	if uids != nil {
		only = make(map[uint32]bool, len(uids))
		for _, u := range uids {
			only[u] = true
		}
	}
	var doomed []int
	for i, m := range v.msgs {
		if !m.gone && (only == nil || only[m.e.uid]) && m.e.mask.has('T') {
			doomed = append(doomed, i)
		}
	}
	items := make([]known, len(doomed))
	for k, i := range doomed {
		e := &v.msgs[i].e
		items[k] = known{uid: e.uid, name: e.name, new: e.new}
	}
	v.changed = v.changed || len(items) > 0
	removed, err := v.f.removeKnown(items, func(letters string) bool { return hasLetter(letters, 'T') })
	for k, i := range doomed {
		if removed[k] {
			v.msgs[i].gone = true
		}
	}
	if err != nil {
		return nil, err
	}
	return v.dropGone(), nil
}

// CopyResult is what COPY and MOVE tell with UIDPLUS (RFC 4315 §3,
// COPYUID): the destination's UIDVALIDITY, and the UIDs of the copies in
// the order of the source UIDs they came from.
type CopyResult struct {
	UIDValidity uint32
	SourceUIDs  []uint32
	DestUIDs    []uint32
}

// Copy copies the messages with the given UIDs to dst, keeping their
// flags and internal dates, and returns their new UIDs (COPY, RFC 9051
// §6.4.7 with RFC 4315's COPYUID). The copies are hard links where the
// file system allows, durable before Copy returns. UIDs the view does not
// have, or whose message is gone, are skipped.
func (v *View) Copy(uids []uint32, dst *Folder) (*CopyResult, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.copyTo(uids, dst, false)
}

// Move moves the messages with the given UIDs to dst (MOVE, RFC 6851):
// their copies' UIDs as Copy gives them, and the EXPUNGE responses for
// them in this view. Each file is renamed, so a crash leaves it in one
// folder or the other, never in neither.
func (v *View) Move(uids []uint32, dst *Folder) (*CopyResult, []Expunged, error) {
	if v.readOnly {
		return nil, nil, ErrReadOnly
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.changed = true
	res, err := v.copyTo(uids, dst, true)
	if err != nil {
		return nil, nil, err
	}
	return res, v.dropGone(), nil
}

func (v *View) copyTo(uids []uint32, dst *Folder, move bool) (*CopyResult, error) {
	sorted := slices.Clone(uids)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	var src []int
	for _, uid := range sorted {
		if i, ok := v.index(uid); ok && !v.msgs[i].gone {
			src = append(src, i)
		}
	}
	res := &CopyResult{}
	if len(src) == 0 {
		st, err := dst.Status()
		if err != nil {
			return nil, err
		}
		res.UIDValidity = st.UIDValidity
		return res, nil
	}
	items := make([]known, len(src))
	for k, i := range src {
		e := &v.msgs[i].e
		items[k] = known{uid: e.uid, name: e.name, new: e.new}
	}
	placed, err := v.f.transfer(items, dst, v.kw, move)
	if err != nil {
		return nil, err
	}
	validity, dstUIDs, err := dst.giveUIDs(placed)
	if err != nil {
		return nil, err
	}
	for k, i := range src {
		if placed[k] == "" {
			continue
		}
		res.SourceUIDs = append(res.SourceUIDs, v.msgs[i].e.uid)
		res.DestUIDs = append(res.DestUIDs, dstUIDs[k])
		if move {
			v.msgs[i].gone = true
		}
	}
	res.UIDValidity = validity
	return res, nil
}

// Settle leaves the folder's index current after the view's changes, so
// that the next session to open the folder reads the index alone (see
// Folder.Settle). A session calls it when it is done changing, not after
// every change.
func (v *View) Settle() error {
	if !v.changed {
		return nil // nothing of ours to record: the index is as it was
	}
	v.changed = false
	return v.f.Settle()
}

// Close ends the view. It holds no file or lock; Close is for symmetry
// with the watch and for what a later index may keep per view.
func (v *View) Close() error { return nil }

// Status is what STATUS tells of a folder (RFC 9051 §6.3.11), from the
// index, without opening a view.
type Status struct {
	Messages, Unseen, Deleted, Recent uint32
	UIDNext, UIDValidity              uint32
	// Size is the sum of the messages' RFC 822 sizes (STATUS=SIZE,
	// RFC 8438).
	Size int64
}

// Status returns the folder's STATUS data. Recent counts the messages in
// new/, which the next session to select the folder will see as recent.
func (f *Folder) Status() (Status, error) {
	snap, err := f.snapshot()
	if err != nil {
		return Status{}, err
	}
	st := Status{Messages: uint32(len(snap.entries)), UIDNext: snap.next, UIDValidity: snap.validity}
	for _, e := range snap.entries {
		if !e.mask.has('S') {
			st.Unseen++
		}
		if e.mask.has('T') {
			st.Deleted++
		}
		if e.new {
			st.Recent++
		}
		st.Size += e.rfc822
	}
	return st, nil
}

// entryMessage builds the Message of an index entry.
func (f *Folder) entryMessage(e indexEntry, kw *Keywords) Message {
	unique, letters := splitName(e.name)
	m := Message{UID: e.uid, Unique: unique, Name: e.name, Dir: "cur", Flags: imapFlags(letters, kw), letters: letters, Size: e.size, RFC822Size: e.rfc822, Date: time.Unix(e.date, 0)}
	if e.new {
		m.Dir = "new"
	}
	m.Path = f.path + "/" + m.Dir + "/" + e.name
	return m
}
