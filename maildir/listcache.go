package maildir

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ListCacheName is the file in a folder's directory that keeps the
// folder's listing (every file name in new/ and cur/, in arrival order,
// with its sizes) between sessions; see tern-maildir(5). It is a cache:
// removing it at any time is harmless, and it is used only while the
// directories provably have not changed since it was made.
const ListCacheName = "tern-listcache"

// maxListCache bounds what is read of a listing cache: about 2.5 million
// messages. A larger file is not trusted and the folder is read instead.
const maxListCache = 256 << 20

// Listed is one message of a folder as its file name tells it.
type Listed struct {
	// Name is the file name, "<unique>:2,<flags>" in cur/ or the unique
	// name alone, usually, in new/.
	Name string
	// New says the file is in new/.
	New bool
	// Size is the size on disk (S=), RFC822Size the size with every LF
	// counted as CRLF (W=); read from the file once where the name lacks
	// them, and then kept in the listing cache.
	Size, RFC822Size int64
}

// Unique is the name without its info part: the message's unique name.
func (l Listed) Unique() string { u, _ := splitName(l.Name); return u }

// Flags are the maildir flag letters of the name.
func (l Listed) Flags() string { _, f := splitName(l.Name); return f }

// Dir is "new" or "cur".
func (l Listed) Dir() string {
	if l.New {
		return "new"
	}
	return "cur"
}

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
// by another host is seen; on a local filesystem it costs nothing.
func stampOf(dir string) (dirStamp, error) {
	var st unix.Statx_t
	err := unix.Statx(unix.AT_FDCWD, dir, unix.AT_STATX_FORCE_SYNC, unix.STATX_INO|unix.STATX_MTIME|unix.STATX_CTIME, &st)
	if err != nil {
		return dirStamp{}, fmt.Errorf("maildir: stat %s: %w", dir, err)
	}
	return dirStamp{ino: st.Ino, mtime: st.Mtime, ctime: st.Ctime}, nil
}

// listCache is a parsed listing cache.
type listCache struct {
	made     unix.StatxTimestamp // the filesystem's clock before the scan
	new, cur dirStamp            // the directories before the scan
	list     []Listed
}

// List returns the folder's messages in the order of arrival that their
// names tell (seconds, microseconds, then the rest of the name), as
// EachOnDisk does, without the UID list and without a lock.
//
// Where new/ and cur/ are unchanged since the listing cache was made, the
// listing is read from it: one read of one file instead of reading
// directories of 100,000 names and sorting them. Where only new/ has
// changed (deliveries), cur/'s part is taken from the cache and only new/
// is read. Otherwise the directories are read, and the cache is written
// again when write is set and the directories are still enough for it to
// be trusted next time (see writeListCache).
func (f *Folder) List(write bool) ([]Listed, error) {
	newDir, curDir := filepath.Join(f.path, "new"), filepath.Join(f.path, "cur")
	newSt, err := stampOf(newDir)
	if err != nil {
		return nil, err
	}
	curSt, err := stampOf(curDir)
	if err != nil {
		return nil, err
	}
	cache := f.readListCache()
	if cache != nil && cache.new == newSt && cache.cur == curSt {
		return cache.list, nil
	}
	// Something changed: what is read now is stamped with the
	// filesystem's clock from before the directories are looked at.
	var tmp *os.File
	var made unix.StatxTimestamp
	if write {
		tmp, made = f.listCacheTmp()
		if tmp != nil {
			defer func() {
				if tmp != nil {
					tmp.Close()
					os.Remove(tmp.Name())
				}
			}()
		}
		if newSt, err = stampOf(newDir); err != nil {
			return nil, err
		}
		if curSt, err = stampOf(curDir); err != nil {
			return nil, err
		}
	}
	var list []Listed
	if cache != nil && cache.cur == curSt {
		list, err = f.listWithCur(cache, curDir)
	}
	if list == nil && err == nil {
		list, err = f.listDirs()
	}
	if err != nil {
		return nil, err
	}
	// Messages whose names lack their sizes are read from the file
	// now, once; the cache keeps what was found.
	for i := range list {
		if l := &list[i]; l.Size < 0 || l.RFC822Size < 0 {
			m := Message{Path: filepath.Join(f.path, l.Dir(), l.Name), Size: l.Size, RFC822Size: l.RFC822Size}
			if err := fileSizes(&m); errors.Is(err, fs.ErrNotExist) {
				l.Size, l.RFC822Size = -2, -2 // gone: dropped below
				continue
			} else if err != nil {
				return nil, err
			}
			l.Size, l.RFC822Size = m.Size, m.RFC822Size
		}
	}
	list = slices.DeleteFunc(list, func(l Listed) bool { return l.Size == -2 })
	if tmp != nil && newSt.before(made) && curSt.before(made) {
		if err := writeListCache(tmp, &listCache{made: made, new: newSt, cur: curSt, list: list}); err == nil {
			if os.Rename(tmp.Name(), filepath.Join(f.path, ListCacheName)) == nil {
				tmp = nil
			}
		}
	}
	return list, nil
}

