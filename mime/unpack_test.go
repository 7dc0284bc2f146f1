package mime

import (
	"bytes"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tern-mail/tern/internal/logging"
	"github.com/tern-mail/tern/internal/sysexit"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// TestUnpackCorpus unpacks every message under testdata/unpack with --all
// and compares the listing, the files' hashes, the warnings, the exit
// status and the structure Tree prints with the .golden file beside it.
func TestUnpackCorpus(t *testing.T) {
	msgs, err := filepath.Glob("testdata/unpack/*.eml")
	if err != nil || len(msgs) == 0 {
		t.Fatalf("no corpus: %v", err)
	}
	for _, m := range msgs {
		t.Run(filepath.Base(m), func(t *testing.T) {
			got := unpackReport(t, m)
			golden := strings.TrimSuffix(m, ".eml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to make it)", err)
			}
			if got != string(want) {
				t.Errorf("unpack %s:\n--- got\n%s--- want\n%s", m, got, want)
			}
		})
	}
}

func unpackReport(t *testing.T, msg string) string {
	t.Helper()
	data, err := os.ReadFile(msg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var out, warn bytes.Buffer
	log := logging.New("tern-mime", &warn, nil)
	_, uerr := Unpack(bytes.NewReader(data), UnpackOptions{Dir: dir, All: true, Out: &out, Log: log})
	var b strings.Builder
	fmt.Fprintf(&b, "status %d\n", sysexit.Code(uerr))
	b.WriteString("files:\n")
	for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		if line == "" {
			continue
		}
		f := strings.SplitN(line, " ", 4)
		content, err := os.ReadFile(f[3])
		if err != nil {
			t.Fatalf("listed file: %v", err)
		}
		rel, _ := filepath.Rel(dir, f[3])
		fmt.Fprintf(&b, "%s %s %s %q sha256:%x\n", f[0], f[1], f[2], rel, sha256.Sum256(content))
	}
	entries, _ := os.ReadDir(dir)
	if n := strings.Count(out.String(), "\n"); n != len(entries) {
		t.Errorf("%d files listed, %d in the directory", n, len(entries))
	}
	b.WriteString("warnings:\n")
	b.WriteString(warn.String())
	warn.Reset()
	b.WriteString("tree:\n")
	var tree bytes.Buffer
	terr := Tree(bytes.NewReader(data), &tree, log)
	b.WriteString(tree.String())
	fmt.Fprintf(&b, "tree status %d\n", sysexit.Code(terr))
	return b.String()
}

// TestRoundTrip packs files and unpacks them again: byte-identical files
// under their own names, whatever the content and the script of the name.
func TestRoundTrip(t *testing.T) {
	in := t.TempDir()
	files := map[string][]byte{
		"empty":                {},
		"report.pdf":           bytes.Repeat([]byte{0, 1, 2, 0xff, '\r', '\n'}, 10000),
		"notes.txt":            []byte("line one\nline two\n"),
		"no-newline.txt":       []byte("no final newline"),
		"windows.txt":          []byte("crlf\r\nlines\r\n"),
		"lone\rcr.txt":         []byte("a\rb"),
		"long.txt":             bytes.Repeat([]byte("x"), 5000),
		"trailing.txt":         []byte("spaces   \ntabs\t\n"),
		"Résumé déjà vu.txt":   []byte("héllo wörld\n"),
		"Отчёт за квартал.csv": []byte("a;b\n1;2\n"),
		"会議の議事録 最終版.docx":      bytes.Repeat([]byte("PK\x03\x04 binary"), 100),
		`it's "quoted".txt`:    []byte("quotes\n"),
		"dot.starts.txt":       []byte(".\n..\nFrom me\n"),
		"boundary-like.txt":    []byte("--tern=_\n--\n"),
		strings.Repeat("長い名前", 18) + ".txt": []byte("long name\n"),
	}
	var names []string
	byName := map[string][]byte{}
	for name, content := range files {
		p := filepath.Join(in, strings.ReplaceAll(name, "\r", "_"))
		if err := os.WriteFile(p, content, 0o644); err != nil {
			t.Fatal(err)
		}
		byName[filepath.Base(p)] = content
		names = append(names, p)
	}
	files = byName
	for _, crlf := range []bool{false, true} {
		var msg bytes.Buffer
		err := Pack(&msg, PackOptions{
			Subject: "Ünïcödé subject that is long enough to need more than one encoded word, surely",
			From:    "Ann <ann@example.org>", To: []string{`"Doe, John" <john@example.org>`},
			Body: strings.NewReader("Hello,\nhere they are.\n"), Files: names,
			Now: time.Unix(1700000000, 0), Hostname: "test.example", Rand: bytes.NewReader(bytes.Repeat([]byte{7}, 64)), CRLF: crlf,
		})
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(msg.String(), "\n") {
			if len(line) > 998 {
				t.Errorf("line %d is %d long", i, len(line))
			}
			if !crlf && strings.Contains(line, "\r") {
				t.Errorf("line %d has a CR", i)
			}
		}
		out := t.TempDir()
		var warn bytes.Buffer
		got, err := Unpack(&msg, UnpackOptions{Dir: out, Log: logging.New("tern-mime", &warn, nil)})
		if err != nil {
			t.Fatal(err)
		}
		if warn.Len() > 0 {
			t.Errorf("warnings: %s", warn.String())
		}
		if len(got) != len(names) {
			t.Errorf("crlf=%v: %d files back, want %d", crlf, len(got), len(names))
		}
		for _, f := range got {
			content, err := os.ReadFile(f.Path)
			if err != nil {
				t.Fatal(err)
			}
			want, ok := files[filepath.Base(f.Path)]
			if !ok {
				t.Errorf("crlf=%v: unexpected name %q", crlf, filepath.Base(f.Path))
				continue
			}
			if !bytes.Equal(content, want) {
				t.Errorf("crlf=%v: %s: content differs: %q", crlf, f.Path, content[:min(len(content), 40)])
			}
		}
	}
}

