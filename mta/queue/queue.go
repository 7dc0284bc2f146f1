// Package queue is tern's queue directory: the on-disk format of
// tern-queue(5) and every step that changes it, each one crash-safe
// (temporary file, fsync, rename, fsync of the directory; or, for a
// process that queues many messages, one flush into an entry whose name
// was made durable beforehand: pool.go).
//
// The permission model is Postfix's maildrop rather than qmail's setuid
// qmail-queue: incoming/ is world-writable and sticky (mode 1733, no read),
// so any local user can drop a submission there without a setuid program,
// cannot list or read anyone else's, and cannot remove them. tern-queue,
// the only reader, checks each file (a plain file with one link, opened
// without following symbolic links), records its owner as the submitter,
// and moves it into mess/ and env/, which only the queue's owner can enter.
// A setuid injector would be one more program running with privileges on
// user input; a dropbox needs none.
package queue

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tern-mail/tern/internal/fsync"
	"github.com/tern-mail/tern/internal/groupsync"
	"github.com/tern-mail/tern/internal/sysexit"
	"golang.org/x/sys/unix"
)

// DefaultDir is the queue when neither --queue nor TERN_QUEUE names one.
const DefaultDir = "/var/spool/tern"

// Subdirectories of the queue and their modes.
const (
	Incoming = "incoming" // submissions: world-writable dropbox
	Mess     = "mess"     // message files, as submitted (envelope, empty line, message)
	Env      = "env"      // live envelopes
	Bad      = "bad"      // damaged entries, moved aside
)

// FlushName, created in incoming/, asks a running tern-queue to retry
// every deferred recipient now (tern-queue --flush, sendmail -q). It starts
// with a dot, so it is never taken for a submission.
const FlushName = ".flush"

// StaleTemp is how old an unfinished temporary file must be before
// tern-queue removes it: a submission cannot take that long.
const StaleTemp = 36 * time.Hour

// Queue is an open queue directory.
type Queue struct {
	Dir string

	mu       sync.Mutex
	lastNS   int64           // the time in the last ID this Queue gave out
	incoming groupsync.Group // fsyncs of incoming/ after Inject's renames and the pool's batches
	env      groupsync.Group // fsyncs of env/ after tern-queue's concurrent attempts
	// inDir is incoming/ opened for reading when Open could: fsync(2)
	// needs a descriptor, and a process that later drops privileges
	// (tern-smtpd --user) keeps the one it opened before.
	inDir *os.File
	pool  *pool // prepared entries (KeepReady), or nil
}

// NewID returns a queue ID for a message arriving at t that no earlier call
// on this Queue returned, even for the same nanosecond (tern-queue makes
// several reports in one pass, from several goroutines).
func (q *Queue) NewID(t time.Time) string {
	q.mu.Lock()
	defer q.mu.Unlock()
	ns := t.UnixNano()
	if ns <= q.lastNS {
		ns = q.lastNS + 1
	}
	q.lastNS = ns
	return NewID(time.Unix(0, ns), os.Getpid())
}

// Open opens the queue at dir, making its subdirectories when they are
// missing and the caller may (tern-queue always can; a user's tern-enqueue
// finds them made).
func Open(dir string) (*Queue, error) {
	if dir == "" {
		dir = DefaultDir
	}
	q := &Queue{Dir: dir}
	if _, err := os.Stat(dir); err != nil {
		return nil, sysexit.Wrap(sysexit.TempFail, fmt.Errorf("open queue %s: %w", dir, err))
	}
	for _, d := range []struct {
		name string
		mode fs.FileMode
	}{{Incoming, 0o733 | os.ModeSticky}, {Mess, 0o700}, {Env, 0o700}, {Bad, 0o700}} {
		p := filepath.Join(dir, d.name)
		if _, err := os.Lstat(p); err == nil {
			continue
		}
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			if d.name == Incoming {
				return nil, sysexit.Wrap(sysexit.TempFail, fmt.Errorf("make queue directory %s: %w", p, err))
			}
			continue // a submitter may not make these; tern-queue will
		}
		// Mkdir's mode goes through the umask, and the sticky bit must be set
		// explicitly anyway.
		if err := os.Chmod(p, d.mode); err != nil {
			return nil, sysexit.Wrap(sysexit.TempFail, fmt.Errorf("set mode of %s: %w", p, err))
		}
	}
	// Without read permission (a user's sendmail, tern-smtpd started as
	// an unprivileged user) syncDir flushes the file system each time.
	q.inDir, _ = os.Open(filepath.Join(dir, Incoming))
	return q, nil
}

