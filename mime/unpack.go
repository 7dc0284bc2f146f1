package mime

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tern-mail/tern/internal/sysexit"
)

// UnpackOptions says what Unpack writes where.
type UnpackOptions struct {
	Dir  string // the directory files are written into
	Text bool   // also text parts that are not attachments
	All  bool   // every leaf part
	Out  io.Writer
	Log  *slog.Logger
}

// File is one file Unpack wrote.
type File struct {
	Part string // the part number; "1.uu2" for the second uuencoded block in part 1
	Type string
	Size int64
	Path string // Dir joined with the file's name
}

// maxCollisions bounds the search for a free name.
const maxCollisions = 10000

// Unpack reads a message from r and writes its attachments (with Text also
// its text parts, with All every leaf) into Dir, one line per file on Out:
// part number, type, size and path, separated by single spaces (the path
// last, so that `while read part type size path` keeps spaces in it).
//
// Bad input is unpacked as far as it goes, with a warning naming the part;
// the error has status 65 only when nothing usable was found at all.
// Dir is made when missing. Files are created through an os.Root on Dir with O_EXCL, so that neither a
// name nor a symbolic link planted in Dir can lead a write outside it or
// over an existing file.
func Unpack(r io.Reader, o UnpackOptions) ([]File, error) {
	if o.Dir == "" {
		o.Dir = "."
	}
	// A missing directory is made, as mkdir -p would (the umask decides
	// its mode): `unpack -C DIR` sits at the head of a pipeline, where
	// its failure goes unseen by a shell without pipefail.
	if err := os.MkdirAll(o.Dir, 0o777); err != nil {
		return nil, sysexit.New(sysexit.CantCreate, "make output directory %s: %w", o.Dir, err)
	}
	root, err := os.OpenRoot(o.Dir)
	if err != nil {
		return nil, sysexit.New(sysexit.CantCreate, "open output directory %s: %w", o.Dir, err)
	}
	defer root.Close()
	u := &unpacker{o: o, root: root, warnf: warner(o.Log)}
	w := &walker{leaf: u.leaf, warn: u.warnf}
	if err := w.walk(r); err != nil {
		return u.files, u.classify(err)
	}
	if len(u.files) == 0 && w.content == 0 {
		return nil, sysexit.New(sysexit.DataErr, "nothing usable in the message: no part with content")
	}
	return u.files, nil
}

type unpacker struct {
	o     UnpackOptions
	root  *os.Root
	files []File
	warnf func(part, msg string, args ...any)
	// writers are the file buffers not in use.
	writers []*bufio.Writer
}

// classify gives an error its exit status: failing to create a file is 73,
// anything else on the way (reading stdin, writing a file) is 74.
func (u *unpacker) classify(err error) error {
	var se *sysexit.Error
	if errors.As(err, &se) {
		return err
	}
	return sysexit.Wrap(sysexit.IOErr, err)
}

func (u *unpacker) leaf(p *Part, body io.Reader) error {
	want := u.o.All || p.Attachment() || (u.o.Text && p.Text())
	// Uuencoded blocks (the way of mail before MIME) are looked for in
	// plain text that is not itself an attachment.
	if p.Type == "text/plain" && !p.Attachment() {
		return u.textWithUU(p, body, want)
	}
	if !want {
		return nil
	}
	name := SafeName(p.Filename)
	if name == "" {
		name = nameFor(p)
	}
	_, err := u.write(p.Number, p.Type, name, body)
	return err
}

// textWithUU copies a text part, taking out each "begin MODE NAME" ...
// "end" block into a file of its own; the rest is the text part.
func (u *unpacker) textWithUU(p *Part, body io.Reader, want bool) error {
	br := bufio.NewReaderSize(body, 4096)
	var text *sink
	var textBuf bytes.Buffer // text before the file is made, to make none for an empty part
	n := 0
	lineStart := true
	for {
		line, err := br.ReadSlice('\n')
		long := err == bufio.ErrBufferFull
		if err != nil && err != io.EOF && !long {
			return fmt.Errorf("read part %s: %w", p.Number, err)
		}
		if lineStart && bytes.HasPrefix(line, []byte("begin ")) {
			if mode, name, ok := uuBegin(line); ok {
				n++
				if err := u.uuBlock(p, n, mode, name, br); err != nil {
					return err
				}
				lineStart = true
				continue
			}
		}
		lineStart = !long
		if want && len(line) > 0 {
			if text == nil {
				textBuf.Write(line)
				if textBuf.Len() >= 4096 || err == io.EOF {
					var ferr error
					if text, ferr = u.create(p.Number, p.Type, name4(p)); ferr != nil {
						return ferr
					}
					if werr := text.write(textBuf.Bytes()); werr != nil {
						return werr
					}
				}
			} else if werr := text.write(line); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			break
		}
	}
	if text == nil && textBuf.Len() > 0 {
		var ferr error
		if text, ferr = u.create(p.Number, p.Type, name4(p)); ferr != nil {
			return ferr
		}
		if werr := text.write(textBuf.Bytes()); werr != nil {
			return werr
		}
	}
	if text != nil {
		return u.finish(text)
	}
	return nil
}

func name4(p *Part) string {
	if n := SafeName(p.Filename); n != "" {
		return n
	}
	return nameFor(p)
}

