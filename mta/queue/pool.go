package queue

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A process that queues many messages (tern-smtpd serving every
// connection itself) keeps a pool of prepared entries: empty files in
// incoming/ named .pool-RANDOM, made ahead of need in batches whose names
// one fsync of the directory makes durable, each held under flock(2) by
// the process that made it. A message is then written into a name that is
// already on disk, sealed (its length and CRC-32C in the envelope's seal
// line), flushed once with fdatasync(2), and renamed to its queue ID;
// that rename needs no flush of its own, because a crash that undoes it
// leaves a sealed .pool- file, which tern-queue takes in under the ID its
// envelope names (ReclaimPool). One flush a message instead of two (the
// file, then the directory), and the expensive part of the first, making
// a new inode and its entry, is done in advance: at eight concurrent
// sessions it is most of the time a message waited for its 250.
//
// An entry whose writer stopped before sealing it fails the check and is
// moved to bad/: it was never acknowledged.

// PoolPrefix starts the names of prepared entries in incoming/.
const PoolPrefix = ".pool-"

// sealKey is the envelope line of a prepared entry, right after the format
// line: the length of everything after the seal line and its CRC-32C, in
// fixed-width hex, written over zeros once the message is in.
const sealKey = "seal "

// castagnoli is made at first use: made at init, it would be paid by the
// start of every tern-enqueue and per-connection tern-smtpd, which never
// write a seal.
var castagnoli = sync.OnceValue(func() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) })

// sealOffset is where the seal's value starts in a prepared entry, and
// sealEnd where the seal line ends (what the seal covers starts).
const (
	sealOffset   = len(Format) + 1 + len(sealKey)
	sealValueLen = 16 + 1 + 8
	sealEnd      = sealOffset + sealValueLen + 1
)

// sealValue formats a seal's value: 16 hex digits of length, a space,
// 8 of CRC-32C.
func sealValue(n int64, sum uint32) string { return fmt.Sprintf("%016x %08x", n, sum) }

func validSeal(v string) bool {
	if len(v) != sealValueLen || v[16] != ' ' {
		return false
	}
	return validHex(v[:16]) && validHex(v[17:])
}

// validHex reports whether s is all lower-case hex digits.
func validHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return s != ""
}

// pool is a Queue's supply of prepared entries.
type pool struct {
	ready  chan entry    // open, flocked, durably named, empty
	refill chan struct{} // wakes the filler
	stop   chan struct{}
	done   chan struct{}
}

// KeepReady makes the Queue keep about n prepared entries for Inject. It
// is for a long-running process that queues many messages, and is called
// once it runs as the user it will write as (the entries are that user's
// submissions). Close removes the entries not used.
func (q *Queue) KeepReady(n int) {
	if n < 2 {
		n = 2
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.pool != nil {
		return
	}
	p := &pool{ready: make(chan entry, n), refill: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	q.pool = p
	go q.fill(p)
}

// Close stops the pool, if any, and removes its unused entries. The Queue
// still works without it.
func (q *Queue) Close() error {
	q.mu.Lock()
	p := q.pool
	q.pool = nil
	q.mu.Unlock()
	if p == nil {
		return nil
	}
	close(p.stop)
	<-p.done
	p.empty()
	return nil
}

// empty discards the entries ready.
func (p *pool) empty() {
	for {
		select {
		case e := <-p.ready:
			e.discard()
		default:
			return
		}
	}
}

// prepareBatch is how many entries one fsync of incoming/ makes durable:
// small enough that the first are ready soon after a start or a burst,
// large enough that the flush is shared.
const prepareBatch = 8

// fill tops the pool up whenever it is half empty, in batches of files
// whose names one fsync of incoming/ makes durable. After a failure (a
// full disk) it waits a second, and Inject meanwhile writes the usual way.
func (q *Queue) fill(p *pool) {
	defer close(p.done)
	topping := true // until full again, once half empty
	for {
		if missing := cap(p.ready) - len(p.ready); topping && missing > 0 {
			n := min(missing, prepareBatch)
			var made []entry
			for range n {
				e, err := q.prepare()
				if err != nil {
					break
				}
				made = append(made, e)
			}
			if len(made) > 0 && q.incoming.Do(q.syncIncoming) != nil {
				for _, e := range made {
					e.discard()
				}
				made = nil
			}
			for _, e := range made {
				p.ready <- e // room was counted above; only fill adds
			}
			if len(made) < n {
				select {
				case <-p.stop:
					return
				case <-time.After(time.Second):
				}
			}
			select {
			case <-p.stop:
				return
			default:
			}
			continue
		}
		topping = false
		select {
		case <-p.stop:
			return
		case <-p.refill:
			topping = true
		}
	}
}

// entry is a prepared entry: its file, open and locked, and its name.
type entry struct {
	f    *os.File
	name string
}

func (e entry) discard() {
	os.Remove(e.name)
	e.f.Close()
}

// prepare makes one empty entry, locked before it has its .pool- name,
// so that every .pool- file not locked is one whose process is gone: an
// unnamed file (O_TMPFILE) locked and then linked in, or, where that
// cannot be done (a file system without O_TMPFILE, no /proc), a temporary
// file locked and then renamed.
func (q *Queue) prepare() (entry, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return entry{}, err
	}
	name := q.path(Incoming, PoolPrefix+hex.EncodeToString(b[:]))
	if e, ok := q.prepareUnnamed(name); ok {
		return e, nil
	}
	f, err := q.create(Incoming)
	if err != nil {
		return entry{}, err
	}
	e := entry{f: f, name: f.Name()}
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if err == nil {
		if err = renameNoReplace(e.name, name); err == nil {
			e.name = name
		}
	}
	if err != nil {
		e.discard()
		return entry{}, err
	}
	return e, nil
}

func (q *Queue) prepareUnnamed(name string) (entry, bool) {
	if noTmpfile {
		return entry{}, false
	}
	fd, err := unix.Open(filepath.Join(q.Dir, Incoming), unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return entry{}, false
	}
	f := os.NewFile(uintptr(fd), name)
	err = syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
	if err == nil {
		err = unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, name, unix.AT_SYMLINK_FOLLOW)
	}
	if err != nil {
		f.Close()
		return entry{}, false
	}
	return entry{f: f, name: name}, true
}

