package maildir

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/maphash"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// IndexName is the file in each folder's directory that holds the
// folder's index: UIDVALIDITY, the next UID, and for every message its
// UID, file name (and so its flags), sizes and internal date, with the
// stamps of new/ and cur/ that it was last found true against. Its format
// is in tern-maildir(5).
//
// Why it is built this way: it replaces a UID list rewritten whole for
// every change and a listing cache that could not be trusted after one.
// Changes are appended as blocks, each ending in a line with its length
// and CRC-32C, so a flag change in a folder of 100,000 messages writes a
// line, not megabytes, and a block cut short by a crash is seen and
// dropped (the state before it is whole). When the file has grown to
// twice what its messages need, it is written anew and renamed over the
// old one. Readers need no lock: a reader that keeps the file open reads
// only what was appended since it last looked. Writers append under the
// folder's link(2) lock.
const IndexName = "tern-index"

const indexMagic = "tern-index 1"

// maxIndexSize bounds what is read of an index: about three million
// messages.
const maxIndexSize = 512 << 20

// ErrCorruptIndex is wrapped when an index cannot be trusted: a bad
// header, or a block whose checksum holds but whose records contradict
// the state (a UID given twice, a record for a UID that is not there).
var ErrCorruptIndex = errors.New("corrupt index")

// index is a parsed tern-index: the state after its last whole block.
// An index is never changed once a Folder has published it; a newer
// state is a new index.
type index struct {
	validity, next uint32
	gen            string       // the header's G: new for every file written whole
	entries        []indexEntry // ascending UID
	stamped        bool
	stamps         [2]dirStamp // new/, cur/ when last found true
	sums           [2]dirSum   // of the names the entries put in new/ and cur/
	size           int64       // bytes of the file applied
	st             unix.Stat_t // the file it was read from
}

// dirSum sums up a directory's message names so that a listing can be
// checked against the index without a map: a count and the sum of a
// 64-bit hash of each name.
type dirSum struct {
	n   int
	sum uint64
}

// nameSeed is the seed of the name hash: per process, which is all a
// comparison within one process needs.
var nameSeed = maphash.MakeSeed()

func nameHash(name string) uint64 { return maphash.String(nameSeed, name) }

func (s *dirSum) add(name string) { s.n++; s.sum += nameHash(name) }
func (s *dirSum) sub(name string) { s.n--; s.sum -= nameHash(name) }

func dirIdx(isNew bool) int {
	if isNew {
		return 0
	}
	return 1
}

func (x *index) clone() *index {
	y := *x
	y.entries = slices.Clone(x.entries)
	return &y
}

// find returns the position of a UID.
func (x *index) find(uid uint32) (int, bool) {
	return slices.BinarySearchFunc(x.entries, uid, func(e indexEntry, uid uint32) int {
		switch {
		case e.uid < uid:
			return -1
		case e.uid > uid:
			return 1
		}
		return 0
	})
}

func (x *index) recount() {
	x.sums = [2]dirSum{}
	for i := range x.entries {
		x.sums[dirIdx(x.entries[i].new)].add(x.entries[i].name)
	}
}

// parseIndexHeader reads the first line.
func parseIndexHeader(data []byte) (validity, next uint32, gen string, n int, err error) {
	nl := bytes.IndexByte(data, '\n')
	if nl < 0 {
		return 0, 0, "", 0, fmt.Errorf("no header line: %w", ErrCorruptIndex)
	}
	f := strings.Split(string(data[:nl]), " ")
	if len(f) != 5 || f[0]+" "+f[1] != indexMagic {
		return 0, 0, "", 0, fmt.Errorf("bad header: %w", ErrCorruptIndex)
	}
	v, err1 := parseUint32Field(f[2], 'V')
	nx, err2 := parseUint32Field(f[3], 'N')
	if err1 != nil || err2 != nil || len(f[4]) != 17 || f[4][0] != 'G' {
		return 0, 0, "", 0, fmt.Errorf("bad header: %w", ErrCorruptIndex)
	}
	return v, nx, f[4], nl + 1, nil
}

// applyBlocks applies the whole blocks of data (the file from byte x.size
// on) to x, in place, and returns how many bytes it used: a block cut
// short or failing its checksum, and all after it, is left. The names in
// the entries point into data, which the caller must not change
// afterwards: a copy of it as a string doubled what a login to a large
// folder held while it read the index (tests/bench/pop3/memprobe).
func (x *index) applyBlocks(data []byte) (int, error) {
	used := 0
	if len(data) == 0 {
		return 0, nil
	}
	text := unsafe.String(unsafe.SliceData(data), len(data))
	for used < len(text) {
		rest := text[used:]
		// A block is its records, then ". <length> <crc>\n".
		end := -1
		for off := 0; off < len(rest); {
			nl := strings.IndexByte(rest[off:], '\n')
			if nl < 0 {
				break
			}
			line := rest[off : off+nl]
			if strings.HasPrefix(line, ". ") {
				f := strings.Fields(line)
				n, err1 := strconv.Atoi(f[1])
				if len(f) != 3 || err1 != nil || n != off {
					return used, nil // torn: not a commit of this block
				}
				sum, err := strconv.ParseUint(f[2], 16, 32)
				if err != nil || crc32.Checksum([]byte(rest[:off]), crcTable()) != uint32(sum) {
					return used, nil
				}
				end = off
				if err := x.applyRecords(rest[:off]); err != nil {
					return used, err
				}
				used += off + nl + 1
				break
			}
			off += nl + 1
		}
		if end < 0 {
			return used, nil
		}
	}
	return used, nil
}

