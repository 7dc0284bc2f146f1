package tests

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestMimeRoundTrip packs files of 0 bytes to 20 MB with names in several
// scripts through `tern-mime pack`, unpacks the message with `tern-mime
// unpack`, and compares every file byte for byte. The 20 MB file also
// bounds memory: the unpacking process must stay well under its size.
func TestMimeRoundTrip(t *testing.T) {
	r := NewRoot(t)
	in := r.Path("in")
	if err := os.MkdirAll(in, 0o755); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 20<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"empty.bin":              {},
		"one":                    {'x'},
		"big random.bin":         big,
		"Grüße aus Köln.txt":     []byte("Grüße\naus Köln\n"),
		"Привет, мир.txt":        []byte("Привет\r\nмир\r\n"),
		"報告書 2024年.pdf":          bytes.Repeat([]byte{0x25, 0x50, 0x44, 0x46, 0, 0xff}, 50000),
		`a "quoted" 'name'.txt`:  []byte("quotes\n"),
		"spaces  in   name .csv": []byte("a,b\n"),
		"text-no-newline.txt":    []byte("x = 1"),
		"long-lines.txt":         bytes.Repeat([]byte("y"), 100000),
	}
	var args []string
	for name, content := range files {
		p := filepath.Join(in, name)
		if err := os.WriteFile(p, content, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, p)
	}
	pack := r.Run("Hello,\nthe files.\n", nil, "tern-mime", append([]string{"pack", "-s", "Отчёт — files", "-f", "Ann <ann@example.org>", "-t", "bob@example.org"}, args...)...)
	if pack.Code != 0 {
		t.Fatalf("pack: %s", pack.Stderr)
	}
	// unpack makes the directory, as a script at the head of a pipeline
	// needs it to.
	out := r.Path("out", "today")
	// Peak memory is measured by /usr/bin/time (Debian time): the rusage
	// Go reports for a child counts the parent's memory too, because the
	// child is cloned with the parent's address space before exec. Without
	// it the round trip is still checked.
	_, timeErr := exec.LookPath("/usr/bin/time")
	rss := r.Path("rss")
	cmd := r.Cmd("tern-mime", "unpack", "-C", out)
	if timeErr == nil {
		cmd.Args = append([]string{"/usr/bin/time", "-f", "%M", "-o", rss}, cmd.Args...)
		cmd.Path = "/usr/bin/time"
	}
	res := RunCmd(t, cmd, pack.Stdout)
	if res.Code != 0 || res.Stderr != "" {
		t.Fatalf("unpack: %s", res)
	}
	t.Run("PeakRSS", func(t *testing.T) {
		Need(t, "time")
		if b, err := os.ReadFile(rss); err != nil {
			t.Error(err)
		} else if kib, err := strconv.Atoi(strings.TrimSpace(string(b))); err != nil || kib > 32<<10 {
			t.Errorf("unpack peak RSS %q KiB for a 20 MiB attachment; memory is not bounded", b)
		} else {
			t.Logf("unpack peak RSS %d KiB", kib)
		}
	})
	lines := strings.Split(strings.TrimSpace(res.Stdout), "\n")
	if len(lines) != len(files) {
		t.Errorf("%d lines listed, want %d:\n%s", len(lines), len(files), res.Stdout)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes back, want %d, or different", name, len(got), len(want))
		}
	}
	listing := regexp.MustCompile(`^\d+ [a-z]+/[-+.a-z0-9]+ \d+ ` + regexp.QuoteMeta(out) + `/.+$`)
	for _, l := range lines {
		if !listing.MatchString(l) {
			t.Errorf("listing line %q has not the shape NUM TYPE SIZE PATH", l)
		}
	}

	// The subject comes back through header -d, as a script would read it.
	h := r.Run(pack.Stdout, nil, "tern-mime", "header", "-d", "Subject")
	if h.Code != 0 || h.Stdout != "Отчёт — files\n" {
		t.Errorf("header -d Subject: %s", h)
	}
	show := r.Run(pack.Stdout, nil, "tern-mime", "show")
	if show.Code != 0 || show.Stdout != "Hello,\nthe files.\n" {
		t.Errorf("show: %s", show)
	}
	tree := r.Run(pack.Stdout, nil, "tern-mime", "show", "-t")
	if tree.Code != 0 || !strings.Contains(tree.Stdout, "size=20971520 disposition=attachment name=\"big random.bin\"") {
		t.Errorf("show -t: %s", tree)
	}
}

