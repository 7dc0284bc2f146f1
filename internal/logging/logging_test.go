package logging

import (
	"bytes"
	"log/slog"
	"testing"
)

func TestShape(t *testing.T) {
	var buf bytes.Buffer
	log := New("tern-smtpd", &buf, nil)
	log.With("cid", "3f").Info("accepted", "qid", "17f3a", "from", "<a@b.example>", "rcpts", 2, "note", "two words")
	log.Debug("hidden")
	log.Warn("line\nbreak", slog.Group("tls", "version", "1.3"))
	want := "tern-smtpd: info: accepted cid=3f qid=17f3a from=<a@b.example> rcpts=2 note=\"two words\"\n" +
		"tern-smtpd: warning: line\\nbreak tls.version=1.3\n"
	if buf.String() != want {
		t.Errorf("got\n%s\nwant\n%s", buf.String(), want)
	}
}

func TestFatalf(t *testing.T) {
	var buf bytes.Buffer
	Fatalf(&buf, "tern-deliver", "unable to open %s: %s", "tmp/", "permission denied")
	if got, want := buf.String(), "tern-deliver: fatal: unable to open tmp/: permission denied\n"; got != want {
		t.Errorf("got %q want %q", got, want)
	}
}