// applyRecords applies the records of one block whose checksum holds.
func (x *index) applyRecords(block string) error {
	bad := func(line, why string) error {
		return fmt.Errorf("record %q: %s: %w", line, why, ErrCorruptIndex)
	}
	expunged := false
	// A block that adds a folder's worth of messages (a first look at
	// it) gets room for them at once: grown by doubling, the entries
	// left as much again behind them for the collector, at the peak of
	// a first login's memory.
	if adds := strings.Count(block, "\n+ "); adds > 1024 {
		x.entries = slices.Grow(x.entries, adds+1)
	}
	for block != "" {
		var line string
		line, block, _ = strings.Cut(block, "\n")
		if len(line) < 2 || line[1] != ' ' {
			return bad(line, "no record type")
		}
		var fa [6]string
		f := fa[:splitFields(line[2:], fa[:])]
		switch line[0] {
		case '+':
			if len(f) != 6 {
				return bad(line, "fields")
			}
			uid, err := parseUint32Field(f[0], 0)
			if err != nil || uid < x.next || uid == math.MaxUint32 {
				return bad(line, "UID not above those given")
			}
			e := indexEntry{uid: uid}
			var ok bool
			if e.new, ok = parseDirLetter(f[1]); !ok {
				return bad(line, "directory")
			}
			var err1, err2, err3 error
			e.size, err1 = strconv.ParseInt(f[2], 10, 64)
			e.rfc822, err2 = strconv.ParseInt(f[3], 10, 64)
			e.date, err3 = strconv.ParseInt(f[4], 10, 64)
			if err1 != nil || err2 != nil || err3 != nil || e.size < 0 || e.rfc822 < 0 {
				return bad(line, "numbers")
			}
			e.setName(f[5], e.new)
			if u, _ := splitName(e.name); !validUnique(u) || strings.IndexByte(e.name, '/') >= 0 {
				return bad(line, "name")
			}
			x.entries = append(x.entries, e)
			x.next = uid + 1
			x.sums[dirIdx(e.new)].add(e.name)
		case 'r':
			if len(f) != 3 {
				return bad(line, "fields")
			}
			uid, err := parseUint32Field(f[0], 0)
			i, found := x.find(uid)
			if err != nil || !found || x.entries[i].name == "" {
				return bad(line, "no such UID")
			}
			isNew, ok := parseDirLetter(f[1])
			if u, _ := splitName(f[2]); !ok || u != x.entries[i].unique() || strings.IndexByte(f[2], '/') >= 0 {
				return bad(line, "name")
			}
			e := &x.entries[i]
			x.sums[dirIdx(e.new)].sub(e.name)
			e.setName(f[2], isNew)
			x.sums[dirIdx(e.new)].add(e.name)
		case '-':
			uid, err := parseUint32Field(line[2:], 0)
			i, found := x.find(uid)
			if err != nil || !found || x.entries[i].name == "" {
				return bad(line, "no such UID")
			}
			e := &x.entries[i]
			x.sums[dirIdx(e.new)].sub(e.name)
			e.name = "" // dropped below, once for the block
			expunged = true
		case 'N':
			n, err := parseUint32Field(line[2:], 0)
			if err != nil || n < x.next {
				return bad(line, "next UID going back")
			}
			x.next = n
		case 's':
			if len(f) != 6 {
				return bad(line, "fields")
			}
			var ok [6]bool
			x.stamps[0].ino, ok[0] = parseUint(f[0])
			x.stamps[0].mtime, ok[1] = parseTS(f[1])
			x.stamps[0].ctime, ok[2] = parseTS(f[2])
			x.stamps[1].ino, ok[3] = parseUint(f[3])
			x.stamps[1].mtime, ok[4] = parseTS(f[4])
			x.stamps[1].ctime, ok[5] = parseTS(f[5])
			if slices.Contains(ok[:], false) {
				return bad(line, "stamps")
			}
			x.stamped = true
			continue
		default:
			return bad(line, "unknown record")
		}
		// Any change of the messages makes the stamps of before it
		// void until a new "s" record says otherwise.
		x.stamped = false
	}
	if expunged {
		x.entries = slices.DeleteFunc(x.entries, func(e indexEntry) bool { return e.name == "" })
	}
	return nil
}

// splitFields is strings.SplitN(s, " ", len(out)) into out, without
// making a slice for each of 100,000 lines; it returns how many fields
// there are.
func splitFields(s string, out []string) int {
	n := 0
	for n < len(out)-1 {
		i := strings.IndexByte(s, ' ')
		if i < 0 {
			break
		}
		out[n], s = s[:i], s[i+1:]
		n++
	}
	out[n] = s
	return n + 1
}

func parseDirLetter(s string) (isNew, ok bool) {
	switch s {
	case "n":
		return true, true
	case "c":
		return false, true
	}
	return false, false
}

func dirLetter(isNew bool) string {
	if isNew {
		return "n"
	}
	return "c"
}

// indexRecords builds the records of one block.
type indexRecords struct {
	b        []byte
	needSync bool // a UID was given: the block must be on disk first
}