func (q *Queue) path(sub, name string) string { return filepath.Join(q.Dir, sub, name) }

// MessagePath is the file holding the message of entry id.
func (q *Queue) MessagePath(id string) string { return q.path(Mess, id) }

// EnvelopePath is the file holding the live envelope of entry id.
func (q *Queue) EnvelopePath(id string) string { return q.path(Env, id) }

// NewID returns a queue ID for a message arriving at t: sixteen hex digits
// of nanoseconds since 1970 and five of the process ID, so that IDs sort by
// arrival and two processes never collide on the same nanosecond.
func NewID(t time.Time, pid int) string {
	return fmt.Sprintf("%016x%05x", t.UnixNano(), pid&0xfffff)
}

// ValidID reports whether s has the shape of a queue ID; names in the queue
// directories that do not are never taken for entries.
func ValidID(s string) bool { return len(s) == 21 && validHex(s) }

// IDTime is the arrival time written in an ID.
func IDTime(id string) time.Time {
	var n int64
	if _, err := fmt.Sscanf(id[:16], "%016x", &n); err != nil {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Inject writes one submission into incoming/: the envelope, an empty line,
// and the message copied from msg. It returns the queue ID only once the
// message is on disk under a name that is too: the file and then the
// directory flushed after the rename, or, with KeepReady, one fdatasync of
// a prepared entry whose name was (see pool.go). From then on the message
// is the queue's. e.Arrived is set here, and e.ID when empty.
//
// Every failure is temporary (75): a full disk, a missing queue or a
// permission problem is for the administrator to fix, and the sender should
// keep the message until then.
//
// Whether the message has an octet over 127 (e.EightBit) is found while it
// is copied, and written into the envelope's text line before the flush;
// a caller that has read the message already says so with InjectScanned.
func (q *Queue) Inject(e *Envelope, msg io.Reader, now time.Time) (string, error) {
	return q.inject(e, msg, now, false)
}

// InjectScanned is Inject for a message whose every octet the caller has
// looked at already (tern-smtpd's checker): e.EightBit says whether one is
// over 127, and the message is copied without looking again.
func (q *Queue) InjectScanned(e *Envelope, msg io.Reader, now time.Time) (string, error) {
	return q.inject(e, msg, now, true)
}

func (q *Queue) inject(e *Envelope, msg io.Reader, now time.Time, scanned bool) (string, error) {
	e.Arrived = now
	if e.ID == "" {
		e.ID = q.NewID(now)
	}
	// A prepared entry's seal covers the text line, which must therefore
	// be right when it is written: only a scanned message goes there.
	if scanned {
		if pe, ok := q.take(); ok {
			return q.injectPrepared(pe, e, msg)
		}
	}
	var scan *eightBitScanner
	if !scanned && !e.EightBit {
		scan = &eightBitScanner{r: msg}
		msg = scan
	}
	tmp, err := q.create(Incoming)
	if err != nil {
		return "", err
	}
	tmpName := tmp.Name()
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	var head bytes.Buffer
	if err := e.Marshal(&head); err != nil {
		return "", err
	}
	head.WriteByte('\n')
	buf := copyBuffers.Get().(*[]byte)
	err = copyFilled(tmp, head.Bytes(), msg, *buf)
	copyBuffers.Put(buf)
	if err != nil {
		return "", copyErr(tmpName, err)
	}
	if scan != nil && scan.found {
		e.EightBit = true
		if _, err := tmp.WriteAt([]byte(textLine8), int64(textOffset)); err != nil {
			return "", tempErr("write %s", tmpName, err)
		}
	}
	if err := tmp.Sync(); err != nil {
		return "", tempErr("fsync %s", tmpName, err)
	}
	if err := tmp.Close(); err != nil {
		return "", tempErr("close %s", tmpName, err)
	}
	// The ID was chosen before the content was written, so the name of the
	// envelope inside matches the file's; the rename refuses to replace an
	// existing name, and a collision (same nanosecond, same pid: a reused
	// pid after a clock step) would need a new ID written into the file, so
	// it is reported as temporary instead: the caller tries again.
	final := q.path(Incoming, e.ID)
	if err := renameNoReplace(tmpName, final); err != nil {
		return "", tempErr("rename to %s", final, err)
	}
	committed = true
	if err := q.incoming.Do(q.syncIncoming); err != nil {
		return "", err
	}
	return e.ID, nil
}

// copyFilled writes head and then everything r gives to w, passing buf
// to w only when full (or at the end). Readers of an SMTP DATA stream
// give one line a call; written as they come, a 4 KB message cost 64
// write(2)s, now one.
func copyFilled(w io.Writer, head []byte, r io.Reader, buf []byte) error {
	n := 0
	for len(head) > 0 {
		c := copy(buf[n:], head)
		head, n = head[c:], n+c
		if n == len(buf) {
			if _, err := w.Write(buf); err != nil {
				return err
			}
			n = 0
		}
	}
	for {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil && err != io.EOF {
			return err
		}
		if n == len(buf) || err == io.EOF && n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			n = 0
		}
		if err == io.EOF {
			return nil
		}
	}
}

// eightBitScanner passes a message through and notes whether it has an
// octet over 127 (RFC 6152's 8-bit data), eight at a time.
type eightBitScanner struct {
	r     io.Reader
	found bool
}

func (s *eightBitScanner) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if !s.found {
		s.found = has8Bit(p[:n])
	}
	return n, err
}