// listWithCur lists new/ and takes cur/'s part from the cache. It returns
// nil when cur/ changes meanwhile (a message moved from new/ to cur/
// while new/ was read could be missed), and the caller reads both.
func (f *Folder) listWithCur(cache *listCache, curDir string) ([]Listed, error) {
	names, err := readDirNames(filepath.Join(f.path, "new"))
	if err != nil {
		return nil, err
	}
	if st, err := stampOf(curDir); err != nil || st != cache.cur {
		return nil, err
	}
	fresh := make([]Listed, 0, len(names))
	for _, n := range names {
		if u, _ := splitName(n); validUnique(u) {
			fresh = append(fresh, listedOf(n, true))
		}
	}
	sortListed(fresh)
	// New mail is mostly newer than all in cur/: each fresh message
	// finds its place by a binary search, and cur/'s run before it is
	// copied whole, so the merge parses a few names, not 100,000.
	list := make([]Listed, 0, len(cache.list)+len(fresh))
	old := cache.list
	for _, l := range fresh {
		key := parseArrival(l.Unique())
		k, _ := slices.BinarySearchFunc(old, key, func(o Listed, key arrival) int {
			// Equal keys sort the one in cur/ first.
			if c := parseArrival(o.Unique()).cmp(key); c != 0 {
				return c
			}
			return -1
		})
		list = appendCur(list, old[:k])
		old = old[k:]
		if n := len(list); n > 0 && list[n-1].Unique() == l.Unique() {
			continue // in both: cur/ wins, as in scan
		}
		list = append(list, l)
	}
	return appendCur(list, old), nil
}

// appendCur appends the messages of a cached listing that are in cur/.
func appendCur(list, cached []Listed) []Listed {
	for _, l := range cached {
		if !l.New {
			list = append(list, l)
		}
	}
	return list
}

// listDirs reads new/ and then cur/, so that a message moving from one to
// the other meanwhile is seen at least once; where it is seen twice, its
// place in cur/ wins, as in scan.
func (f *Folder) listDirs() ([]Listed, error) {
	newNames, curNames, err := f.readNewCur()
	if err != nil {
		return nil, err
	}
	list := make([]Listed, 0, len(newNames)+len(curNames))
	for _, n := range curNames {
		if u, _ := splitName(n); validUnique(u) {
			list = append(list, listedOf(n, false))
		}
	}
	for _, n := range newNames {
		if u, _ := splitName(n); validUnique(u) {
			list = append(list, listedOf(n, true))
		}
	}
	// The sort is stable and cur/ went first: of two equal unique
	// names, the one in cur/ comes first and the other is dropped.
	sortListed(list)
	return slices.CompactFunc(list, func(a, b Listed) bool { return a.Unique() == b.Unique() }), nil
}

func listedOf(name string, isNew bool) Listed {
	u, _ := splitName(name)
	l := Listed{Name: name, New: isNew}
	l.Size, l.RFC822Size = nameSizes(u)
	return l
}

// sortListed sorts by arrival, parsing each name once.
func sortListed(list []Listed) {
	type entry struct {
		key arrival
		l   Listed
	}
	entries := make([]entry, len(list))
	for i, l := range list {
		entries[i] = entry{parseArrival(l.Unique()), l}
	}
	slices.SortStableFunc(entries, func(a, b entry) int { return a.key.cmp(b.key) })
	for i := range entries {
		list[i] = entries[i].l
	}
}

func (a arrival) cmp(b arrival) int {
	switch {
	case a.less(b):
		return -1
	case b.less(a):
		return 1
	}
	return 0
}

// listCacheTmp makes the file the cache is written to, in tmp/, and
// returns the filesystem's clock as its timestamps tell it: the clock
// that sets the directories' times, on this host or on an NFS server, and
// in their granularity. A directory stamped before that time and
// unchanged at the next look has not changed: any change after it gets a
// later time. Without it (a read-only Maildir) no cache is written.
func (f *Folder) listCacheTmp() (*os.File, unix.StatxTimestamp) {
	name := filepath.Join(f.path, "tmp", fmt.Sprintf("%d.P%dR%d.%s", f.store.now().Unix(), os.Getpid(), rand.Uint64(), ListCacheName))
	tmp, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, unix.StatxTimestamp{}
	}
	var st unix.Statx_t
	if err := unix.Statx(int(tmp.Fd()), "", unix.AT_EMPTY_PATH|unix.AT_STATX_FORCE_SYNC, unix.STATX_MTIME, &st); err != nil {
		tmp.Close()
		os.Remove(name)
		return nil, unix.StatxTimestamp{}
	}
	return tmp, st.Mtime
}

// crcTable is made on first use: at package init it cost every
// tern-deliver process 0.13-0.2 ms, for a cache only POP3 reads.
var crcTable = sync.OnceValue(func() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) })