// noTmpfile makes prepare take its second way (tests).
var noTmpfile = false

// take returns a prepared entry, if one is ready.
func (q *Queue) take() (entry, bool) {
	q.mu.Lock()
	p := q.pool
	q.mu.Unlock()
	if p == nil {
		return entry{}, false
	}
	var e entry
	ok := false
	select {
	case e = <-p.ready:
		ok = true
	default:
	}
	if len(p.ready) < cap(p.ready)/2 {
		select {
		case p.refill <- struct{}{}:
		default:
		}
	}
	return e, ok
}

// drain drops every prepared entry: their directory is not the queue's
// incoming/ any more (an administrator made the queue anew).
func (q *Queue) drain() {
	q.mu.Lock()
	p := q.pool
	q.mu.Unlock()
	if p != nil {
		p.empty()
	}
}

// sealWriter passes everything on to w and counts and checksums what
// comes after the first skip bytes.
type sealWriter struct {
	w    io.Writer
	skip int
	n    int64
	crc  hash.Hash32
}

func (s *sealWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	h := p[:n]
	if s.skip > 0 {
		k := min(s.skip, len(h))
		h, s.skip = h[k:], s.skip-k
	}
	s.n += int64(len(h))
	s.crc.Write(h)
	return n, err
}

// injectPrepared is Inject into prepared entry pe.
func (q *Queue) injectPrepared(pe entry, e *Envelope, msg io.Reader) (string, error) {
	f, name := pe.f, pe.name
	committed := false
	defer func() {
		if !committed {
			pe.discard()
		}
	}()
	var env bytes.Buffer
	if err := e.Marshal(&env); err != nil {
		return "", err
	}
	// Marshal's first line is the format; the seal goes right after it.
	rest, _ := bytes.CutPrefix(env.Bytes(), []byte(Format+"\n"))
	head := make([]byte, 0, sealEnd+len(rest)+1)
	head = append(head, Format+"\n"+sealKey+sealValue(0, 0)+"\n"...)
	head = append(head, rest...)
	head = append(head, '\n')
	sw := &sealWriter{w: f, skip: sealEnd, crc: crc32.New(castagnoli())}
	buf := copyBuffers.Get().(*[]byte)
	err := copyFilled(sw, head, msg, *buf)
	copyBuffers.Put(buf)
	if err != nil {
		return "", copyErr(name, err)
	}
	if _, err := f.WriteAt([]byte(sealValue(sw.n, sw.crc.Sum32())), int64(sealOffset)); err != nil {
		return "", tempErr("write %s", name, err)
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return "", tempErr("fdatasync %s", name, err)
	}
	final := q.path(Incoming, e.ID)
	if err := renameNoReplace(name, final); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			// Our entry is gone: incoming/ was made anew, or emptied by hand.
			q.drain()
		}
		return "", tempErr("rename to %s", final, err)
	}
	committed = true
	f.Close() // and with it the lock, now that the name says what it is
	return e.ID, nil
}

