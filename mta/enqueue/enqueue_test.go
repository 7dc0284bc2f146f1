package enqueue

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestSendmailArgs(t *testing.T) {
	for _, c := range []struct {
		mode  Mode
		in    string
		out   string
		notes int
		err   string
	}{
		{ModeSendmail, "-t -i", "-t --", 0, ""},
		{ModeSendmail, "-t", "-t --dot --", 0, ""},
		{ModeSendmail, "-oi -fjoe@x.example bob", "-f joe@x.example -- bob", 0, ""},
		{ModeSendmail, "-oi -f joe@x.example -F Joe bob", "-f joe@x.example -F Joe -- bob", 0, ""},
		{ModeSendmail, "-r joe@x.example -oi -- -bob", "-f joe@x.example -- -bob", 0, ""},
		{ModeSendmail, "-oem -odb -odi -oi -bm bob", "-- bob", 0, ""},
		{ModeSendmail, "-oQ/x -O a=b -N never -i bob", "-- bob", 3, ""},
		{ModeSendmail, "-bp", "--list", 0, ""},
		{ModeSendmail, "-q", "--flush", 0, ""},
		{ModeSendmail, "-q30m", "--flush", 1, ""},
		{ModeSendmail, "-bi", "--noop", 1, ""},
		{ModeSendmail, "-bs", "", 0, "not supported"},
		{ModeSendmail, "-f", "", 0, "needs an argument"},
		{ModeSendmail, "-z", "", 0, "unknown option"},
		{ModeSendmail, "-t --help", "--help", 0, ""},
		{ModeSendmail, "-- --help", "--dot -- --help", 0, ""},
		{ModeMailq, "--help", "--help", 0, ""},
		{ModeMailq, "", "--list", 0, ""},
		{ModeMailq, "-v -x", "--list", 1, ""},
	} {
		var args []string
		if c.in != "" {
			args = strings.Fields(c.in)
		}
		out, notes, err := SendmailArgs(c.mode, args)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: %v, want error %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || strings.Join(out, " ") != c.out || len(notes) != c.notes {
			t.Errorf("%q: %q %q %v; want %q and %d notes", c.in, out, notes, err, c.out, c.notes)
		}
	}
	if ModeOf("/usr/sbin/sendmail") != ModeSendmail || ModeOf("mailq") != ModeMailq || ModeOf("/x/tern-enqueue") != ModeEnqueue {
		t.Error("ModeOf")
	}
}

func readAll(in string, dot bool) (string, error) {
	r := bufio.NewReader(strings.NewReader(in))
	h, err := readHeader(r, dot)
	if err != nil {
		return "", err
	}
	body := &bodyReader{r: r, dotEnds: dot, buf: h.rest, done: h.ended}
	var b bytes.Buffer
	b.Write(h.bytes())
	_, err = io.Copy(&b, body)
	return b.String(), err
}

func TestHeaderAndBody(t *testing.T) {
	for _, c := range []struct {
		in   string
		dot  bool
		want string
	}{
		{"Subject: a\r\n\r\nb\r\n", false, "Subject: a\n\nb\n"},
		{"From joe Mon Jan 1\nSubject: a\n\nb\n", false, "Subject: a\n\nb\n"},
		{"Subject: a\n folded\n\nb\n", false, "Subject: a\n folded\n\nb\n"},
		{"Subject: a\nnot a header line\nmore\n", false, "Subject: a\n\nnot a header line\nmore\n"},
		{"Subject: a\n\nb\n.\nc\n", true, "Subject: a\n\nb\n"},
		{"Subject: a\n\nb\n.\nc\n", false, "Subject: a\n\nb\n.\nc\n"},
		{"Subject: a\n.\nc\n", true, "Subject: a\n\n"},
		{"Subject: no end", false, "Subject: no end\n\n"},
		{"", false, "\n"},
	} {
		got, err := readAll(c.in, c.dot)
		if err != nil || got != c.want {
			t.Errorf("%q (dot %v): %q, %v; want %q", c.in, c.dot, got, err, c.want)
		}
	}
	if _, err := readAll(strings.Repeat("X-Long: "+strings.Repeat("y", 1000)+"\n", 1100), false); err == nil {
		t.Error("a header over 1 MiB was taken")
	}
}

func TestParseAddressList(t *testing.T) {
	got, err := parseAddressList(`"Dave D." <dave@example.org>, bob@example.org, team: carol@example.org;`)
	if err != nil || strings.Join(got, " ") != "dave@example.org bob@example.org carol@example.org" {
		t.Errorf("%q %v", got, err)
	}
	if got, err := parseAddressList("undisclosed-recipients:;"); err != nil || len(got) != 0 {
		t.Errorf("empty group: %q %v", got, err)
	}
}

func FuzzHeader(f *testing.F) {
	for _, s := range []string{"Subject: a\r\n\r\nb\r\n", "From x\nTo: a\n b\n\n.\n", "no header\n", ""} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, in string, dot bool) {
		out, err := readAll(in, dot)
		if err != nil {
			return
		}
		if strings.Count(in, "\r") == strings.Count(in, "\r\n") && strings.Contains(out, "\r") {
			t.Fatalf("CRLF left in %q", out)
		}
		if !strings.Contains(out, "\n\n") && !strings.HasPrefix(out, "\n") {
			t.Fatalf("no end of header in %q", out)
		}
	})
}