// The cache's first line: the format and version, the time it was made,
// the two directories' inode numbers, mtimes and ctimes as they were, the
// number of messages and the CRC-32C of everything after the line. Then
// one line a message: "n" (new/) or "c" (cur/), the two sizes and the
// file name.
const listCacheMagic = "tern-listcache 1"

// writeListCache writes the cache into tmp. It is not fsynced: a cache
// cut short by a crash fails its check and the directories are read.
func writeListCache(tmp *os.File, c *listCache) error {
	var body bytes.Buffer
	body.Grow(len(c.list) * 100)
	var num [20]byte
	for _, l := range c.list {
		if l.New {
			body.WriteString("n ")
		} else {
			body.WriteString("c ")
		}
		body.Write(strconv.AppendInt(num[:0], l.Size, 10))
		body.WriteByte(' ')
		body.Write(strconv.AppendInt(num[:0], l.RFC822Size, 10))
		body.WriteByte(' ')
		body.WriteString(l.Name)
		body.WriteByte('\n')
	}
	if body.Len() > maxListCache {
		return errors.New("maildir: listing too large to cache")
	}
	ts := func(t unix.StatxTimestamp) string { return fmt.Sprintf("%d.%09d", t.Sec, t.Nsec) }
	head := fmt.Sprintf("%s %s %d %s %s %d %s %s %d %08x\n", listCacheMagic, ts(c.made),
		c.new.ino, ts(c.new.mtime), ts(c.new.ctime), c.cur.ino, ts(c.cur.mtime), ts(c.cur.ctime),
		len(c.list), crc32.Checksum(body.Bytes(), crcTable()))
	if _, err := io.WriteString(tmp, head); err != nil {
		return err
	}
	if _, err := tmp.Write(body.Bytes()); err != nil {
		return err
	}
	return tmp.Close()
}

// readListCache reads the folder's cache; nil when there is none or it
// cannot be trusted.
func (f *Folder) readListCache() *listCache {
	file, err := os.Open(filepath.Join(f.path, ListCacheName))
	if err != nil {
		return nil
	}
	defer file.Close()
	st, err := file.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() > maxListCache+4096 {
		return nil
	}
	data := make([]byte, st.Size()+1)
	n, err := io.ReadFull(file, data)
	if err != io.ErrUnexpectedEOF || int64(n) != st.Size() {
		return nil // grew meanwhile: not the file that was written
	}
	return parseListCache(data[:n])
}

// parseListCache checks and parses a cache. The names in the listing are
// parts of one string made from data, which must not change afterwards:
// 100,000 names then cost one allocation, not 100,000.
func parseListCache(data []byte) *listCache {
	nl := bytes.IndexByte(data, '\n')
	if nl < 0 || len(data) == 0 {
		return nil
	}
	head := strings.Fields(string(data[:nl]))
	body := data[nl+1:]
	if len(head) != 11 || head[0]+" "+head[1] != listCacheMagic {
		return nil
	}
	c := &listCache{}
	var ok [7]bool
	c.made, ok[0] = parseTS(head[2])
	c.new.ino, ok[1] = parseUint(head[3])
	c.new.mtime, ok[2] = parseTS(head[4])
	c.new.ctime, ok[3] = parseTS(head[5])
	c.cur.ino, ok[4] = parseUint(head[6])
	c.cur.mtime, ok[5] = parseTS(head[7])
	c.cur.ctime, ok[6] = parseTS(head[8])
	count, okCount := parseUint(head[9])
	sum, err := strconv.ParseUint(head[10], 16, 32)
	if slices.Contains(ok[:], false) || !okCount || err != nil || count > uint64(len(body)/8) {
		return nil
	}
	// A cache made from directories not older than it proves nothing.
	if !c.new.before(c.made) || !c.cur.before(c.made) {
		return nil
	}
	if crc32.Checksum(body, crcTable()) != uint32(sum) {
		return nil
	}
	text := unsafe.String(unsafe.SliceData(body), len(body))
	c.list = make([]Listed, 0, count)
	for text != "" {
		line, rest, found := strings.Cut(text, "\n")
		if !found {
			return nil
		}
		text = rest
		l, ok := parseListedLine(line)
		if !ok {
			return nil
		}
		c.list = append(c.list, l)
	}
	if uint64(len(c.list)) != count {
		return nil
	}
	return c
}

func parseListedLine(line string) (Listed, bool) {
	var l Listed
	if len(line) < 2 || line[1] != ' ' || line[0] != 'n' && line[0] != 'c' {
		return l, false
	}
	l.New = line[0] == 'n'
	size, rest, _ := strings.Cut(line[2:], " ")
	rfc822, name, _ := strings.Cut(rest, " ")
	var err1, err2 error
	l.Size, err1 = strconv.ParseInt(size, 10, 64)
	l.RFC822Size, err2 = strconv.ParseInt(rfc822, 10, 64)
	if err1 != nil || err2 != nil || l.Size < 0 || l.RFC822Size < 0 || strings.IndexByte(name, '/') >= 0 {
		return l, false
	}
	if u, _ := splitName(name); !validUnique(u) {
		return l, false
	}
	l.Name = name
	return l, true
}

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
