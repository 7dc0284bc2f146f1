package imapd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message/textproto"
	"github.com/tern-mail/tern/maildir"
)

// uidsOf resolves a sequence or UID set in the client's view of the
// mailbox: the session's View changes only when Poll tells the client,
// so "*" and sequence numbers mean what the client meant even while an
// expunge by another session is not yet told. imapserver's own example
// (and MailboxTracker) resolve "*" with the server's count instead.
func (s *Session) uidsOf(numSet imap.NumSet) []uint32 {
	v := s.view
	n := v.Len()
	if n == 0 {
		return nil
	}
	var out []uint32
	switch set := numSet.(type) {
	case imap.SeqSet:
		for _, r := range set {
			start, stop := r.Start, r.Stop
			if start == 0 {
				start = n // "*"
			}
			if stop == 0 {
				stop = n
			}
			if start > stop {
				start, stop = stop, start
			}
			for seq := start; seq <= min(stop, n); seq++ {
				out = append(out, v.UID(seq))
			}
		}
	case imap.UIDSet:
		last := v.UID(n)
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
			// Walk the view, not the range: "1:4294967295" is
			// one step per message, not four billion.
			from := v.Seq(start)
			if from == 0 {
				from = firstSeqAtLeast(v, start)
			}
			for seq := from; seq >= 1 && seq <= n; seq++ {
				uid := v.UID(seq)
				if uid > stop {
					break
				}
				out = append(out, uid)
			}
		}
	}
	return out
}

// firstSeqAtLeast is the sequence number of the first message whose UID
// is at least uid, 0 when none.
func firstSeqAtLeast(v *maildir.View, uid uint32) uint32 {
	lo, hi := uint32(1), v.Len()
	for lo < hi {
		mid := lo + (hi-lo)/2
		if v.UID(mid) < uid {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo >= 1 && lo <= v.Len() && v.UID(lo) >= uid {
		return lo
	}
	return 0
}

// Expunge implements imapserver.Session (EXPUNGE, CLOSE, UID EXPUNGE).
func (s *Session) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	var only []uint32
	if uids != nil {
		only = s.uidsOf(*uids)
		if only == nil {
			only = []uint32{}
		}
	}
	gone, err := s.view.Expunge(only)
	if errors.Is(err, maildir.ErrReadOnly) {
		return errReadOnly
	}
	if err != nil {
		return s.internal("expunge", err)
	}
	for _, e := range gone {
		if err := w.WriteExpunge(e.Seq); err != nil {
			return err
		}
	}
	return nil
}

// Store implements imapserver.Session. A mailbox opened with EXAMINE
// takes no STORE: imapserver beta.9 lets it through, the View refuses.
func (s *Session) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) error {
	if s.view.ReadOnly() {
		return errReadOnly
	}
	var names []string
	for _, f := range flags.Flags {
		// RFC 9051 §2.3.2: \Recent is the server's; a STORE of it
		// is ignored.
		if !strings.EqualFold(string(f), string(flagRecent)) {
			names = append(names, string(f))
		}
	}
	op := maildir.FlagsSet
	switch flags.Op {
	case imap.StoreFlagsAdd:
		op = maildir.FlagsAdd
	case imap.StoreFlagsDel:
		op = maildir.FlagsRemove
	}
	_, isUID := numSet.(imap.UIDSet)
	var msgs []maildir.Message
	var err error
	if flags.Silent {
		// No FETCH response is made: nor are the messages for them.
		err = s.view.StoreSilent(s.uidsOf(numSet), op, names)
	} else {
		msgs, err = s.view.Store(s.uidsOf(numSet), op, names)
	}
	switch {
	case errors.Is(err, maildir.ErrTooManyKeywords):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeLimit, Text: "the mailbox has 26 keywords already"}
	case errors.Is(err, maildir.ErrReadOnly):
		return errReadOnly
	case err != nil:
		return s.internal("store", err)
	}
	if flags.Silent {
		return nil
	}
	for _, m := range msgs {
		rw := w.CreateMessage(m.Seq)
		if isUID {
			rw.WriteUID(imap.UID(m.UID))
		}
		rw.WriteFlags(toFlags(m.Flags))
		if err := rw.Close(); err != nil {
			return err
		}
	}
	return nil
}

// Copy implements imapserver.Session, with COPYUID (RFC 4315).
func (s *Session) Copy(numSet imap.NumSet, dest string) (*imap.CopyData, error) {
	dst, err := s.folderOf(dest, tryCreate)
	if err != nil {
		return nil, err
	}
	uids := s.uidsOf(numSet)
	if err := s.checkQuota(uids); err != nil {
		return nil, err
	}
	res, err := s.view.Copy(uids, dst)
	if err != nil {
		return nil, s.copyError(err)
	}
	return copyData(res), nil
}