// uuBegin parses "begin 644 name" (POSIX uuencode); the mode is three or
// four octal digits.
func uuBegin(line []byte) (mode, name string, ok bool) {
	s := strings.TrimRight(string(line), "\r\n")
	f := strings.SplitN(s, " ", 3)
	if len(f) != 3 || len(f[1]) < 3 || len(f[1]) > 4 {
		return "", "", false
	}
	if _, err := strconv.ParseUint(f[1], 8, 32); err != nil {
		return "", "", false
	}
	return f[1], strings.TrimSpace(f[2]), f[2] != ""
}

func (u *unpacker) uuBlock(p *Part, n int, mode, name string, br *bufio.Reader) error {
	num := p.Number + ".uu" + strconv.Itoa(n)
	safe := SafeName(name)
	if safe == "" {
		safe = "part-" + num + ".bin"
	}
	f, err := u.create(num, "application/octet-stream", safe)
	if err != nil {
		return err
	}
	var buf []byte
	ended, bad := false, 0
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			bad++
			for err == bufio.ErrBufferFull {
				_, err = br.ReadSlice('\n')
			}
			continue
		}
		t := bytes.TrimRight(line, "\r\n")
		if string(bytes.TrimSpace(t)) == "end" {
			ended = true
			break
		}
		var b bool
		buf, b = uuDecodeLine(buf[:0], t)
		if b {
			bad++
		}
		if len(buf) > 0 {
			if werr := f.write(buf); werr != nil {
				return werr
			}
		}
		if err != nil {
			break
		}
	}
	if !ended {
		u.warnf(num, "uuencoded block without its end line", "file", name)
	}
	if bad > 0 {
		u.warnf(num, "malformed uuencoded lines", "lines", bad)
	}
	_ = mode // the mode is not applied: files are made 0644 whatever it says
	return u.finish(f)
}

// write makes a file for a part and copies the body into it.
func (u *unpacker) write(num, typ, name string, body io.Reader) (File, error) {
	f, err := u.create(num, typ, name)
	if err != nil {
		return File{}, err
	}
	// bufio's ReadFrom fills the whole buffer before each write(2); the
	// decoders hand out a few KiB a read.
	n, err := f.w.ReadFrom(body)
	f.file.Size = n
	if err != nil {
		f.close()
		return f.file, fmt.Errorf("write %s: %w", f.file.Path, err)
	}
	return f.file, u.finish(f)
}

// sink is a file being written: buffered, so that a uuencoded line or a
// line of text is not a write(2) of its own. No fsync: unpacked files are
// a copy of what the message still holds, as with munpack and ripmime.
type sink struct {
	f    *os.File
	w    *bufio.Writer
	file File
}

// fileWriter hides *os.File's ReadFrom from bufio.Writer, which would
// otherwise hand the whole copy to it and write each small read as it comes.
type fileWriter struct{ f *os.File }

func (w fileWriter) Write(p []byte) (int, error) { return w.f.Write(p) }

func (s *sink) write(p []byte) error {
	if _, err := s.w.Write(p); err != nil {
		s.close()
		return fmt.Errorf("write %s: %w", s.file.Path, err)
	}
	s.file.Size += int64(len(p))
	return nil
}

func (s *sink) close() error {
	err := s.w.Flush()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// create makes a new file under a name not yet used: name, name-1.ext,
// name-2.ext, ...
func (u *unpacker) create(num, typ, name string) (*sink, error) {
	ext := filepath.Ext(name)
	if len(ext) > 16 || ext == name {
		ext = ""
	}
	stem := strings.TrimSuffix(name, ext)
	for i := 0; i < maxCollisions; i++ {
		cand := name
		if i > 0 {
			cand = stem + "-" + strconv.Itoa(i) + ext
		}
		f, err := u.root.OpenFile(cand, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return nil, sysexit.New(sysexit.CantCreate, "create %s: %w", filepath.Join(u.o.Dir, cand), err)
		}
		// A text part and a uuencoded file in it are open at once, so the
		// buffers come from a short free list rather than being one.
		var w *bufio.Writer
		if k := len(u.writers); k > 0 {
			w, u.writers = u.writers[k-1], u.writers[:k-1]
			w.Reset(fileWriter{f})
		} else {
			w = bufio.NewWriterSize(fileWriter{f}, 64<<10)
		}
		return &sink{f: f, w: w, file: File{Part: num, Type: typ, Path: filepath.Join(u.o.Dir, cand)}}, nil
	}
	return nil, sysexit.New(sysexit.CantCreate, "create %s: no free name after %d tries", filepath.Join(u.o.Dir, name), maxCollisions)
}

func (u *unpacker) finish(s *sink) error {
	if err := s.close(); err != nil {
		return fmt.Errorf("write %s: %w", s.file.Path, err)
	}
	u.writers = append(u.writers, s.w)
	file := s.file
	u.files = append(u.files, file)
	if u.o.Out != nil {
		if _, err := fmt.Fprintf(u.o.Out, "%s %s %d %s\n", file.Part, file.Type, file.Size, file.Path); err != nil {
			return fmt.Errorf("write the listing: %w", err)
		}
	}
	return nil
}