func (r *indexRecords) add(e *indexEntry) {
	r.b = append(r.b, "+ "...)
	r.b = strconv.AppendUint(r.b, uint64(e.uid), 10)
	r.b = append(r.b, ' ')
	r.b = append(r.b, dirLetter(e.new)...)
	r.b = append(r.b, ' ')
	r.b = strconv.AppendInt(r.b, e.size, 10)
	r.b = append(r.b, ' ')
	r.b = strconv.AppendInt(r.b, e.rfc822, 10)
	r.b = append(r.b, ' ')
	r.b = strconv.AppendInt(r.b, e.date, 10)
	r.b = append(r.b, ' ')
	r.b = append(r.b, e.name...)
	r.b = append(r.b, '\n')
	r.needSync = true
}

func (r *indexRecords) rename(uid uint32, isNew bool, name string) {
	r.b = append(r.b, "r "...)
	r.b = strconv.AppendUint(r.b, uint64(uid), 10)
	r.b = append(r.b, ' ')
	r.b = append(r.b, dirLetter(isNew)...)
	r.b = append(r.b, ' ')
	r.b = append(r.b, name...)
	r.b = append(r.b, '\n')
}

func (r *indexRecords) expunge(uid uint32) {
	r.b = append(r.b, "- "...)
	r.b = strconv.AppendUint(r.b, uint64(uid), 10)
	r.b = append(r.b, '\n')
}

func (r *indexRecords) stamp(s [2]dirStamp) {
	ts := func(t unix.StatxTimestamp) string { return fmt.Sprintf("%d.%09d", t.Sec, t.Nsec) }
	r.b = fmt.Appendf(r.b, "s %d %s %s %d %s %s\n", s[0].ino, ts(s[0].mtime), ts(s[0].ctime), s[1].ino, ts(s[1].mtime), ts(s[1].ctime))
}

// commit ends the block with its length and checksum.
func (r *indexRecords) commit() []byte {
	n := len(r.b)
	return fmt.Appendf(r.b, ". %d %08x\n", n, crc32.Checksum(r.b[:n], crcTable()))
}

func (f *Folder) indexPath() string { return filepath.Join(f.path, IndexName) }

// readIndex returns the index as the file says now, without the lock:
// the one this Folder read last with what was appended since, or the
// whole file read again when it was replaced. It fails with an error
// wrapping fs.ErrNotExist when there is none, and ErrCorruptIndex when it
// cannot be trusted.
func (f *Folder) readIndex() (*index, error) {
	// A file another host replaced by rename answers ESTALE to a handle
	// opened before, at open or at read; opened again by its name it is
	// the new one.
	x, err := f.readIndexOnce()
	for try := 0; errors.Is(err, unix.ESTALE) && try < 3; try++ {
		x, err = f.readIndexOnce()
	}
	return x, err
}

func (f *Folder) readIndexOnce() (*index, error) {
	p := f.indexPath()
	file, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("maildir: read index: %w", err)
	}
	defer file.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(file.Fd()), &st); err != nil {
		return nil, fmt.Errorf("maildir: read index %s: %w", p, err)
	}
	if st.Size > maxIndexSize {
		return nil, fmt.Errorf("maildir: read index %s: larger than %d bytes: %w", p, maxIndexSize, ErrCorruptIndex)
	}
	f.mu.Lock()
	old := f.idx
	f.mu.Unlock()
	// The same file as last time, grown or not: the same inode (which a
	// file system may give again once the old file is gone) and the
	// same generation in its header.
	same := old != nil && old.st.Dev == st.Dev && old.st.Ino == st.Ino && st.Size >= old.size
	if same {
		head := make([]byte, 64)
		n, _ := file.ReadAt(head, 0)
		_, _, gen, _, err := parseIndexHeader(head[:n])
		same = err == nil && gen == old.gen
	}
	if same {
		if st.Size == old.size {
			return old, nil
		}
		// Only what was appended: a block or a few.
		data := make([]byte, st.Size-old.size)
		if _, err := file.ReadAt(data, old.size); err != nil && err != io.EOF {
			return nil, fmt.Errorf("maildir: read index %s: %w", p, err)
		}
		x := old.clone()
		n, err := x.applyBlocks(data)
		if err != nil {
			return nil, fmt.Errorf("maildir: read index %s: %w", p, err)
		}
		if n == 0 {
			return old, nil
		}
		x.size += int64(n)
		x.st = st
		f.publish(x)
		return x, nil
	}
	data := make([]byte, st.Size)
	if _, err := io.ReadFull(file, data); err != nil {
		return nil, fmt.Errorf("maildir: read index %s: %w", p, err)
	}
	validity, next, gen, hl, err := parseIndexHeader(data)
	if err != nil {
		return nil, fmt.Errorf("maildir: read index %s: %w", p, err)
	}
	// The header's next UID is a floor: the file written whole lists
	// the messages below it first.
	x := &index{validity: validity, next: 1, gen: gen}
	x.entries = make([]indexEntry, 0, bytes.Count(data, []byte{'\n'}))
	n, err := x.applyBlocks(data[hl:])
	if err != nil {
		return nil, fmt.Errorf("maildir: read index %s: %w", p, err)
	}
	x.next = max(x.next, next)
	x.size = int64(hl + n)
	x.st = st
	f.publish(x)
	return x, nil
}

func (f *Folder) publish(x *index) {
	f.mu.Lock()
	if f.idx == nil || x != f.idx {
		f.idx = x
	}
	if x.validity > f.lastValidity {
		f.lastValidity = x.validity
	}
	f.mu.Unlock()
}