// TestBadShapes feeds messages too big to keep as fixtures: they must be
// read to the end in bounded time, with warnings, without a crash.
// TestUnpackMakesDir: a missing output directory, parents and all, is made;
// one that cannot be made is 73 with the directory named.
func TestUnpackMakesDir(t *testing.T) {
	msg := "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: application/octet-stream; name=a.bin\n\nA\n--b--\n"
	dir := filepath.Join(t.TempDir(), "in", "today")
	files, err := Unpack(strings.NewReader(msg), UnpackOptions{Dir: dir, Log: logging.New("tern-mime", io.Discard, nil)})
	if err != nil || len(files) != 1 {
		t.Fatalf("unpack into a missing directory: %v %v", files, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "a.bin")); err != nil || string(b) != "A" {
		t.Errorf("a.bin: %q %v", b, err)
	}
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Unpack(strings.NewReader(msg), UnpackOptions{Dir: filepath.Join(blocker, "sub"), Log: logging.New("tern-mime", io.Discard, nil)})
	if sysexit.Code(err) != sysexit.CantCreate || !strings.Contains(err.Error(), blocker) {
		t.Errorf("unpack under a file: %v (status %d), want 73 naming %s", err, sysexit.Code(err), blocker)
	}
}

func TestBadShapes(t *testing.T) {
	var deep strings.Builder
	for i := 0; i < 5000; i++ {
		fmt.Fprintf(&deep, "Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n", i, i)
	}
	deep.WriteString("\nbottom\n")
	deepMsg := strings.Repeat("Content-Type: message/rfc822\n\n", 5000) + "\nbottom\n"
	hugeHeader := "Content-Type: multipart/mixed; boundary=h\n\n--h\n" + strings.Repeat("X-Junk: "+strings.Repeat("j", 70)+"\n", 100000) +
		"Content-Type: text/plain; name=kept.txt\n\nkept\n--h--\n"
	longLine := "Content-Type: multipart/mixed; boundary=l\n\n--l\nContent-Type: text/plain; name=l.txt\n" + strings.Repeat("Y", 3<<20) + "\n\nbody\n--l--\n"
	endless := "Subject: x\n" + strings.Repeat("X-A: b\n", 500000)
	manyParts := "Content-Type: multipart/mixed; boundary=m\n\n" + strings.Repeat("--m\nContent-Type: text/plain\n\nx\n", 20000) + "--m--\n"
	for name, tc := range map[string]struct {
		msg  string
		warn string
		code int
	}{
		"deep multipart": {deep.String(), "nested too deep", 65},
		"deep message":   {deepMsg, "nested too deep", 65},
		"huge header":    {hugeHeader, "header too long", 0},
		"long line":      {longLine, "malformed header", 0},
		"endless header": {endless, "header too long", 65},
		"many parts":     {manyParts, "too many parts", 0},
	} {
		t.Run(name, func(t *testing.T) {
			var warn bytes.Buffer
			start := time.Now()
			_, err := Unpack(strings.NewReader(tc.msg), UnpackOptions{Dir: t.TempDir(), Log: logging.New("tern-mime", &warn, nil)})
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("took %v", d)
			}
			if sysexit.Code(err) != tc.code {
				t.Errorf("status %d (%v), want %d", sysexit.Code(err), err, tc.code)
			}
			if !strings.Contains(warn.String(), tc.warn) {
				t.Errorf("warnings %q lack %q", warn.String(), tc.warn)
			}
		})
	}
}