// checkQuota refuses a COPY that would take the account over its quota
// (RFC 9208 §4.3: OVERQUOTA). The store checks it for APPEND; COPY links
// files without a look at maildirsize. MOVE stays within the account and
// changes no usage.
func (s *Session) checkQuota(uids []uint32) error {
	q, has, err := s.Quota()
	if err != nil {
		return s.internal("read the quota", err)
	}
	if !has {
		return nil
	}
	var size int64
	for _, uid := range uids {
		if m, err := s.view.Message(s.view.Seq(uid)); err == nil {
			size += m.Size
		}
	}
	if (q.MaxBytes > 0 && q.Bytes+size > q.MaxBytes) || (q.MaxMessages > 0 && q.Messages+int64(len(uids)) > q.MaxMessages) {
		return errOverQuota
	}
	return nil
}

var errOverQuota = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeOverQuota, Text: "the mailbox is over its quota; delete some mail first"}

func (s *Session) copyError(err error) error {
	switch {
	case errors.Is(err, maildir.ErrQuotaExceeded):
		return errOverQuota
	case errors.Is(err, maildir.ErrReadOnly):
		return errReadOnly
	}
	return s.internal("copy", err)
}

func copyData(res *maildir.CopyResult) *imap.CopyData {
	d := &imap.CopyData{UIDValidity: res.UIDValidity}
	for i := range res.SourceUIDs {
		d.SourceUIDs.AddNum(imap.UID(res.SourceUIDs[i]))
		d.DestUIDs.AddNum(imap.UID(res.DestUIDs[i]))
	}
	return d
}

// Move implements imapserver.SessionMove (RFC 6851).
func (s *Session) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	if s.view.ReadOnly() {
		return errReadOnly
	}
	dst, err := s.folderOf(dest, tryCreate)
	if err != nil {
		return err
	}
	res, gone, err := s.view.Move(s.uidsOf(numSet), dst)
	if err != nil {
		return s.copyError(err)
	}
	if len(res.SourceUIDs) > 0 {
		if err := w.WriteCopyData(copyData(res)); err != nil {
			return err
		}
	}
	for _, e := range gone {
		if err := w.WriteExpunge(e.Seq); err != nil {
			return err
		}
	}
	return nil
}

// maxParsedMessage bounds what is read into memory to serve one FETCH of
// a body part, ENVELOPE, BODYSTRUCTURE or a SEARCH of text: the
// APPENDLIMIT, and never more than this.
const maxParsedMessage = 256 << 20

