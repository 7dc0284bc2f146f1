package imapd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"time"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
)

// SORT and THREAD (RFC 5256) are the front's: imapserver has neither.
// The search criteria go to imapserver as a SEARCH of the front's own,
// so they are parsed and matched exactly as SEARCH's are; the front then
// orders or threads what it found from the messages' headers.

// sortMessage is what SORT and THREAD compare of a message.
type sortMessage struct {
	uid, seq   uint32
	arrival    time.Time
	sent       time.Time // the Date field, else the internal date (RFC 5256 §2.2)
	size       int64
	subject    string // base subject (RFC 5256 §2.1), folded for comparison
	replyFwd   bool   // the subject said it is a reply or forward
	from       string // the first address's mailbox part, folded
	to, cc     string
	messageID  string
	references []string
}

// maxSortHeader bounds what is read of a message's header for SORT and
// THREAD.
const maxSortHeader = 256 << 10

// sortMessages reads what SORT and THREAD need of the messages with the
// given UIDs (in the session's view).
func (s *Session) sortMessages(uids []uint32) ([]sortMessage, error) {
	out := make([]sortMessage, 0, len(uids))
	for _, uid := range uids {
		seq := s.view.Seq(uid)
		m, err := s.view.Message(seq)
		if err != nil {
			continue
		}
		sm := sortMessage{uid: uid, seq: seq, arrival: m.Date, sent: m.Date, size: m.RFC822Size}
		h, err := s.readHeader(uid)
		if errors.Is(err, fs.ErrNotExist) {
			continue // expunged meanwhile
		}
		if err != nil {
			return nil, err
		}
		mh := mail.Header{Header: gomessage.Header{Header: h}}
		if d, err := mh.Date(); err == nil && !d.IsZero() {
			sm.sent = d
		}
		subj, err := mh.Subject()
		if err != nil {
			subj = h.Get("Subject")
		}
		base, replyFwd := baseSubject(subj)
		sm.subject, sm.replyFwd = strings.ToLower(base), replyFwd
		sm.from = firstMailbox(mh, "From")
		sm.to = firstMailbox(mh, "To")
		sm.cc = firstMailbox(mh, "Cc")
		if ids, err := mh.MsgIDList("Message-Id"); err == nil && len(ids) > 0 {
			sm.messageID = ids[0]
		}
		if refs, err := mh.MsgIDList("References"); err == nil && len(refs) > 0 {
			sm.references = refs
		} else if irt, err := mh.MsgIDList("In-Reply-To"); err == nil && len(irt) > 0 {
			sm.references = irt[:1]
		}
		out = append(out, sm)
	}
	return out, nil
}

func (s *Session) readHeader(uid uint32) (textproto.Header, error) {
	f, err := s.view.Open(uid)
	if err != nil {
		return textproto.Header{}, err
	}
	defer f.Close()
	h, err := textproto.ReadHeader(bufio.NewReader(io.LimitReader(f, maxSortHeader)))
	if err != nil {
		// A message without a header sorts as one with empty fields.
		return textproto.Header{}, nil
	}
	return h, nil
}

// firstMailbox is the mailbox part of a field's first address (RFC 5256
// §3, addr-mailbox), folded.
func firstMailbox(mh mail.Header, key string) string {
	list, err := mh.AddressList(key)
	if err != nil || len(list) == 0 {
		return ""
	}
	local, _, _ := strings.Cut(list[0].Address, "@")
	return strings.ToLower(local)
}

// baseSubject extracts the base subject of RFC 5256 §2.1: without
// "Re:", "Fwd:" and "[list]" leaders, "(fwd)" trailers and "[fwd: ...]"
// wrappers, with whitespace runs made one space. replyFwd says whether
// a leader, trailer or wrapper of a reply or forward was taken off
// (REFERENCES, step 5).
func baseSubject(s string) (base string, replyFwd bool) {
	s = strings.Join(strings.Fields(s), " ")
	for {
		// (2) trailers
		for {
			t := strings.TrimRight(s, " ")
			if l := len(t); l >= 5 && strings.EqualFold(t[l-5:], "(fwd)") {
				t, replyFwd = t[:l-5], true
			}
			if t == s {
				break
			}
			s = t
		}
		// (3), (4) leaders and blobs
		for {
			t := strings.TrimLeft(s, " ")
			if u := stripLeader(t); u != t {
				t, replyFwd = u, true
			}
			if _, rest, ok := cutBlob(t); ok && strings.TrimSpace(rest) != "" {
				t = strings.TrimLeft(rest, " ")
			}
			if t == s {
				break
			}
			s = t
		}
		// (6) [fwd: ...]
		if len(s) > 6 && strings.EqualFold(s[:5], "[fwd:") && s[len(s)-1] == ']' {
			s, replyFwd = strings.TrimSpace(s[5:len(s)-1]), true
			continue
		}
		return s, replyFwd
	}
}