// current returns the index, brought up to date with the directories
// when their stamps say they changed since it was last found true. Only
// then is the lock taken.
func (f *Folder) current() (*index, error) {
	x, err := f.readIndex()
	if err == nil && x.stamped {
		st, serr := f.stamps()
		if serr != nil {
			return nil, serr
		}
		if st == x.stamps || f.store.mutation == mutationTrustStale {
			return x, nil
		}
	}
	lk, err := f.lock()
	if err != nil {
		return nil, err
	}
	defer lk.unlock()
	return f.refreshLocked(lk)
}

func (f *Folder) stamps() ([2]dirStamp, error) {
	var s [2]dirStamp
	var err error
	if s[0], err = stampOf(filepath.Join(f.path, "new")); err != nil {
		return s, err
	}
	s[1], err = stampOf(filepath.Join(f.path, "cur"))
	return s, err
}

// fsClock returns the file system's clock as its timestamps tell it (the
// clock that sets the directories' times, on this host or an NFS server,
// in their granularity), by making a file in tmp/. A directory stamped
// before that time and unchanged at the next look has not changed since:
// any change after it gets a later time.
func (f *Folder) fsClock() (unix.StatxTimestamp, bool) {
	name := filepath.Join(f.path, "tmp", fmt.Sprintf("%d.P%dR%x.tern-clock", f.store.now().Unix(), f.store.pid, rand.Uint64()))
	fd, err := unix.Open(name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return unix.StatxTimestamp{}, false
	}
	var st unix.Statx_t
	err = unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_FORCE_SYNC, unix.STATX_MTIME, &st)
	unix.Close(fd)
	unix.Unlink(name)
	return st.Mtime, err == nil
}

// loadLocked reads the index under the lock: a torn tail is cut off, a
// missing index is made (from tern-uidlist where there is one, so UIDs
// and UIDVALIDITY stay), and a damaged one moved aside and made anew
// under a larger UIDVALIDITY.
func (f *Folder) loadLocked() (*index, error) {
	x, err := f.readIndex()
	// One failed open is not proof that there is no index: over NFS a
	// file being replaced by rename can be missing for an instant.
	for try := 0; errors.Is(err, fs.ErrNotExist) && try < 2; try++ {
		time.Sleep(time.Duration(try+1) * 5 * time.Millisecond)
		x, err = f.readIndex()
	}
	switch {
	case err == nil:
		if x.st.Size > x.size {
			// A block cut short by a crash: what follows the last whole
			// block goes, so the next append starts clean.
			if err := os.Truncate(f.indexPath(), x.size); err != nil {
				return nil, fmt.Errorf("maildir: cut the torn end of %s: %w", f.indexPath(), err)
			}
			x = x.clone()
			x.st.Size = x.size
			f.publish(x)
		}
		return x, nil
	case errors.Is(err, ErrCorruptIndex):
		hint := f.indexValidityHint()
		aside := fmt.Sprintf("%s.broken.%d", f.indexPath(), time.Now().UnixNano())
		if err := os.Rename(f.indexPath(), aside); err != nil {
			return nil, fmt.Errorf("maildir: move damaged index aside: %w", err)
		}
		return f.newIndex(f.newValidity(hint), 1)
	case errors.Is(err, fs.ErrNotExist):
		if l, _, err := f.readUIDList(); err == nil {
			return f.importUIDList(l)
		}
		if l := f.readForeignUIDList(); l != nil {
			if err := f.importForeignKeywords(); err != nil {
				return nil, err
			}
			return f.importUIDList(l)
		}
		return f.newIndex(f.newValidity(f.indexValidityHint()), 1)
	}
	return nil, err
}

// indexValidityHint finds the largest UIDVALIDITY the folder may have
// had: in what is left of the index and in the indexes and lists moved
// aside, and, for an index written and lost within one second, the times
// of the index and of the folder's directory (which a rename of the
// index, and its removal, set).
func (f *Folder) indexValidityHint() uint32 {
	var hint uint32
	// A time T says an index existed then, made with a UIDVALIDITY of T,
	// or of T+1 where a time hint like this one pushed it on.
	for _, p := range []string{f.indexPath(), f.path} {
		if st, err := os.Stat(p); err == nil {
			hint = max(hint, uint32(min(max(st.ModTime().Unix()+1, 0), math.MaxUint32-2)))
		}
	}
	if data, err := readHead(f.indexPath()); err == nil {
		hint = validityHint(data)
	}
	if ents, err := os.ReadDir(f.path); err == nil {
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), IndexName+".broken.") && !strings.HasPrefix(e.Name(), "tern-uidlist.broken.") {
				continue
			}
			if data, err := readHead(filepath.Join(f.path, e.Name())); err == nil {
				hint = max(hint, validityHint(data))
			}
		}
	}
	return hint
}

// newIndex writes an index with no messages; the refresh that follows
// gives them UIDs.
func (f *Folder) newIndex(validity, next uint32) (*index, error) {
	x := &index{validity: validity, next: next}
	if err := f.writeIndex(x); err != nil {
		return nil, err
	}
	return x, nil
}

// importUIDList starts the index from an older tern-uidlist: the same
// UIDVALIDITY, next UID and UID of each message still on disk.
func (f *Folder) importUIDList(l *UIDList) (*index, error) {
	names, err := f.scan()
	if err != nil {
		return nil, err
	}
	x := &index{validity: l.Validity, next: l.Next}
	for _, e := range l.entries {
		p, ok := names[e.Unique]
		if !ok {
			continue
		}
		ie, ok, err := f.entryOf(p, e.UID)
		if err != nil {
			return nil, err
		}
		if ok {
			x.entries = append(x.entries, ie)
		}
	}
	x.recount()
	if err := f.writeIndex(x); err != nil {
		return nil, err
	}
	return x, nil
}