// Fetch implements imapserver.Session. FLAGS, UID, RFC822.SIZE and
// INTERNALDATE come from the index; only ENVELOPE, BODYSTRUCTURE and
// body sections open the file. A body section without PEEK sets \Seen
// (RFC 9051 §6.4.5) unless the mailbox is read-only.
func (s *Session) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	_, isUID := numSet.(imap.UIDSet)
	uids := s.uidsOf(numSet)
	needFile := options.Envelope || options.BodyStructure != nil || len(options.BodySection) > 0 ||
		len(options.BinarySection) > 0 || len(options.BinarySectionSize) > 0
	// ENVELOPE and the top-level header sections need the header alone.
	headerOnly := options.BodyStructure == nil && len(options.BinarySection) == 0 && len(options.BinarySectionSize) == 0
	for _, sec := range options.BodySection {
		if len(sec.Part) > 0 || sec.Specifier != imap.PartSpecifierHeader {
			headerOnly = false
		}
	}
	var seen []uint32
	if !s.view.ReadOnly() {
		for _, sec := range options.BodySection {
			if !sec.Peek {
				seen = uids
				break
			}
		}
		for _, sec := range options.BinarySection {
			if !sec.Peek {
				seen = uids
				break
			}
		}
	}
	flagsNow := map[uint32][]string{}
	if len(seen) > 0 {
		msgs, err := s.view.Store(seen, maildir.FlagsAdd, []string{maildir.FlagSeen})
		if err != nil {
			return s.internal("fetch: set \\Seen", err)
		}
		for _, m := range msgs {
			flagsNow[m.UID] = m.Flags
		}
	}
	for _, uid := range uids {
		seq := s.view.Seq(uid)
		m, err := s.view.Message(seq)
		if err != nil {
			continue
		}
		var raw []byte
		if needFile {
			if headerOnly {
				raw, err = s.readHead(uid)
			} else {
				raw, err = s.readMessage(uid)
			}
			if errors.Is(err, fs.ErrNotExist) {
				// Expunged by another session and not told yet:
				// nothing to send for it (RFC 9051 §7.4.1 lets a
				// server omit it).
				continue
			}
			if err != nil {
				return s.internal("fetch", err)
			}
		}
		rw := w.CreateMessage(seq)
		if isUID || options.UID {
			rw.WriteUID(imap.UID(uid))
		}
		if fl, ok := flagsNow[uid]; ok {
			rw.WriteFlags(toFlags(fl))
		} else if options.Flags {
			rw.WriteFlags(withRecent(m))
		}
		if options.RFC822Size {
			rw.WriteRFC822Size(m.RFC822Size)
		}
		if options.InternalDate {
			rw.WriteInternalDate(m.Date)
		}
		if options.Envelope {
			h, _ := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
			rw.WriteEnvelope(imapserver.ExtractEnvelope(h))
		}
		if options.BodyStructure != nil {
			rw.WriteBodyStructure(imapserver.ExtractBodyStructure(bytes.NewReader(raw)))
		}
		for _, sec := range options.BodySection {
			b := bodySection(raw, sec)
			wc := rw.WriteBodySection(sec, int64(len(b)))
			wc.Write(b)
			if err := wc.Close(); err != nil {
				return err
			}
		}
		for _, sec := range options.BinarySection {
			b := imapserver.ExtractBinarySection(bytes.NewReader(raw), sec)
			wc := rw.WriteBinarySection(sec, int64(len(b)))
			wc.Write(b)
			if err := wc.Close(); err != nil {
				return err
			}
		}
		for _, sec := range options.BinarySectionSize {
			rw.WriteBinarySectionSize(sec, imapserver.ExtractBinarySectionSize(bytes.NewReader(raw), sec))
		}
		if err := rw.Close(); err != nil {
			return err
		}
	}
	return nil
}

// bodySection is a BODY[...] section of a message. The whole message is
// its bytes as they are: imapserver's ExtractBodySection parses the
// header first and gives nothing for a message without one.
func bodySection(raw []byte, sec *imap.FetchItemBodySection) []byte {
	if len(sec.Part) > 0 || sec.Specifier != imap.PartSpecifierNone {
		return imapserver.ExtractBodySection(bytes.NewReader(raw), sec)
	}
	if p := sec.Partial; p != nil {
		if p.Offset >= int64(len(raw)) {
			return nil
		}
		raw = raw[p.Offset:]
		if p.Size >= 0 && p.Size < int64(len(raw)) {
			raw = raw[:p.Size]
		}
	}
	return raw
}

// withRecent is a message's flags with \Recent when this session is
// the one that saw it first (IMAP4rev1).
func withRecent(m maildir.Message) []imap.Flag {
	fl := toFlags(m.Flags)
	if m.Recent {
		fl = append(fl, flagRecent)
	}
	return fl
}

// readMessage reads a message whole with CRLF line ends, as IMAP sends
// it: the store keeps LF.
func (s *Session) readMessage(uid uint32) ([]byte, error) {
	f, err := s.view.Open(uid)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > maxParsedMessage {
		return nil, errors.New("message larger than the server reads")
	}
	data, err := io.ReadAll(io.LimitReader(f, maxParsedMessage))
	if err != nil {
		return nil, err
	}
	return toCRLF(data), nil
}

// readHead reads a message's header, up to and with the empty line that
// ends it, with CRLF line ends: what ENVELOPE, header sections and
// header searches need, without the body.
func (s *Session) readHead(uid uint32) ([]byte, error) {
	f, err := s.view.Open(uid)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	br := bufio.NewReaderSize(io.LimitReader(f, maxSortHeader), 4096)
	var head []byte
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			head = append(head, line...)
			continue
		}
		head = append(head, line...)
		if err != nil || len(line) == 0 || line[0] == '\n' || (line[0] == '\r' && len(line) == 2) {
			if err != nil && err != io.EOF {
				return nil, err
			}
			break
		}
	}
	return toCRLF(head), nil
}

// toCRLF turns LF line ends into CRLF, leaving CRLF as it is.
func toCRLF(b []byte) []byte {
	n := bytes.Count(b, []byte("\n"))
	if n == 0 {
		return b
	}
	out := make([]byte, 0, len(b)+n)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			out = append(out, b...)
			break
		}
		out = append(out, b[:i]...)
		if i == 0 || b[i-1] != '\r' {
			out = append(out, '\r')
		}
		out = append(out, '\n')
		b = b[i+1:]
	}
	return out
}