// has8Bit reports whether p has an octet over 127.
func has8Bit(p []byte) bool {
	const high = 0x8080808080808080
	for len(p) >= 32 {
		e := binary.NativeEndian
		if (e.Uint64(p)|e.Uint64(p[8:])|e.Uint64(p[16:])|e.Uint64(p[24:]))&high != 0 {
			return true
		}
		p = p[32:]
	}
	for len(p) >= 8 {
		if binary.NativeEndian.Uint64(p)&high != 0 {
			return true
		}
		p = p[8:]
	}
	for _, c := range p {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

// copyErr is the error of a failed copy into the queue: the reader's own
// verdict (too large, bad data), or a temporary failure to write.
func copyErr(name string, err error) error {
	var se *sysexit.Error
	if errors.As(err, &se) {
		return err
	}
	return tempErr("write %s", name, err)
}

// copyBuffers hold a message on its way into the queue.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// create makes a temporary file in sub, readable only by its owner.
func (q *Queue) create(sub string) (*os.File, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, tempErr("random name in %s", sub, err)
	}
	p := q.path(sub, ".tmp-"+hex.EncodeToString(b[:]))
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, tempErr("create %s", p, err)
	}
	return f, nil
}

func tempErr(what, path string, err error) error {
	return sysexit.Wrap(sysexit.TempFail, fmt.Errorf(what+": %w", path, unwrapPath(err)))
}

// unwrapPath drops the *PathError wrapping whose path the message already
// names.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

// syncIncoming makes the entries renamed into incoming/ durable.
// It runs under q.incoming, one call at a time.
func (q *Queue) syncIncoming() error {
	dir := filepath.Join(q.Dir, Incoming)
	if q.inDir != nil {
		// The descriptor must still be the directory the renames went
		// to: an administrator may have made the queue anew.
		now, err1 := os.Stat(dir)
		held, err2 := q.inDir.Stat()
		if err1 != nil || err2 != nil || !os.SameFile(now, held) {
			q.inDir.Close()
			q.inDir, _ = os.Open(dir)
			q.drain() // prepared in the old one
		}
	}
	if q.inDir == nil {
		return syncDir(dir)
	}
	if err := q.inDir.Sync(); err != nil {
		return tempErr("fsync directory %s", q.inDir.Name(), err)
	}
	return nil
}

// syncEnv makes the changes to env/ made so far durable; the attempts
// tern-queue runs at once share the flush (see groupsync.Group).
func (q *Queue) syncEnv() error {
	return q.env.Do(func() error { return syncDir(filepath.Join(q.Dir, Env)) })
}