// Files other IMAP servers keep per folder, read once when tern makes a
// folder's index, so that clients keep their caches (issue 15: moving
// from Dovecot or Courier).
const (
	dovecotUIDList  = "dovecot-uidlist"
	courierUIDList  = "courierimapuiddb"
	dovecotKeywords = "dovecot-keywords"
)

// readForeignUIDList returns Dovecot's or Courier's UID list of the
// folder, nil where there is none that can be read whole.
func (f *Folder) readForeignUIDList() *UIDList {
	for _, name := range []string{dovecotUIDList, courierUIDList} {
		file, err := os.Open(filepath.Join(f.path, name))
		if err != nil {
			continue
		}
		l, err := ParseForeignUIDList(file)
		file.Close()
		if err == nil {
			return l
		}
	}
	return nil
}

// importForeignKeywords gives the keywords of dovecot-keywords ("<n>
// <keyword>", n from 0 for the letter a) the same letters in
// tern-keywords, where the folder has no tern-keywords yet, so that the
// letters in the file names keep their meaning.
func (f *Folder) importForeignKeywords() error {
	if _, err := os.Stat(f.keywordsPath()); err == nil {
		return nil
	}
	data, err := os.ReadFile(filepath.Join(f.path, dovecotKeywords))
	if err != nil {
		return nil // none: nothing to keep
	}
	k := &Keywords{}
	for _, line := range strings.Split(string(data), "\n") {
		n, kw, ok := strings.Cut(line, " ")
		i, err := strconv.Atoi(n)
		if !ok || err != nil || i < 0 || i >= 26 || !validKeyword(kw) || k.byLetter[i] != "" {
			continue
		}
		if _, dup := k.Letter(kw); dup {
			continue
		}
		k.byLetter[i] = kw
	}
	return writeFileAtomic(f.keywordsPath(), k.bytes())
}

// entryOf reads what the index keeps of a message: the sizes from its
// name (or the file where the name lacks them) and its mtime. ok is false
// when the file is gone.
func (f *Folder) entryOf(p place, uid uint32) (indexEntry, bool, error) {
	e := indexEntry{uid: uid}
	e.setName(p.name, !p.cur)
	path := filepath.Join(f.path, p.dir(), p.name)
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return e, false, nil
		}
		return e, false, fmt.Errorf("maildir: stat %s: %w", path, err)
	}
	e.date = st.Mtim.Sec
	u, _ := splitName(p.name)
	e.size, e.rfc822 = nameSizes(u)
	if e.size < 0 || e.rfc822 < 0 {
		m := Message{Path: path, Size: e.size, RFC822Size: e.rfc822}
		if err := fileSizes(&m); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return e, false, nil
			}
			return e, false, err
		}
		e.size, e.rfc822 = m.Size, m.RFC822Size
	}
	return e, true, nil
}

// writeIndex writes x whole, as one block, and renames it over the
// index (compaction, or a new index).
func (f *Folder) writeIndex(x *index) error {
	x.gen = fmt.Sprintf("G%016x", rand.Uint64())
	head := fmt.Appendf(nil, "%s V%d N%d %s\n", indexMagic, x.validity, x.next, x.gen)
	size := int64(len(head))
	// The records are streamed to the file a few kilobytes at a time,
	// with their length and checksum counted on the way: a buffer of
	// the whole block raised the peak memory of a session on a large
	// folder by its size (tests/bench/pop3/memprobe).
	err := writeFileAtomicFunc(f.indexPath(), func(w io.Writer) error {
		if _, err := w.Write(head); err != nil {
			return err
		}
		if len(x.entries) == 0 && !x.stamped {
			return nil
		}
		var r indexRecords
		var n int
		var sum uint32
		flush := func() error {
			n += len(r.b)
			sum = crc32.Update(sum, crcTable(), r.b)
			_, err := w.Write(r.b)
			r.b = r.b[:0]
			return err
		}
		for i := range x.entries {
			r.add(&x.entries[i])
			if len(r.b) >= 32<<10 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if x.stamped {
			r.stamp(x.stamps)
		}
		if err := flush(); err != nil {
			return err
		}
		tail := fmt.Appendf(nil, ". %d %08x\n", n, sum)
		size += int64(n + len(tail))
		_, err := w.Write(tail)
		return err
	})
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Stat(f.indexPath(), &st); err != nil {
		return fmt.Errorf("maildir: stat %s: %w", f.indexPath(), err)
	}
	x.size, x.st = size, st
	f.mu.Lock()
	f.idx = x
	if x.validity > f.lastValidity {
		f.lastValidity = x.validity
	}
	f.mu.Unlock()
	return nil
}

// appendLocked appends a block to the index under the lock and returns
// the index with it applied. x must be the index as of the lock (from
// loadLocked or a previous appendLocked).
func (f *Folder) appendLocked(x *index, r *indexRecords) (*index, error) {
	if len(r.b) == 0 {
		return x, nil
	}
	block := r.commit()
	y := x.clone()
	// The names point into the block itself, which nothing writes to
	// after commit: a copy of it would be as large as the block, a
	// megabyte or more at the end of a large session.
	if err := y.applyRecords(unsafe.String(unsafe.SliceData(block), len(r.b))); err != nil {
		return nil, fmt.Errorf("maildir: index block: %w", err) // a bug of ours
	}
	// Compaction: a file grown to twice what a fresh one would be is
	// written anew, the block's state with it.
	if x.size+int64(len(block)) > 2*y.compactSize()+64<<10 {
		y.size = 0
		if err := f.writeIndex(y); err != nil {
			return nil, err
		}
		return y, nil
	}
	file, err := os.OpenFile(f.indexPath(), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, fmt.Errorf("maildir: append to index: %w", err)
	}
	defer file.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(file.Fd()), &st); err != nil || st.Ino != x.st.Ino || st.Size != x.size {
		// Not the file the lock holder read: never append to a file
		// in an unknown state.
		return nil, fmt.Errorf("maildir: index %s changed under the lock", f.indexPath())
	}
	if _, err := file.Write(block); err != nil {
		os.Truncate(f.indexPath(), x.size)
		return nil, fmt.Errorf("maildir: append to index: %w", err)
	}
	if r.needSync {
		if err := ignoringEINTR(func() error { return unix.Fdatasync(int(file.Fd())) }); err != nil {
			return nil, fmt.Errorf("maildir: fsync index: %w", err)
		}
	}
	if err := unix.Fstat(int(file.Fd()), &st); err != nil {
		return nil, fmt.Errorf("maildir: append to index: %w", err)
	}
	y.size += int64(len(block))
	y.st = st
	f.publish(y)
	return y, nil
}