// TestMimeUnpackStaysInDir: names and links planted to escape DIR fail.
func TestMimeUnpackStaysInDir(t *testing.T) {
	r := NewRoot(t)
	out := r.Path("out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	victim := r.WriteFile("victim", "keep me")
	if err := os.Symlink(victim, filepath.Join(out, "link.txt")); err != nil {
		t.Fatal(err)
	}
	msg := "Content-Type: multipart/mixed; boundary=b\n\n" +
		"--b\nContent-Type: application/octet-stream; name=\"../victim\"\n\nA\n" +
		"--b\nContent-Type: application/octet-stream; name=\"link.txt\"\n\nB\n" +
		"--b\nContent-Type: application/octet-stream; name=\"/etc/x\"\n\nC\n--b--\n"
	res := r.Run(msg, nil, "tern-mime", "unpack", "-C", out)
	if res.Code != 0 {
		t.Fatalf("unpack: %s", res)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep me" {
		t.Errorf("victim overwritten: %q", b)
	}
	for _, want := range []string{out + "/victim", out + "/link-1.txt", out + "/x"} {
		if !strings.Contains(res.Stdout, " "+want+"\n") {
			t.Errorf("no %s in listing:\n%s", want, res.Stdout)
		}
	}
}

// TestMimeStatuses: the exit statuses scripts rely on.
func TestMimeStatuses(t *testing.T) {
	r := NewRoot(t)
	for _, tc := range []struct {
		stdin string
		args  []string
		code  int
		err   string
	}{
		{"", []string{"unpack", "-C", r.Dir}, 65, "nothing usable"},
		{"\x00\x01", []string{"show", "-t"}, 0, ""},
		{"Subject: x\n\nbody\n", []string{"header", "X-Missing"}, 1, ""},
		{"Subject: x\n\nbody\n", []string{"header"}, 64, "NAME"},
		{"", []string{"unpack", "-C", r.WriteFile("plain", "") + "/sub"}, 73, "make output directory"},
		{"", []string{"pack", "/no/such/file"}, 66, "open /no/such/file"},
		{"", []string{"frobnicate"}, 64, ""},
		{"Subject: x\n\nbody\n", []string{"show", "7"}, 65, "no part 7"},
	} {
		res := r.Run(tc.stdin, nil, "tern-mime", tc.args...)
		if res.Code != tc.code || !strings.Contains(res.Stderr, tc.err) {
			t.Errorf("%v: %s\nwant exit %d and %q", tc.args, res, tc.code, tc.err)
		}
	}
}

// TestMimeCharsets: the real program converts text from the charsets mail
// comes in (show), and decodes file names written in them (unpack), from
// its own table of charset names rather than x/text's indexes.
func TestMimeCharsets(t *testing.T) {
	r := NewRoot(t)
	for _, tc := range []struct{ charset, encoded, want string }{
		{"KOI8-R", "\xf0\xd2\xc9\xd7\xc5\xd4", "Привет"},
		{"windows-1252", "caf\xe9 \x80", "café €"},
		{"Shift_JIS", "\x82\xb1\x82\xf1\x82\xc9\x82\xbf\x82\xcd", "こんにちは"},
		{"ISO-2022-JP", "\x1b$B$3$s$K$A$O\x1b(B", "こんにちは"},
		{" gb2312", "\xc4\xe3\xba\xc3", "你好"},
		{"Big5", "\xa7\x41\xa6\x6e", "你好"},
		{"x-unknown", "plain", "plain"},
	} {
		msg := "Subject: x\nMIME-Version: 1.0\nContent-Type: text/plain; charset=\"" + tc.charset + "\"\n" +
			"Content-Transfer-Encoding: 8bit\n\n" + tc.encoded + "\n"
		res := r.Run(msg, nil, "tern-mime", "show")
		if res.Code != 0 || res.Stdout != tc.want+"\n" {
			t.Errorf("show %s: %s\nwant %q", tc.charset, res, tc.want)
		}
	}
	// The same charsets in names: RFC 2231 and RFC 2047.
	out := r.Path("out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	msg := "Subject: x\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n" +
		"--b\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename*=koi8-r''%F0%D2%C9%D7%C5%D4.bin\n\none\n" +
		"--b\nContent-Type: application/octet-stream; name=\"=?shift_jis?b?grGC8YLJgr+CzQ==?=.bin\"\n\ntwo\n--b--\n"
	res := r.Run(msg, nil, "tern-mime", "unpack", "-C", out)
	if res.Code != 0 {
		t.Fatalf("unpack: %s", res)
	}
	for _, name := range []string{"Привет.bin", "こんにちは.bin"} {
		if _, err := os.Stat(filepath.Join(out, name)); err != nil {
			t.Errorf("unpack: %v\n%s", err, res)
		}
	}
}

// TestMimeAgainstMunpack: a message tern-mime packs is read right by
// munpack too (Debian mpack), for an ASCII name, the common case.
func TestMimeAgainstMunpack(t *testing.T) {
	Need(t, "munpack")
	r := NewRoot(t)
	data := bytes.Repeat([]byte{1, 2, 3, 0, 255}, 3000)
	p := filepath.Join(r.Dir, "data.bin")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	pack := r.Run("", nil, "tern-mime", "pack", "-s", "x", p)
	if pack.Code != 0 {
		t.Fatal(pack)
	}
	out := r.Path("munpack")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("munpack", "-q", "-C", out)
	res := RunCmd(t, cmd, pack.Stdout)
	if res.Code != 0 {
		t.Fatalf("munpack: %s", res)
	}
	if got, _ := os.ReadFile(filepath.Join(out, "data.bin")); !bytes.Equal(got, data) {
		t.Errorf("munpack got %d bytes, want %d", len(got), len(data))
	}
}

// TestMimeManPage: every flag of tern-mime is in its man page.
func TestMimeManPage(t *testing.T) {
	page, err := os.ReadFile(filepath.Join(mustRoot(t), "man", "tern-mime.1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, flag := range []string{"subject", "from", "to", "cc", "body", "html", "crlf", "dir", "text", "all", "tree", "decode"} {
		if !bytes.Contains(page, []byte("Fl -"+flag)) && !bytes.Contains(page, []byte("Fl "+flag)) {
			t.Errorf("man/tern-mime.1 lacks --%s", flag)
		}
	}
	for _, env := range []string{"TERN_SUBJECT", "TERN_DIR", "TERN_ALL", "TERN_DECODE"} {
		if !bytes.Contains(page, []byte(env)) {
			t.Errorf("man/tern-mime.1 lacks %s", env)
		}
	}
}

func mustRoot(t *testing.T) string {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}