// syncDir is fsync.Dir with its failure temporary: the entry stays and
// is retried (fsync.Dir falls back to syncfs(2) for a directory a user may
// write but not read, as incoming/ is to submitters).
func syncDir(dir string) error {
	if err := fsync.Dir(dir); err != nil {
		return sysexit.Wrap(sysexit.TempFail, err)
	}
	return nil
}

// list returns the entry IDs in sub, sorted (so, by arrival).
func (q *Queue) list(sub string) ([]string, error) {
	d := filepath.Join(q.Dir, sub)
	f, err := os.Open(d)
	if err != nil {
		return nil, tempErr("open %s", d, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, tempErr("list %s", d, err)
	}
	ids := names[:0]
	for _, n := range names {
		if ValidID(n) {
			ids = append(ids, n)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// Incoming returns the IDs of submissions not yet taken in.
func (q *Queue) Incoming() ([]string, error) { return q.list(Incoming) }

// IDs returns the IDs of the entries in the queue proper.
func (q *Queue) IDs() ([]string, error) { return q.list(Env) }

// ErrBusy is a submission still being written: the next scan takes it.
var ErrBusy = errors.New("submission not complete yet")

// renameNoReplace renames without replacing an existing name: renameat2
// with RENAME_NOREPLACE, or, on a file system without it, link and unlink
// (which leaves two links for a moment).
func renameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if err == unix.EINVAL || err == unix.ENOSYS {
		if err = os.Link(from, to); err == nil {
			os.Remove(from)
		}
	}
	return err
}

// Ingest takes a submission from incoming/ into the queue: it checks the
// file, writes env/ID, then renames the file to mess/ID. A crash between
// the two steps leaves env/ID and incoming/ID, which Recover (or the next
// Ingest) completes. A damaged submission is moved to bad/ and the error
// says why; ErrNotExist means another pass took it.
func (q *Queue) Ingest(id string) (*Envelope, error) {
	r := q.IngestAll([]string{id})[0]
	return r.Envelope, r.Err
}

// Ingested is what IngestAll did with one submission: its envelope, or
// the error Ingest would have returned.
type Ingested struct {
	ID       string
	Envelope *Envelope
	Err      error
}

// IngestAll is Ingest for many submissions at once, with the same steps
// and the same crash safety, but one flush of each directory for all of
// them: every envelope is written and env/ flushed before the first
// submission is renamed to mess/, then mess/ and incoming/ are flushed
// once. Only each envelope's own file is flushed one by one. A backlog
// (a flood, or tern-queue started after a while) is taken in at several
// times the rate of one Ingest after another.
func (q *Queue) IngestAll(ids []string) []Ingested {
	out := make([]Ingested, len(ids))
	// Each submission is checked and its envelope written and fsynced
	// (atOnce: the fsyncs one after another were the most of tern-queue's
	// CPU samples when it took a backlog in); env/ is flushed once below.
	const (
		failed = iota
		toFinish
		toWrite
	)
	step := make([]int, len(ids))
	atOnce(len(ids), func(i int) {
		id := ids[i]
		out[i].ID = id
		if e, err := q.Load(id); err == nil {
			// A crash between the two steps: finish the move, if this
			// is that submission, not a file someone else put under
			// the ID of a queued entry to replace its message.
			if err := q.sameSubmission(e); err != nil {
				out[i].Err = err
				return
			}
			out[i].Envelope = e
			step[i] = toFinish
			return
		}
		e, err := q.check(id)
		if err == nil {
			err = q.writeEnvelope(e)
		}
		out[i].Envelope, out[i].Err = e, err
		if err == nil {
			step[i] = toWrite
		}
	})
	var written, finish []int
	for i, s := range step {
		switch s {
		case toFinish:
			finish = append(finish, i)
		case toWrite:
			written = append(written, i)
		}
	}
	if len(written) > 0 {
		if err := q.syncEnv(); err != nil {
			// The envelopes may not be on disk: leave the submissions
			// where they are; the next pass finishes them.
			for _, i := range written {
				out[i].Envelope, out[i].Err = nil, err
			}
			written = nil
		}
	}
	finish = append(finish, written...)
	var moved []int
	for _, i := range finish {
		id := ids[i]
		in, mess := q.path(Incoming, id), q.path(Mess, id)
		if err := os.Rename(in, mess); err != nil {
			if _, serr := os.Stat(mess); errors.Is(err, fs.ErrNotExist) && serr == nil {
				continue // moved already
			}
			out[i].Envelope, out[i].Err = nil, tempErr("move %s", in, err)
			continue
		}
		moved = append(moved, i)
	}
	if len(moved) > 0 {
		err := syncDir(filepath.Join(q.Dir, Mess))
		if err == nil {
			err = syncDir(filepath.Join(q.Dir, Incoming))
		}
		if err != nil {
			for _, i := range moved {
				out[i].Envelope, out[i].Err = nil, err
			}
		}
	}
	return out
}

// sameSubmission checks that incoming/ID is the submission whose
// envelope e was written from: its message not moved yet, the file owned
// by the submitter e names. Anything else is moved to bad/.
func (q *Queue) sameSubmission(e *Envelope) error {
	in := q.path(Incoming, e.ID)
	st, err := os.Lstat(in)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(q.MessagePath(e.ID)); err == nil {
		return q.moveAside(Incoming, e.ID, errors.New("an entry with this ID is queued already"))
	}
	sys, _ := st.Sys().(*syscall.Stat_t)
	if !st.Mode().IsRegular() || sys == nil || int(sys.Uid) != e.UID {
		return q.moveAside(Incoming, e.ID, fmt.Errorf("not the submission of queued entry %s (owner or type differ)", e.ID))
	}
	return nil
}

// check reads and checks submission incoming/id and returns its envelope
// as the queue will keep it; a damaged one is moved to bad/.
func (q *Queue) check(id string) (*Envelope, error) {
	in := q.path(Incoming, id)
	f, err := os.OpenFile(in, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		if errors.Is(err, syscall.ELOOP) {
			return nil, q.moveAside(Incoming, id, errors.New("a symbolic link, not a file"))
		}
		return nil, tempErr("open %s", in, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, tempErr("stat %s", in, err)
	}
	sys, _ := st.Sys().(*syscall.Stat_t)
	if !st.Mode().IsRegular() || sys == nil || sys.Nlink != 1 {
		// A hard link to someone else's file would hand its contents to the
		// queue under the linker's name. A second link for a moment is a
		// submission being committed where rename cannot refuse to replace
		// (renameNoReplace's fallback): wait for it.
		if st.Mode().IsRegular() && time.Since(st.ModTime()) < time.Minute {
			return nil, ErrBusy
		}
		return nil, q.moveAside(Incoming, id, errors.New("not a plain file with one link"))
	}
	e, used, err := ParseEnvelope(f)
	if err != nil {
		return nil, q.moveAside(Incoming, id, err)
	}
	if e.ID != id {
		return nil, q.moveAside(Incoming, id, fmt.Errorf("envelope names id %s", e.ID))
	}
	for _, r := range e.Recipients {
		if r.State != Queued || strings.HasPrefix(r.Addr, "|") || strings.HasPrefix(r.Addr, "/") {
			return nil, q.moveAside(Incoming, id, fmt.Errorf("recipient %s is not a new address", r.Addr))
		}
	}
	// The submitter is whoever owns the file, whatever the envelope claims.
	e.UID = int(sys.Uid)
	if e.UID != os.Geteuid() {
		// Only tern-queue's own reports may say they are bounces: a user
		// who could would get a failure dropped instead of returned.
		e.Kind = Normal
	}
	e.Offset = used
	e.Size = st.Size() - used
	e.Hold, e.Warned = false, time.Time{}
	return e, nil
}

// Load reads the live envelope of entry id.
func (q *Queue) Load(id string) (*Envelope, error) {
	p := q.path(Env, id)
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	e, _, err := ParseEnvelope(f)
	if err != nil {
		return nil, &DamagedError{ID: id, Err: fmt.Errorf("%s: %w", p, err)}
	}
	if e.ID != id {
		return nil, &DamagedError{ID: id, Err: fmt.Errorf("%s: names id %s", p, e.ID)}
	}
	return e, nil
}

// LoadAll is Load for many entries, read by several readers at once: a
// large queue's envelopes are read faster than one after another, on a
// disk that takes several requests at a time and on several cores.
func (q *Queue) LoadAll(ids []string) ([]*Envelope, []error) {
	es, errs := make([]*Envelope, len(ids)), make([]error, len(ids))
	atOnce(len(ids), func(i int) { es[i], errs[i] = q.Load(ids[i]) })
	return es, errs
}

// atOnce runs do(0) ... do(n-1) on a few goroutines and waits for them.
// Its callers wait for the disk (a read, an fsync) more than they compute,
// and fsyncs of different files at once share the file system's journal
// commits.
func atOnce(n int, do func(i int)) {
	workers := min(n, 8)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				do(i)
			}
		}()
	}
	wg.Wait()
}

// DamagedError is an envelope that cannot be read; the entry should be
// moved aside with MoveAside.
type DamagedError struct {
	ID  string
	Err error
}

func (e *DamagedError) Error() string { return "damaged queue entry " + e.ID + ": " + e.Err.Error() }
func (e *DamagedError) Unwrap() error { return e.Err }

// Save replaces the live envelope of e.ID: temporary file, fsync, rename,
// fsync of env/.
//
// Delivering, and so removing, what is queued must never wait for new
// space: a full queue file system would otherwise stop everything (issue
// 20: 64 failed envelope writes, nothing delivered, nothing freed). So a
// Save that finds no space gives up the queue's ballast, space set aside
// for this, and tries once more; the ballast is laid again by a later
// Save when there is room.
func (q *Queue) Save(e *Envelope) error {
	err := q.writeEnvelope(e)
	if err != nil && errors.Is(err, syscall.ENOSPC) && q.dropBallast() {
		err = q.writeEnvelope(e)
	}
	if err != nil {
		return err
	}
	q.layBallast()
	return q.syncEnv()
}

// writeEnvelope is Save but for the flush of env/.
func (q *Queue) writeEnvelope(e *Envelope) error {
	tmp, err := q.create(Env)
	if err != nil {
		return err
	}
	name := tmp.Name()
	err = e.Marshal(tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(name, q.path(Env, e.ID))
	}
	if err != nil {
		os.Remove(name)
		return tempErr("write envelope %s", q.path(Env, e.ID), err)
	}
	return nil
}

// Message opens the message of entry id, positioned at its first byte.
func (q *Queue) Message(e *Envelope) (*os.File, error) {
	f, err := os.Open(q.path(Mess, e.ID))
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(e.Offset, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Lock takes the lock of entry id (flock on mess/ID, whose inode never
// changes while the entry lives), waiting for it; the lock goes with the
// process, so a killed tern-queue leaves none behind. Every change of a
// live envelope happens under it: tern-queue's delivery attempts and the
// --delete, --hold and --release commands.
func (q *Queue) Lock(id string) (unlock func(), err error) {
	f, err := os.Open(q.path(Mess, id))
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, tempErr("lock %s", f.Name(), err)
	}
	return func() { f.Close() }, nil
}

// Remove deletes a finished entry: the envelope first, so that a crash
// between the two leaves a message without envelope, which Recover knows to
// be finished. Nothing is flushed, as Postfix flushes nothing when it
// removes a queue file: a crash that undoes the removal brings back an
// entry whose recipients are all delivered already, and they get the
// message again (delivery is at least once; a duplicate, never a loss).
// The flush was one directory fsync for every message delivered.
func (q *Queue) Remove(id string) error { return q.remove(id, false) }

// remove is Remove, flushing env/ between the two steps when durable: a
// deletion an administrator asked for must not come back.
func (q *Queue) remove(id string, durable bool) error {
	if err := os.Remove(q.path(Env, id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return tempErr("remove %s", q.path(Env, id), err)
	}
	if durable {
		if err := q.syncEnv(); err != nil {
			return err
		}
	}
	if err := os.Remove(q.path(Mess, id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return tempErr("remove %s", q.path(Mess, id), err)
	}
	return nil
}

// MoveAside moves a damaged entry to bad/ (never deletes it) and returns an
// error saying why, for the log.
func (q *Queue) MoveAside(id string, why error) error {
	err := q.moveAside(Env, id, why)
	if merr := os.Rename(q.path(Mess, id), q.path(Bad, id+".mess")); merr != nil && !errors.Is(merr, fs.ErrNotExist) {
		return fmt.Errorf("%w; and moving its message aside: %v", err, merr)
	}
	return err
}

func (q *Queue) moveAside(sub, id string, why error) error {
	dst := q.path(Bad, id+"."+sub)
	if err := os.Rename(q.path(sub, id), dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("damaged entry %s (%v), and moving it to %s failed: %w", id, why, dst, err)
	}
	_ = syncDir(filepath.Join(q.Dir, Bad))
	return &DamagedError{ID: id, Err: fmt.Errorf("%v; moved to %s", why, dst)}
}

// Recover puts the queue in order after a crash and returns what it did,
// one line each, for the log: a message without envelope or submission is
// a finished entry whose removal was interrupted; an envelope without
// message or submission is damaged; old temporary files are removed.
func (q *Queue) Recover(now time.Time) ([]string, error) {
	var notes []string
	mess, err := q.list(Mess)
	if err != nil {
		return nil, err
	}
	envs, err := q.list(Env)
	if err != nil {
		return nil, err
	}
	isEnv := map[string]bool{}
	for _, id := range envs {
		isEnv[id] = true
	}
	isMess := map[string]bool{}
	for _, id := range mess {
		isMess[id] = true
		if !isEnv[id] {
			if err := os.Remove(q.path(Mess, id)); err == nil {
				notes = append(notes, "removed the message of finished entry "+id)
			}
		}
	}
	for _, id := range envs {
		if isMess[id] {
			continue
		}
		if _, err := os.Lstat(q.path(Incoming, id)); err == nil {
			continue // Ingest finishes it
		}
		notes = append(notes, q.MoveAside(id, errors.New("envelope without message")).Error())
	}
	notes = append(notes, q.ReclaimPool()...)
	for _, sub := range []string{Incoming, Env} {
		d := filepath.Join(q.Dir, sub)
		ents, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, de := range ents {
			if !strings.HasPrefix(de.Name(), ".tmp-") {
				continue
			}
			info, err := de.Info()
			if err == nil && sub == Incoming && q.secondName(de.Name(), info) {
				notes = append(notes, "removed "+filepath.Join(sub, de.Name())+", a second name of a submission (a rename cut short)")
				continue
			}
			// In env/ only tern-queue writes, and only one runs: any temporary
			// file there is from a crash.
			if err == nil && (sub == Env || now.Sub(info.ModTime()) > StaleTemp) {
				if os.Remove(filepath.Join(d, de.Name())) == nil {
					notes = append(notes, "removed stale temporary file "+filepath.Join(sub, de.Name()))
				}
			}
		}
	}
	return notes, nil
}

// secondName removes incoming/name if it is a temporary file that is also
// the submission its envelope names: on a file system without a journal,
// a crash during the rename can leave both names, and the submission
// would then be refused for its second link.
func (q *Queue) secondName(name string, info fs.FileInfo) bool {
	sys, _ := info.Sys().(*syscall.Stat_t)
	if sys == nil || sys.Nlink != 2 || !info.Mode().IsRegular() {
		return false
	}
	p := q.path(Incoming, name)
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	e, _, err := ParseEnvelope(f)
	f.Close()
	if err != nil {
		return false
	}
	sub, err := os.Lstat(q.path(Incoming, e.ID))
	return err == nil && os.SameFile(info, sub) && os.Remove(p) == nil
}

// RequestFlush asks the running tern-queue to retry everything now.
func (q *Queue) RequestFlush() error {
	p := q.path(Incoming, FlushName)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			// Someone else's request is already there: it does the same.
			if _, serr := os.Lstat(p); serr == nil {
				return nil
			}
		}
		return tempErr("create %s", p, err)
	}
	return f.Close()
}

// TakeFlush reports whether a flush was requested, and clears the request.
func (q *Queue) TakeFlush() bool {
	return os.Remove(q.path(Incoming, FlushName)) == nil
}

// LockRunner takes the queue's runner lock (flock on the file "lock"):
// one tern-queue at a time. wait says whether to wait for it.
func (q *Queue) LockRunner(wait bool) (*os.File, error) {
	p := filepath.Join(q.Dir, "lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, tempErr("open %s", p, err)
	}
	how := syscall.LOCK_EX
	if !wait {
		how |= syscall.LOCK_NB
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, sysexit.New(sysexit.TempFail, "another tern-queue is running on %s (it holds %s)", q.Dir, p)
		}
		return nil, tempErr("lock %s", p, err)
	}
	return f, nil
}