// refreshLocked brings the index up to date with new/ and cur/ under the
// lock. Only a directory whose stamp changed is read; a listing whose
// names sum up to what the index says (the usual case after a change
// this index already holds) costs one readdir and no map. Otherwise the
// listing is compared name by name: messages gone are expunged, renamed
// ones follow, and new ones get UIDs in arrival order (see giveUIDs).
// When the listing was read after the file system's clock had passed the
// directories' stamps, the stamps are recorded, and the next reader
// trusts the index without reading a directory.
func (f *Folder) refreshLocked(lk *dotLock) (*index, error) {
	return f.refreshWaiting(lk, false)
}

// refreshWaiting is refreshLocked; with wait, when the directories were
// changed within the file system clock's last tick (this process's own
// changes, just now), it waits for the tick to pass, a few milliseconds
// at most, so that the stamps can be recorded.
func (f *Folder) refreshWaiting(lk *dotLock, wait bool) (*index, error) {
	x, err := f.loadLocked()
	if err != nil {
		return nil, err
	}
	made, clockOK := f.fsClock()
	st, err := f.stamps()
	if err != nil {
		return nil, err
	}
	if x.stamped && st == x.stamps {
		return x, nil
	}
	for try := 0; wait && clockOK && !(st[0].before(made) && st[1].before(made)) && try < 20; try++ {
		time.Sleep(time.Millisecond)
		made, clockOK = f.fsClock()
		if st, err = f.stamps(); err != nil {
			return nil, err
		}
	}
	read := [2]bool{!x.stamped || st[0] != x.stamps[0], !x.stamped || st[1] != x.stamps[1]}
	// First the names are only summed up as readdir gives them, no
	// string made: after a change this index already holds (a session's
	// own) that is all there is to do.
	var sums [2]dirSum
	dirs := [2]string{filepath.Join(f.path, "new"), filepath.Join(f.path, "cur")}
	if read[0] {
		if sums[0], err = sumDir(dirs[0]); err != nil {
			return nil, err
		}
		if !read[1] {
			// A message moved from new/ to cur/ while new/ was read
			// would be missed: cur/ is read too when it changed.
			if st2, err := stampOf(dirs[1]); err != nil || st2 != st[1] {
				read[1] = true
			}
		}
	}
	if read[1] {
		if sums[1], err = sumDir(dirs[1]); err != nil {
			return nil, err
		}
	}
	lk.touch()
	same := true
	for d := range 2 {
		if read[d] && sums[d] != x.sums[d] && !(f.store.mutation == mutationCountOnly && sums[d].n == x.sums[d].n) {
			same = false
		}
	}
	var names [2][]string
	if !same {
		// new/ before cur/, as everywhere: a message moving from one to
		// the other meanwhile is seen at least once.
		for d := range 2 {
			if read[d] {
				if names[d], err = readDirNames(dirs[d]); err != nil {
					return nil, err
				}
			}
		}
	}
	trust := clockOK && st[0].before(made) && st[1].before(made)
	var r indexRecords
	if !same {
		var complete bool
		if complete, err = f.diff(x, read, &names, &r, lk); err != nil {
			return nil, err
		}
		trust = trust && complete
	}
	if trust {
		r.stamp(st)
	}
	return f.appendLocked(x, &r)
}

