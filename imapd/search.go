package imapd

import (
	"bufio"
	"bytes"
	"errors"
	"io/fs"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	"github.com/tern-mail/tern/maildir"
)

// Search implements imapserver.Session (RFC 9051 §6.4.4). Criteria on
// flags, numbers, sizes and internal dates are answered from the index;
// the file is read only for a header, body or sent-date criterion.
func (s *Session) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error) {
	v := s.view
	needFile := criteriaNeedFile(criteria)
	needBody := criteriaNeedBody(criteria)
	data := &imap.SearchData{}
	var seqs imap.SeqSet
	var uids imap.UIDSet
	var ferr error
	v.Each(1, v.Len(), func(m maildir.Message) bool {
		c := &candidate{m: m, s: s, n: v.Len(), lastUID: v.UID(v.Len())}
		if needFile {
			read := s.readHead
			if needBody {
				read = s.readMessage
			}
			raw, err := read(m.UID)
			if errors.Is(err, fs.ErrNotExist) {
				return true // expunged meanwhile: matches nothing
			}
			if err != nil {
				ferr = err
				return false
			}
			c.raw = raw
		}
		if !c.match(criteria) {
			return true
		}
		num := m.Seq
		if kind == imapserver.NumKindUID {
			num = m.UID
			uids.AddNum(imap.UID(m.UID))
		} else {
			seqs.AddNum(m.Seq)
		}
		if data.Min == 0 || num < data.Min {
			data.Min = num
		}
		if num > data.Max {
			data.Max = num
		}
		data.Count++
		return true
	})
	if ferr != nil {
		return nil, s.internal("search", ferr)
	}
	if kind == imapserver.NumKindUID {
		data.All = uids
	} else {
		data.All = seqs
	}
	return data, nil
}

func criteriaNeedFile(c *imap.SearchCriteria) bool {
	if len(c.Header) > 0 || len(c.Body) > 0 || len(c.Text) > 0 || !c.SentSince.IsZero() || !c.SentBefore.IsZero() {
		return true
	}
	for i := range c.Not {
		if criteriaNeedFile(&c.Not[i]) {
			return true
		}
	}
	for i := range c.Or {
		if criteriaNeedFile(&c.Or[i][0]) || criteriaNeedFile(&c.Or[i][1]) {
			return true
		}
	}
	return false
}

// criteriaNeedBody reports whether a criterion looks past the header.
func criteriaNeedBody(c *imap.SearchCriteria) bool {
	if len(c.Body) > 0 || len(c.Text) > 0 {
		return true
	}
	for i := range c.Not {
		if criteriaNeedBody(&c.Not[i]) {
			return true
		}
	}
	for i := range c.Or {
		if criteriaNeedBody(&c.Or[i][0]) || criteriaNeedBody(&c.Or[i][1]) {
			return true
		}
	}
	return false
}

// candidate is one message being matched.
type candidate struct {
	s       *Session
	m       maildir.Message
	n       uint32 // messages in the view, for "*"
	lastUID uint32
	raw     []byte // CRLF, when a criterion needs the file

	parsed bool
	header textproto.Header
	body   []byte
}

func (c *candidate) parse() {
	if c.parsed {
		return
	}
	c.parsed = true
	br := bufio.NewReader(bytes.NewReader(c.raw))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return
	}
	c.header = h
	if i := bytes.Index(c.raw, []byte("\r\n\r\n")); i >= 0 {
		c.body = c.raw[i+4:]
	}
}

func (c *candidate) match(cr *imap.SearchCriteria) bool {
	m := c.m
	for _, set := range cr.SeqNum {
		if !inSeqSet(set, m.Seq, c.n) {
			return false
		}
	}
	for _, set := range cr.UID {
		if !inUIDSet(set, m.UID, c.lastUID) {
			return false
		}
	}
	for _, f := range cr.Flag {
		if !hasFlag(m, f) {
			return false
		}
	}
	for _, f := range cr.NotFlag {
		if hasFlag(m, f) {
			return false
		}
	}
	if cr.Larger > 0 && m.RFC822Size <= cr.Larger {
		return false
	}
	if cr.Smaller > 0 && m.RFC822Size >= cr.Smaller {
		return false
	}
	if !dateIn(m.Date, cr.Since, cr.Before) {
		return false
	}
	if !cr.SentSince.IsZero() || !cr.SentBefore.IsZero() {
		c.parse()
		mh := mail.Header{Header: gomessage.Header{Header: c.header}}
		sent, err := mh.Date()
		if err != nil || !dateIn(sent, cr.SentSince, cr.SentBefore) {
			return false
		}
	}
	for _, hf := range cr.Header {
		c.parse()
		if !c.headerHas(hf.Key, hf.Value) {
			return false
		}
	}
	for _, b := range cr.Body {
		c.parse()
		if !containsFold(c.body, b) {
			return false
		}
	}
	for _, t := range cr.Text {
		if !containsFold(c.raw, t) {
			return false
		}
	}
	for i := range cr.Not {
		if c.match(&cr.Not[i]) {
			return false
		}
	}
	for i := range cr.Or {
		if !c.match(&cr.Or[i][0]) && !c.match(&cr.Or[i][1]) {
			return false
		}
	}
	return true
}

// headerHas: a field of that name whose value contains value (RFC 9051
// §6.4.4 HEADER; an empty value matches any field of the name).
func (c *candidate) headerHas(key, value string) bool {
	for f := c.header.FieldsByKey(key); f.Next(); {
		if value == "" {
			return true
		}
		mh := mail.Header{Header: gomessage.Header{Header: c.header}}
		text, err := mh.Text(f.Key())
		if err != nil {
			text = f.Value()
		}
		if containsFold([]byte(text), value) || containsFold([]byte(f.Value()), value) {
			return true
		}
	}
	return false
}

// containsFold is a case-insensitive substring test (RFC 9051 §6.4.4).
func containsFold(hay []byte, needle string) bool {
	if needle == "" {
		return true
	}
	return strings.Contains(strings.ToLower(string(hay)), strings.ToLower(needle))
}

func hasFlag(m maildir.Message, f imap.Flag) bool {
	if strings.EqualFold(string(f), string(flagRecent)) {
		return m.Recent
	}
	for _, have := range m.Flags {
		if strings.EqualFold(have, string(f)) {
			return true
		}
	}
	return false
}

// dateIn compares dates only, as RFC 9051 §6.4.4 says, in the time zone
// of the date itself.
func dateIn(t, since, before time.Time) bool {
	day := func(t time.Time) time.Time {
		y, mo, d := t.Date()
		return time.Date(y, mo, d, 0, 0, 0, 0, time.UTC)
	}
	if !since.IsZero() && day(t).Before(day(since)) {
		return false
	}
	if !before.IsZero() && !day(t).Before(day(before)) {
		return false
	}
	return true
}

func inSeqSet(set imap.SeqSet, seq, n uint32) bool {
	for _, r := range set {
		start, stop := r.Start, r.Stop
		if start == 0 {
			start = n
		}
		if stop == 0 {
			stop = n
		}
		if start > stop {
			start, stop = stop, start
		}
		if seq >= start && seq <= stop {
			return true
		}
	}
	return false
}

func inUIDSet(set imap.UIDSet, uid, last uint32) bool {
	for _, r := range set {
		start, stop := uint32(r.Start), uint32(r.Stop)
		if start == 0 {
			start = last
		}
		if stop == 0 {
			stop = last
		}
		if start > stop {
			start, stop = stop, start
		}
		if uid >= start && uid <= stop {
			return true
		}
	}
	return false
}
