package imapd

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapserver"
)

// FuzzLiteralAt: the literal found, if any, is what the line ends with,
// outside any quoted string.
func FuzzLiteralAt(f *testing.F) {
	for _, s := range []string{"a LOGIN {5}", `a LOGIN "x{5}"`, "a APPEND INBOX ~{12+}", `a "\"{3}`, "{}", "a {99999999999999999999}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		lit, ok := literalAt([]byte(line))
		if !ok {
			return
		}
		if lit.size < 0 || lit.start < 0 || lit.start >= len(line) || !strings.HasSuffix(line, "}") {
			t.Fatalf("%q: %+v", line, lit)
		}
		if inQuoted([]byte(line[:lit.start])) {
			t.Fatalf("%q: literal inside a quoted string", line)
		}
	})
}

// FuzzQuotedRoundTrip: a literal the front inlines reads back the same
// through the front's own parser of quoted strings.
func FuzzQuotedRoundTrip(f *testing.F) {
	f.Add([]byte(`we"ird\box`))
	f.Add([]byte("plain"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if !inlineable(data) {
			return
		}
		a := &args{s: string(appendQuoted(nil, data))}
		got, ok := a.quoted()
		if !ok || got != string(data) || !a.done() {
			t.Fatalf("%q: got %q ok=%v rest=%q", data, got, ok, a.s)
		}
	})
}

// FuzzArgs: the parsers of ID and APPEND's head never panic, and never
// take a mailbox name that holds CR or LF.
func FuzzArgs(f *testing.F) {
	for _, s := range []string{`INBOX (\Seen) "05-Dec-2026 10:00:00 +0000" `, `"a b" `, `INBOX UTF8 (`, `("name" "x" "version" NIL)`, `NIL`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, complete, err := parseAppendHead(s)
		if err == nil && complete && strings.ContainsAny(h.Mailbox, "\r\n") {
			t.Fatalf("%q: mailbox %q", s, h.Mailbox)
		}
		a := &args{s: s}
		a.idParams()
		splitCommand([]byte(s))
		if base, _ := baseSubject(s); len(base) > len(s) {
			t.Fatalf("base subject %q longer than %q", base, s)
		}
		parseSortKeys(&args{s: s})
		searchNumbers([]byte(s))
	})
}

// FuzzFront: whatever a client sends, the front and imapserver behind it
// neither panic nor hang: Serve returns once the client has gone. Run
// over imapmemserver.
func FuzzFront(f *testing.F) {
	for _, s := range []string{
		"a LOGIN alice secret\r\nb SELECT {5000+}\r\nx9 CREATE Injected\r\n",
		"a LOGIN {5}\r\nalice {6+}\r\nsecret\r\nb CREATE {3+}\r\nabc\r\nc LIST \"\" *\r\n",
		"a LOGIN alice secret\r\nb APPEND INBOX {3+}\r\nabc\r\nc APPEND INBOX (\\Seen {3+}\r\nabc\r\n",
		"+x\r\n\r\nb\r\na ID (\"name\" \"x\")\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		mem := memBackend(t)
		cfg := Config{
			Remote: netip.MustParseAddr("127.0.0.1"),
			NewSession: func(*ConnState) (imapserver.Session, bool, error) {
				return mem.NewSession(), false, nil
			},
		}
		client, server := net.Pipe()
		done := make(chan error, 1)
		go func() { done <- Serve(context.Background(), server, cfg) }()
		// The client says what it has to say and goes once the server
		// has been silent for a moment.
		go func() {
			client.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
			client.Write(input)
		}()
		go func() {
			buf := make([]byte, 4096)
			for {
				client.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				if _, err := client.Read(buf); err != nil {
					client.Close()
					return
				}
			}
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not end")
		}
	})
}