// checkSeal reads a prepared entry from its start and returns its
// envelope's ID if its seal holds: the length and CRC-32C of everything
// after the seal line are what the seal says.
func checkSeal(f *os.File) (string, error) {
	br := bufio.NewReaderSize(f, 64<<10)
	line, err := br.ReadString('\n')
	// A prepared entry sealed by the version before this one (a crash
	// before its rename, then an upgrade) is taken in too.
	if err != nil || formatVersion(strings.TrimSuffix(line, "\n")) == 0 {
		return "", errors.New("no format line")
	}
	line, err = br.ReadString('\n')
	v, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), sealKey)
	if err != nil || !ok || !validSeal(v) {
		return "", errors.New("no seal line")
	}
	var want int64
	var sum uint32
	if _, err := fmt.Sscanf(v, "%016x %08x", &want, &sum); err != nil {
		return "", errors.New("bad seal line")
	}
	h := crc32.New(castagnoli())
	n, err := io.Copy(h, br)
	if err != nil {
		return "", err
	}
	if n != want || h.Sum32() != sum {
		return "", fmt.Errorf("seal does not hold (length %d, seal says %d)", n, want)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	e, _, err := ParseEnvelope(f)
	if err != nil {
		return "", err
	}
	return e.ID, nil
}

// ReclaimPool deals with prepared entries whose process is gone (none
// holds its lock): an empty one is removed, a sealed one is renamed to
// the ID it names (its writer stopped between the flush and the rename,
// or a crash undid the rename), unless that entry is already in the
// queue, and an unsealed one (its writer stopped while writing: never
// acknowledged) is moved to bad/. It returns what it did, for the log.
func (q *Queue) ReclaimPool() []string {
	d := filepath.Join(q.Dir, Incoming)
	dir, err := os.Open(d)
	if err != nil {
		return nil
	}
	names, _ := dir.Readdirnames(-1)
	dir.Close()
	var notes []string
	renamed, unused := false, 0
	for _, n := range names {
		if !strings.HasPrefix(n, PoolPrefix) {
			continue
		}
		note, moved := q.reclaim(n)
		switch {
		case note == removedUnused:
			unused++
		case note != "":
			notes = append(notes, note)
		}
		renamed = renamed || moved
	}
	if unused > 0 {
		notes = append(notes, fmt.Sprintf("removed %d unused prepared entries", unused))
	}
	if renamed {
		if err := syncDir(d); err != nil {
			notes = append(notes, err.Error())
		}
	}
	return notes
}

// removedUnused is reclaim's note for an empty entry removed: counted,
// not logged one by one (a stopped tern-smtpd leaves dozens).
const removedUnused = "removed unused"

func (q *Queue) reclaim(name string) (note string, renamed bool) {
	p := q.path(Incoming, name)
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return q.moveAside(Incoming, name, errors.New("a symbolic link, not a file")).Error(), false
		}
		return "", false
	}
	defer f.Close()
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return "", false // its process is alive and keeps it
	}
	st, err := f.Stat()
	if err != nil {
		return "", false
	}
	if !st.Mode().IsRegular() {
		return q.moveAside(Incoming, name, errors.New("not a plain file")).Error(), false
	}
	if st.Size() == 0 {
		if os.Remove(p) == nil {
			return removedUnused, false
		}
		return "", false
	}
	id, err := checkSeal(f)
	if err != nil {
		return q.moveAside(Incoming, name, fmt.Errorf("unfinished, never acknowledged: %v", err)).Error(), false
	}
	for _, sub := range []string{Env, Mess} {
		if _, err := os.Lstat(q.path(sub, id)); err == nil {
			if os.Remove(p) == nil {
				return "removed " + name + ": entry " + id + " was already taken in", false
			}
			return "", false
		}
	}
	// A rename that a crash cut in two (on a file system without a
	// journal, the new name and the old can both survive): the entry is
	// in incoming/ already, and this is its old name.
	if in, err := os.Lstat(q.path(Incoming, id)); err == nil && os.SameFile(st, in) {
		if os.Remove(p) == nil {
			return "removed " + name + ", a second name of " + id + " (a rename cut short)", false
		}
		return "", false
	}
	// Only now: a crash in tern-queue's Ingest can leave this name and
	// mess/ID on one file, removed above, or the one just above.
	if sys, _ := st.Sys().(*syscall.Stat_t); sys == nil || sys.Nlink != 1 {
		return q.moveAside(Incoming, name, errors.New("not a plain file with one link")).Error(), false
	}
	if err := renameNoReplace(p, q.path(Incoming, id)); err != nil {
		return q.moveAside(Incoming, name, fmt.Errorf("sealed as %s, but renaming it there failed: %v", id, err)).Error(), false
	}
	return "took in " + id + " from " + name + " (its writer stopped before renaming it)", true
}