// diff compares the listing with the index and writes the records that
// make the index true. It reports whether the index will then hold every
// message listed (a message left for the next look makes it false).
func (f *Folder) diff(x *index, read [2]bool, names *[2][]string, r *indexRecords, lk *dotLock) (bool, error) {
	if len(x.entries) == 0 {
		// A first look: every name is new, and no map of them is made
		// to find that out (at 100,000 messages it was the largest thing
		// a first login held). A name listed in both directories, the
		// message moving meanwhile, is in fresh twice, which does no
		// harm below: UIDs are given from the second read's map.
		fresh := make([]string, 0, len(names[0])+len(names[1]))
		for d := range 2 {
			for _, n := range names[d] {
				if u, _ := splitName(n); validUnique(u) {
					fresh = append(fresh, u)
				}
			}
		}
		return f.diffAgain(x, nil, nil, fresh, names, r, lk)
	}
	listed := make(map[string]place, len(x.entries)+len(names[0]))
	for d := range 2 {
		if read[d] {
			for _, n := range names[d] {
				if u, _ := splitName(n); validUnique(u) {
					listed[u] = place{name: n, cur: d == 1}
				}
			}
			continue
		}
		for i := range x.entries {
			if e := &x.entries[i]; dirIdx(e.new) == d {
				listed[e.unique()] = place{name: e.name, cur: d == 1}
			}
		}
	}
	known := make(map[string]struct{}, len(x.entries))
	var missing []int
	for i := range x.entries {
		e := &x.entries[i]
		u := e.unique()
		known[u] = struct{}{}
		p, ok := listed[u]
		if !ok {
			missing = append(missing, i)
			continue
		}
		if p.name != e.name || p.cur == e.new {
			r.rename(e.uid, !p.cur, p.name)
		}
	}
	var fresh []string
	for u := range listed {
		if _, ok := known[u]; !ok {
			fresh = append(fresh, u)
		}
	}
	return f.diffAgain(x, known, missing, fresh, names, r, lk)
}

// diffAgain is the rest of diff, from the second read of the
// directories: known holds the unique names of the index (nil when it
// has none), missing the places in it of those the first read did not
// find, fresh the names the first read found that the index lacks.
func (f *Folder) diffAgain(x *index, known map[string]struct{}, missing []int, fresh []string, names *[2][]string, r *indexRecords, lk *dotLock) (bool, error) {
	if len(missing) == 0 && len(fresh) == 0 {
		return true, nil
	}
	// What the first read found is in missing, fresh and the renames
	// now: its map and listing can go before the second read makes
	// their like again (a first look at 100,000 messages holds one
	// read's worth, not two).
	names[0], names[1] = nil, nil
	// A second read of the directories: a message seen by the first read
	// was delivered before the second began, so every message delivered
	// before it is seen by the second. Only messages up to the latest
	// one seen by both get UIDs now, so a later delivery never gets a
	// smaller UID than an earlier one that readdir happened to miss
	// while it was being linked; the rest wait for the next look. And a
	// message renamed by another program during the first read (which
	// may then show neither name) is found by the second, not expunged.
	again, err := f.scan()
	if err != nil {
		return false, err
	}
	lk.touch()
	complete := true
	for _, i := range missing {
		e := &x.entries[i]
		if p, ok := again[e.unique()]; ok {
			r.rename(e.uid, !p.cur, p.name)
			continue
		}
		r.expunge(e.uid)
	}
	var cutoff arrival
	haveCutoff := false
	for _, u := range fresh {
		if _, ok := again[u]; ok {
			if k := parseArrival(u); !haveCutoff || cutoff.less(k) {
				cutoff, haveCutoff = k, true
			}
		}
	}
	// Given from the second read: a message the first read missed while
	// it was being linked, earlier than the cutoff, gets its UID now,
	// before the later one the first read saw.
	var give []string
	for u := range again {
		if _, ok := known[u]; ok {
			continue
		}
		if haveCutoff && !cutoff.less(parseArrival(u)) {
			give = append(give, u)
			continue
		}
		complete = false
	}
	for _, u := range fresh {
		if _, ok := again[u]; !ok {
			complete = false
		}
	}
	sortByArrival(give)
	next := x.next
	if uint64(next)+uint64(len(give)) >= math.MaxUint32 {
		return false, fmt.Errorf("maildir: %s: UIDs spent; remove %s to start again under a new UIDVALIDITY", f.path, f.indexPath())
	}
	entries, err := f.entriesOf(give, again)
	if err != nil {
		return false, err
	}
	// One allocation for the records, not a doubling per megabyte.
	if len(give) > 0 {
		r.b = slices.Grow(r.b, len(entries)*(len(give[0])+48)+64)
	}
	for i := range entries {
		e := &entries[i]
		if e.name == "" {
			complete = false // gone meanwhile
			continue
		}
		e.uid = next
		r.add(e)
		next++
	}
	return complete, nil
}