// stripLeader removes one subj-refwd: ("re" / "fw" / "fwd") *WSP
// [subj-blob] ":".
func stripLeader(s string) string {
	low := strings.ToLower(s)
	for _, w := range []string{"fwd", "fw", "re"} {
		if !strings.HasPrefix(low, w) {
			continue
		}
		rest := strings.TrimLeft(s[len(w):], " ")
		if _, r, ok := cutBlob(rest); ok {
			rest = strings.TrimLeft(r, " ")
		}
		if strings.HasPrefix(rest, ":") {
			return rest[1:]
		}
	}
	return s
}

// cutBlob cuts a leading "[...]" with no brackets inside.
func cutBlob(s string) (blob, rest string, ok bool) {
	if !strings.HasPrefix(s, "[") {
		return "", s, false
	}
	end := strings.IndexAny(s[1:], "[]")
	if end < 0 || s[1+end] != ']' {
		return "", s, false
	}
	return s[:end+2], s[end+2:], true
}

// sortKey is one SORT criterion (RFC 5256 §3).
type sortKey struct {
	name    string
	reverse bool
}

func parseSortKeys(a *args) ([]sortKey, bool) {
	if !a.special('(') {
		return nil, a.fail("SORT wants a parenthesised list of sort criteria")
	}
	var keys []sortKey
	reverse := false
	for !a.special(')') {
		if (len(keys) > 0 || reverse) && !a.sp() {
			return nil, false
		}
		w, ok := a.atom(false)
		if !ok {
			return nil, false
		}
		w = strings.ToUpper(w)
		switch w {
		case "REVERSE":
			if reverse {
				return nil, a.fail("REVERSE twice")
			}
			reverse = true
			continue
		case "ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO":
		default:
			return nil, a.fail("unknown sort criterion %s", w)
		}
		keys = append(keys, sortKey{name: w, reverse: reverse})
		reverse = false
	}
	if len(keys) == 0 || reverse {
		return nil, a.fail("an empty sort criterion")
	}
	return keys, true
}