func TestSafeName(t *testing.T) {
	for in, want := range map[string]string{
		"../../etc/passwd":       "passwd",
		`C:\Users\x\a.pdf`:       "a.pdf",
		".bashrc":                "bashrc",
		"  . hidden":             "hidden",
		"a\x00b\nc":              "a_b_c",
		"ok name.txt":            "ok name.txt",
		"/":                      "",
		"..":                     "",
		"bad\xffutf8":            "bad_utf8",
		"rlo\u202egpj.exe":       "rlo_gpj.exe",
		"日本語.txt":                "日本語.txt",
		"\u200b":                 "_",
		strings.Repeat("é", 300): strings.Repeat("é", 120),
	} {
		if got := SafeName(in); got != want {
			t.Errorf("SafeName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFields(t *testing.T) {
	msg := "Subject: =?utf-8?q?caf=C3=A9?= =?iso-8859-1?q?_=E9t=E9?=\nX-A: one\n\tfolded\nX-A: two\nX-Evil: =?utf-8?q?a=0Ab?=\nFrom: =?koi8-r?b?8NLJ18XU?= <p@x>\n\nbody\n"
	for _, tc := range []struct {
		names []string
		o     FieldOptions
		want  string
		code  int
	}{
		{[]string{"subject"}, FieldOptions{Decode: true}, "café été\n", 0},
		{[]string{"Subject"}, FieldOptions{}, "=?utf-8?q?caf=C3=A9?= =?iso-8859-1?q?_=E9t=E9?=\n", 0},
		{[]string{"X-A"}, FieldOptions{}, "one folded\n", 0},
		{[]string{"X-A"}, FieldOptions{All: true}, "one folded\ntwo\n", 0},
		{[]string{"X-Evil"}, FieldOptions{Decode: true}, "a b\n", 0},
		{[]string{"From"}, FieldOptions{Decode: true}, "Привет <p@x>\n", 0},
		{[]string{"Missing"}, FieldOptions{}, "", 1},
	} {
		var out bytes.Buffer
		err := Fields(strings.NewReader(msg), &out, tc.names, tc.o)
		if out.String() != tc.want || sysexit.Code(err) != tc.code {
			t.Errorf("%v %+v: %q status %d, want %q %d", tc.names, tc.o, out.String(), sysexit.Code(err), tc.want, tc.code)
		}
	}
}

func TestShow(t *testing.T) {
	msg, err := os.ReadFile("testdata/unpack/nested-rfc822.eml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		part, want string
		code       int
	}{
		// The line break before a delimiter belongs to it (RFC 2046 §5.1.1).
		{"", "see attached", 0},
		{"2.1", "inner text", 0},
		{"3.1", "inner text", 0},
		{"2", "", 65},
		{"9", "", 65},
	} {
		var out bytes.Buffer
		err := Show(bytes.NewReader(msg), &out, tc.part, nil)
		if out.String() != tc.want || sysexit.Code(err) != tc.code {
			t.Errorf("show %q: %q status %d (%v), want %q %d", tc.part, out.String(), sysexit.Code(err), err, tc.want, tc.code)
		}
	}
	var out bytes.Buffer
	latin := "Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\ncaf=E9\n"
	if err := Show(strings.NewReader(latin), &out, "1", nil); err != nil || out.String() != "café\n" {
		t.Errorf("latin-1: %q %v", out.String(), err)
	}
}

// FuzzUnpack: whatever the input, the walk ends, nothing panics, and every
// name a part could give becomes a safe one.
func FuzzUnpack(f *testing.F) {
	msgs, _ := filepath.Glob("testdata/unpack/*.eml")
	for _, m := range msgs {
		if b, err := os.ReadFile(m); err == nil && len(b) < 64<<10 {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		w := &walker{
			leaf: func(p *Part, body io.Reader) error {
				if n := SafeName(p.Filename); strings.ContainsAny(n, "/\x00") || strings.HasPrefix(n, ".") || len(n) > maxNameBytes || !utf8.ValidString(n) {
					t.Fatalf("unsafe name %q from %q", n, p.Filename)
				}
				_, err := io.Copy(io.Discard, body)
				return err
			},
			warn: func(string, string, ...any) {},
		}
		if err := w.walk(bytes.NewReader(data)); err != nil {
			t.Fatalf("walk: %v", err)
		}
	})
}

// FuzzDecodeHeader: decoding never panics and never yields a control
// character or invalid UTF-8; parameters parse without panicking.
func FuzzDecodeHeader(f *testing.F) {
	for _, s := range []string{
		"=?utf-8?q?caf=C3=A9?=", "=?iso-8859-1?b?6Q==?=", "=?x-unknown?q?a?=", "=?utf-8?q?a=0Ab?=",
		"attachment; filename*0*=utf-8''%E6%97%A5; filename*1*=%E6.txt", `text/plain; name="a\"b"`, "multipart/mixed; boundary=a b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d := DecodeHeader(s)
		if !utf8.ValidString(d) || strings.ContainsFunc(d, isControl) {
			t.Fatalf("DecodeHeader(%q) = %q", s, d)
		}
		mediaType(s)
	})
}