// entriesOf reads what the index keeps of each message (entryOf), a few
// at a time: a first look at a folder of 100,000 messages makes as many
// stat(2)s, which wait on the disk more than on the processor. A message
// gone meanwhile gets an entry with no name.
func (f *Folder) entriesOf(uniques []string, where map[string]place) ([]indexEntry, error) {
	out := make([]indexEntry, len(uniques))
	const workers = 4
	if len(uniques) < 64 {
		for i, u := range uniques {
			e, ok, err := f.entryOf(where[u], 0)
			if err != nil {
				return nil, err
			}
			if ok {
				out[i] = e
			}
		}
		return out, nil
	}
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(uniques); i += workers {
				e, ok, err := f.entryOf(where[uniques[i]], 0)
				if err != nil {
					errs[w] = err
					return
				}
				if ok {
					out[i] = e
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// giveUIDs records messages this process has just put into the folder
// (APPEND, COPY, MOVE), by unique name, with the next UIDs in the order
// given, and makes the index durable. It returns the UIDVALIDITY and each
// one's UID (0 for "" or a message gone meanwhile).
func (f *Folder) giveUIDs(uniques []string) (uint32, []uint32, error) {
	lk, err := f.lock()
	if err != nil {
		return 0, nil, err
	}
	defer lk.unlock()
	x, err := f.loadLocked()
	if err != nil {
		return 0, nil, err
	}
	uids := make([]uint32, len(uniques))
	var r indexRecords
	next := x.next
	for i, u := range uniques {
		if u == "" {
			continue
		}
		f.mu.Lock()
		p, ok := f.names[u]
		f.mu.Unlock()
		if !ok {
			continue
		}
		e, ok, err := f.entryOf(p, next)
		if err != nil {
			return 0, nil, err
		}
		if !ok {
			continue
		}
		r.add(&e)
		uids[i] = next
		next++
	}
	if _, err := f.appendLocked(x, &r); err != nil {
		return 0, nil, err
	}
	return x.validity, uids, nil
}

// compactSize is about what the index would take written whole.
func (x *index) compactSize() int64 {
	n := int64(0)
	for i := range x.entries {
		n += int64(len(x.entries[i].name)) + 40
	}
	return n
}

// sumDir sums up the message names of a directory (see dirSum) straight
// from getdents(2)'s records, with no string made for each: a directory
// of 100,000 names costs its readdir and nothing for the garbage
// collector. Names are taken as readDirNames and scan take them.
func sumDir(dir string) (dirSum, error) {
	var s dirSum
	fd, err := openRetry(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return s, fmt.Errorf("maildir: read %w", err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.ReadDirent(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return s, fmt.Errorf("maildir: read %s: %w", dir, err)
		}
		if n <= 0 {
			return s, nil
		}
		// struct linux_dirent64: d_ino (8 bytes), d_off (8),
		// d_reclen (2), d_type (1), d_name (NUL-terminated).
		for b := buf[:n]; len(b) > 0; {
			if len(b) < 19 {
				return s, fmt.Errorf("maildir: read %s: a directory entry cut short", dir)
			}
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				return s, fmt.Errorf("maildir: read %s: a directory entry of %d bytes", dir, reclen)
			}
			name := b[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			b = b[reclen:]
			if len(name) == 0 {
				continue
			}
			// Looked at here and let go: the buffer is read into again
			// only after this name is done with.
			nm := unsafe.String(&name[0], len(name))
			if u, _ := splitName(nm); validUnique(u) {
				s.add(nm)
			}
		}
	}
}

// byUnique maps unique names to positions.
func (x *index) byUnique() map[string]int {
	m := make(map[string]int, len(x.entries))
	for i := range x.entries {
		m[x.entries[i].unique()] = i
	}
	return m
}

// Mutations of the index's rules that the tests must catch (see
// TestIndexBehindItsBack): a Store with one set trusts the index wrongly.
const (
	mutationNone = iota
	// mutationTrustStale trusts a stamped index whatever the stamps.
	mutationTrustStale
	// mutationCountOnly takes a directory with as many names as the
	// index has there for unchanged.
	mutationCountOnly
)

// dirStamp is what tells that a directory has changed: a new entry, a
// removed one and a rename all set its mtime and ctime, and ctime cannot
// be set back by anyone (utimes(2) sets ctime to now).
type dirStamp struct {
	ino          uint64
	mtime, ctime unix.StatxTimestamp
}

func (s dirStamp) before(t unix.StatxTimestamp) bool {
	return tsLess(s.mtime, t) && tsLess(s.ctime, t)
}

func tsLess(a, b unix.StatxTimestamp) bool {
	return a.Sec < b.Sec || a.Sec == b.Sec && a.Nsec < b.Nsec
}

// stampOf reads a directory's stamp. AT_STATX_FORCE_SYNC makes an NFS
// client ask the server rather than answer from its attribute cache
// (acdirmin and acdirmax, 30 and 60 seconds by default), so a delivery
// by another host is seen; on a local file system it costs nothing.
func stampOf(dir string) (dirStamp, error) {
	var st unix.Statx_t
	err := unix.Statx(unix.AT_FDCWD, dir, unix.AT_STATX_FORCE_SYNC, unix.STATX_INO|unix.STATX_MTIME|unix.STATX_CTIME, &st)
	if err != nil {
		return dirStamp{}, fmt.Errorf("maildir: stat %s: %w", dir, err)
	}
	return dirStamp{ino: st.Ino, mtime: st.Mtime, ctime: st.Ctime}, nil
}

// crcTable is made on first use, not at package init: every tern-deliver
// process would pay for a table only sessions use.
var crcTable = sync.OnceValue(func() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) })

func parseTS(s string) (unix.StatxTimestamp, bool) {
	sec, nsec, found := strings.Cut(s, ".")
	a, err1 := strconv.ParseInt(sec, 10, 64)
	b, err2 := strconv.ParseUint(nsec, 10, 32)
	if !found || err1 != nil || err2 != nil || len(nsec) != 9 {
		return unix.StatxTimestamp{}, false
	}
	return unix.StatxTimestamp{Sec: a, Nsec: uint32(b)}, true
}

func parseUint(s string) (uint64, bool) {
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// Settle brings the folder's index up to date after changes this process
// made (a POP3 QUIT, an IMAP CLOSE), so that the next session reads it
// without reading a directory.
func (f *Folder) Settle() error {
	lk, err := f.lock()
	if err != nil {
		return err
	}
	defer lk.unlock()
	x, err := f.refreshWaiting(lk, true)
	if err != nil {
		return err
	}
	// A session is done: the next one reads the index whole, so it is
	// written whole once the changes are half of it (a QUIT that read
	// 100,000 new messages doubles it).
	if x.size > x.compactSize()*3/2+64<<10 {
		y := *x // its entries are only read
		return f.writeIndex(&y)
	}
	return nil
}