func compareBy(k sortKey, a, b *sortMessage) int {
	var c int
	switch k.name {
	case "ARRIVAL":
		c = a.arrival.Compare(b.arrival)
	case "DATE":
		c = a.sent.UTC().Compare(b.sent.UTC())
	case "SIZE":
		c = cmpInt(a.size, b.size)
	case "SUBJECT":
		c = strings.Compare(a.subject, b.subject)
	case "FROM":
		c = strings.Compare(a.from, b.from)
	case "TO":
		c = strings.Compare(a.to, b.to)
	case "CC":
		c = strings.Compare(a.cc, b.cc)
	}
	if k.reverse {
		c = -c
	}
	return c
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// sortCmd serves SORT and UID SORT (RFC 5256 §3).
func (f *front) sortCmd(tag, name, rest string) error {
	sess, ok := f.st.session().(*Session)
	if !ok || sess.view == nil {
		return f.out.line("%s BAD [CLIENTBUG] %s is taken with a mailbox selected", tag, name)
	}
	a := &args{s: rest}
	keys, ok := parseSortKeys(a)
	if !ok || !a.sp() {
		return f.out.line("%s BAD [CLIENTBUG] %s: %v", tag, name, a.err)
	}
	msgs, status, err := f.searchFor(tag, name, a.s)
	if err != nil || status != "" {
		return err
	}
	slices.SortStableFunc(msgs, func(x, y sortMessage) int {
		for _, k := range keys {
			if c := compareBy(k, &x, &y); c != 0 {
				return c
			}
		}
		return cmpInt(int64(x.seq), int64(y.seq))
	})
	uid := strings.HasPrefix(name, "UID ")
	var b strings.Builder
	b.WriteString("* SORT")
	for _, m := range msgs {
		b.WriteByte(' ')
		if uid {
			b.WriteString(strconv.FormatUint(uint64(m.uid), 10))
		} else {
			b.WriteString(strconv.FormatUint(uint64(m.seq), 10))
		}
	}
	if err := f.out.line("%s", b.String()); err != nil {
		return clientErr(err)
	}
	return f.out.line("%s OK %s completed", tag, name)
}

// searchFor runs the search part of a SORT or THREAD ("charset
// criteria") through imapserver and reads the messages found. status is
// set when the client was answered already (a bad charset or criteria).
func (f *front) searchFor(tag, name, charsetAndCriteria string) ([]sortMessage, string, error) {
	a := &args{s: charsetAndCriteria}
	charset, ok := a.astring()
	if !ok || !a.sp() {
		return nil, "BAD", f.out.line("%s BAD [CLIENTBUG] %s wants a charset and search criteria", tag, name)
	}
	switch strings.ToUpper(charset) {
	case "UTF-8", "US-ASCII":
	default:
		return nil, "NO", f.out.line("%s NO [BADCHARSET (UTF-8 US-ASCII)] %s takes UTF-8 and US-ASCII", tag, name)
	}
	// SEARCH, not UID SEARCH, for the sequence-number forms: no
	// EXPUNGE may be sent during them (RFC 9051 §7.5.1).
	search := "SEARCH"
	if strings.HasPrefix(name, "UID ") {
		search = "UID SEARCH"
	}
	f.mu.Lock()
	f.capture, f.captured = "SEARCH", nil
	f.mu.Unlock()
	status, err := f.internalCommand(search + " CHARSET " + charset + " " + a.s)
	f.mu.Lock()
	lines := f.captured
	f.capture, f.captured = "", nil
	f.mu.Unlock()
	if err != nil {
		return nil, "", err
	}
	if status != "OK" {
		return nil, status, f.out.line("%s %s [CLIENTBUG] %s: the search criteria are not understood", tag, status, name)
	}
	var nums []uint32
	for _, l := range lines {
		nums = append(nums, searchNumbers(l)...)
	}
	sess := f.st.session().(*Session)
	uids := nums
	if search == "SEARCH" {
		uids = make([]uint32, 0, len(nums))
		for _, seq := range nums {
			if u := sess.view.UID(seq); u != 0 {
				uids = append(uids, u)
			}
		}
	}
	msgs, err := sess.sortMessages(uids)
	if err != nil {
		sess.st.Log.Error("read headers to sort", "err", err)
		return nil, "NO", f.out.line("%s NO [SERVERBUG] %s failed; try again later", tag, name)
	}
	return msgs, "", nil
}

// thread serves THREAD and UID THREAD (RFC 5256 §4) with the
// ORDEREDSUBJECT and REFERENCES algorithms.
func (f *front) thread(tag, name, rest string) error {
	sess, ok := f.st.session().(*Session)
	if !ok || sess.view == nil {
		return f.out.line("%s BAD [CLIENTBUG] %s is taken with a mailbox selected", tag, name)
	}
	a := &args{s: rest}
	alg, ok := a.atom(false)
	if !ok || !a.sp() {
		return f.out.line("%s BAD [CLIENTBUG] %s wants an algorithm, a charset and search criteria", tag, name)
	}
	alg = strings.ToUpper(alg)
	if alg != "ORDEREDSUBJECT" && alg != "REFERENCES" {
		return f.out.line("%s BAD [CLIENTBUG] the threading algorithms are ORDEREDSUBJECT and REFERENCES", tag)
	}
	msgs, status, err := f.searchFor(tag, name, a.s)
	if err != nil || status != "" {
		return err
	}
	var roots []*threadNode
	if alg == "ORDEREDSUBJECT" {
		roots = orderedSubject(msgs)
	} else {
		roots = references(msgs)
	}
	uid := strings.HasPrefix(name, "UID ")
	var b strings.Builder
	b.WriteString("* THREAD ")
	for _, r := range roots {
		writeThread(&b, r, uid, true)
	}
	if err := f.out.line("%s", strings.TrimRight(b.String(), " ")); err != nil {
		return clientErr(err)
	}
	return f.out.line("%s OK %s completed", tag, name)
}

// threadNode is a message, or a message only referred to (msg nil), in
// a thread.
type threadNode struct {
	msg      *sortMessage
	parent   *threadNode
	children []*threadNode
}

// date is what a node sorts by: its message's sent date, or, for one
// only referred to, its first child's (RFC 5256 §4, REFERENCES (4)).
func (n *threadNode) date() (time.Time, uint32) {
	if n.msg != nil {
		return n.msg.sent, n.msg.seq
	}
	if len(n.children) > 0 {
		return n.children[0].date()
	}
	return time.Time{}, 0
}

func byDate(nodes []*threadNode) {
	slices.SortStableFunc(nodes, func(a, b *threadNode) int {
		da, sa := a.date()
		db, sb := b.date()
		if c := da.UTC().Compare(db.UTC()); c != 0 {
			return c
		}
		return cmpInt(int64(sa), int64(sb))
	})
}

// writeThread writes a thread in RFC 5256 §4's notation: a parent
// followed by its one child, or by its children each in parentheses.
func writeThread(b *strings.Builder, n *threadNode, uid, top bool) {
	if top {
		b.WriteByte('(')
	}
	if n.msg != nil {
		if uid {
			b.WriteString(strconv.FormatUint(uint64(n.msg.uid), 10))
		} else {
			b.WriteString(strconv.FormatUint(uint64(n.msg.seq), 10))
		}
	}
	switch len(n.children) {
	case 0:
	case 1:
		if n.msg != nil {
			b.WriteByte(' ')
		}
		writeThread(b, n.children[0], uid, false)
	default:
		if n.msg != nil {
			b.WriteByte(' ')
		}
		for _, c := range n.children {
			writeThread(b, c, uid, true)
		}
	}
	if top {
		b.WriteByte(')')
	}
}

// orderedSubject threads by base subject: each subject's messages in
// sent order, the first the parent of the others (RFC 5256 §4).
func orderedSubject(msgs []sortMessage) []*threadNode {
	slices.SortStableFunc(msgs, func(a, b sortMessage) int {
		if c := strings.Compare(a.subject, b.subject); c != 0 {
			return c
		}
		if c := a.sent.UTC().Compare(b.sent.UTC()); c != 0 {
			return c
		}
		return cmpInt(int64(a.seq), int64(b.seq))
	})
	var roots []*threadNode
	for i := 0; i < len(msgs); {
		root := &threadNode{msg: &msgs[i]}
		j := i + 1
		for ; j < len(msgs) && msgs[j].subject == msgs[i].subject; j++ {
			root.children = append(root.children, &threadNode{msg: &msgs[j], parent: root})
		}
		roots = append(roots, root)
		i = j
	}
	byDate(roots)
	return roots
}

// references threads by Message-ID, References and In-Reply-To, as RFC
// 5256 §4 REFERENCES describes (after Jamie Zawinski's algorithm).
func references(msgs []sortMessage) []*threadNode {
	byID := map[string]*threadNode{}
	node := func(id string) *threadNode {
		n := byID[id]
		if n == nil {
			n = &threadNode{}
			byID[id] = n
		}
		return n
	}
	isAncestor := func(a, n *threadNode) bool {
		for p := n; p != nil; p = p.parent {
			if p == a {
				return true
			}
		}
		return false
	}
	link := func(parent, child *threadNode) {
		if child.parent != nil || parent == child || isAncestor(child, parent) {
			return
		}
		child.parent = parent
		parent.children = append(parent.children, child)
	}
	unlink := func(child *threadNode) {
		if p := child.parent; p != nil {
			p.children = slices.DeleteFunc(p.children, func(c *threadNode) bool { return c == child })
			child.parent = nil
		}
	}
	for i := range msgs {
		m := &msgs[i]
		// (1)(A) a message without an id, or with one seen already,
		// gets a unique one.
		id := m.messageID
		if id == "" || (byID[id] != nil && byID[id].msg != nil) {
			id = fmt.Sprintf("\x00tern-%d", m.uid)
		}
		n := node(id)
		n.msg = m
		// (1)(B) link the references in order.
		var prev *threadNode
		for _, ref := range m.references {
			r := node(ref)
			if prev != nil {
				link(prev, r)
			}
			prev = r
		}
		// (1)(C) the message's parent is its last reference.
		if prev != nil && prev != n && !isAncestor(n, prev) {
			unlink(n)
			n.parent = prev
			prev.children = append(prev.children, n)
		}
	}
	// (2) the root set.
	var roots []*threadNode
	seen := map[*threadNode]bool{}
	for _, n := range byID {
		if n.parent == nil && !seen[n] {
			seen[n] = true
			roots = append(roots, n)
		}
	}
	// (3) prune: empty nodes without children go; an empty node's
	// children move up, except a root's several children.
	roots = prune(roots, true)
	// (4) sort, children first, so a node's date is its first child's.
	var sortAll func([]*threadNode)
	sortAll = func(ns []*threadNode) {
		for _, n := range ns {
			sortAll(n.children)
			byDate(n.children)
		}
	}
	sortAll(roots)
	byDate(roots)
	// (5) roots with the same base subject go together.
	subjectOf := func(n *threadNode) string {
		if n.msg != nil {
			return n.msg.subject
		}
		if len(n.children) > 0 && n.children[0].msg != nil {
			return n.children[0].msg.subject
		}
		return ""
	}
	isReply := func(n *threadNode) bool { return n.msg != nil && n.msg.replyFwd }
	var merged []*threadNode
	bySubject := map[string]*threadNode{}
	for _, r := range roots {
		subj := subjectOf(r)
		first, ok := bySubject[subj]
		if subj == "" || !ok {
			if subj != "" {
				bySubject[subj] = r
			}
			merged = append(merged, r)
			continue
		}
		switch {
		case first.msg == nil && r.msg == nil:
			for _, c := range r.children {
				c.parent = first
			}
			first.children = append(first.children, r.children...)
		case first.msg == nil:
			r.parent = first
			first.children = append(first.children, r)
		case r.msg == nil:
			// r becomes the container of both.
			idx := slices.Index(merged, first)
			first.parent = r
			r.children = append(r.children, first)
			merged[idx] = r
			bySubject[subj] = r
		case isReply(r) && !isReply(first):
			r.parent = first
			first.children = append(first.children, r)
		default:
			holder := &threadNode{children: []*threadNode{first, r}}
			first.parent, r.parent = holder, holder
			idx := slices.Index(merged, first)
			merged[idx] = holder
			bySubject[subj] = holder
		}
	}
	// (6) children in date order again, after the merges.
	sortAll(merged)
	byDate(merged)
	return merged
}

func prune(nodes []*threadNode, root bool) []*threadNode {
	var out []*threadNode
	for _, n := range nodes {
		n.children = prune(n.children, false)
		switch {
		case n.msg == nil && len(n.children) == 0:
			// gone
		case n.msg == nil && (!root || len(n.children) == 1):
			for _, c := range n.children {
				c.parent = n.parent
			}
			out = append(out, n.children...)
		default:
			out = append(out, n)
		}
	}
	return out
}

// searchNumbers reads the numbers of a "* SEARCH n n n" response, or the
// ALL set of a "* ESEARCH (TAG "x") UID ALL 1:3,7" one (RFC 4731).
func searchNumbers(line []byte) []uint32 {
	var out []uint32
	if rest, ok := bytes.CutPrefix(line, []byte("* SEARCH")); ok {
		for _, w := range strings.Fields(string(rest)) {
			if n, err := strconv.ParseUint(w, 10, 32); err == nil {
				out = append(out, uint32(n))
			}
		}
		return out
	}
	f := strings.Fields(string(line))
	for i := 0; i+1 < len(f); i++ {
		if !strings.EqualFold(f[i], "ALL") {
			continue
		}
		for _, r := range strings.Split(f[i+1], ",") {
			lo, hi, isRange := strings.Cut(r, ":")
			a, err1 := strconv.ParseUint(lo, 10, 32)
			b := a
			var err2 error
			if isRange {
				b, err2 = strconv.ParseUint(hi, 10, 32)
			}
			if err1 != nil || err2 != nil {
				continue
			}
			if a > b {
				a, b = b, a
			}
			if b-a > 1<<24 {
				continue // more than any mailbox holds
			}
			for n := a; n <= b; n++ {
				out = append(out, uint32(n))
			}
		}
	}
	return out
}
