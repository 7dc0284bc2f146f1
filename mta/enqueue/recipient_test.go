package enqueue

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tern-mail/tern/internal/sysexit"
	"github.com/tern-mail/tern/mta/queue"
	"github.com/tern-mail/tern/mta/transport"
)

func TestParseRecipient(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Recipient
		err  string
	}{
		{"bob@example.org", Recipient{Addr: "bob@example.org"}, ""},
		{"<bob@example.org>", Recipient{Addr: "bob@example.org"}, ""},
		{"<bob@example.org> NOTIFY=success,DELAY", Recipient{Addr: "bob@example.org", Notify: transport.NotifySuccess | transport.NotifyDelay}, ""},
		{"<bob@example.org>  orcpt=rfc822;Bob+2Bx@example.org notify=NEVER", Recipient{Addr: "bob@example.org", Notify: transport.NotifyNever, ORcpt: "RFC822;Bob+x@example.org"}, ""},
		{`<"a> b"@example.org> NOTIFY=FAILURE`, Recipient{Addr: `"a> b"@example.org`, Notify: transport.NotifyFailure}, ""},
		{"<bob@example.org> ORCPT=utf-8;zo+C3+AB@example.org", Recipient{Addr: "bob@example.org", ORcpt: "UTF-8;zoë@example.org"}, ""},
		{"<bob@example.org", Recipient{}, "no >"},
		{"<bob@example.org>NOTIFY=NEVER", Recipient{}, "blank"},
		{"<bob@example.org> NOTIFY", Recipient{}, "NAME=VALUE"},
		{"<bob@example.org> NOTIFY=", Recipient{}, "NAME=VALUE"},
		{"<bob@example.org> NOTIFY=NEVER NOTIFY=NEVER", Recipient{}, "twice"},
		{"<bob@example.org> NOTIFY=NEVER,DELAY", Recipient{}, "NEVER goes alone"},
		{"<bob@example.org> ORCPT=bob@example.org", Recipient{}, "addr-type"},
		{"<bob@example.org> ORCPT=rfc822;bob+0A@example.org", Recipient{}, "control"},
		{"<bob@example.org> ORCPT=rfc822;bob+0g", Recipient{}, "hex"},
		{"<bob@example.org> SIZE=10", Recipient{}, "unknown parameter"},
		{"<bob@example.org> " + strings.Repeat("x", 1000), Recipient{}, "longer than"},
	} {
		got, err := ParseRecipient(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || sysexit.Code(err) != sysexit.Usage {
				t.Errorf("%q: %+v, %v; want a usage error with %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q: %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
}

// FuzzParseRecipient: a recipient argument (from a filter, or a person)
// that parses is written back by Arg into one that parses the same.
func FuzzParseRecipient(f *testing.F) {
	for _, s := range []string{"bob@example.org", "<bob@example.org> NOTIFY=SUCCESS ORCPT=rfc822;bob@example.org", `<"a>b"@x> notify=never`, "<x> ORCPT=utf-8;+C3+AB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRecipient(s)
		if err != nil {
			return
		}
		if r.Notify == 0 && r.ORcpt == "" {
			return // a bare address: address.Check judges it in Submit
		}
		back, err := ParseRecipient(r.Arg())
		if err != nil || back != r {
			t.Fatalf("%q read as %+v, written %q, read back %+v, %v", s, r, r.Arg(), back, err)
		}
	})
}

// submit queues text with o into a new queue and returns the submission's
// envelope.
func submit(t *testing.T, o Options, text string) (*queue.Envelope, error) {
	t.Helper()
	q, err := queue.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	o.Host, o.SenderSet = "mx.test", true
	id, err := Submit(q, o, Env{Stdin: strings.NewReader(text), Now: time.Now})
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(q.Dir, queue.Incoming, id))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	e, _, err := queue.ParseEnvelope(f)
	if err != nil {
		t.Fatal(err)
	}
	return e, nil
}

// TestSubmitConversation: what the options say about the message is in
// the queued envelope; -N applies to the recipients without a NOTIFY of
// their own, and to those -t finds; a recipient named twice keeps its
// first parameters.
func TestSubmitConversation(t *testing.T) {
	conv := Conversation{Body: "8BITMIME", EnvID: "env 1", Ret: "HDRS", RequireTLS: true}
	e, err := submit(t, Options{
		Sender: "joe@example.net",
		Recipients: []Recipient{
			{Addr: "bob@example.org", Notify: transport.NotifySuccess, ORcpt: "RFC822;bob@example.org"},
			{Addr: "carol@example.org"},
			{Addr: "BOB@example.org", Notify: transport.NotifyNever},
		},
		ReadRecipients: true,
		Conversation:   conv,
		Notify:         transport.NotifyFailure | transport.NotifyDelay,
	}, "To: dave@example.org\nSubject: x\n\nbody\n")
	if err != nil {
		t.Fatal(err)
	}
	if e.Body != conv.Body || e.EnvID != conv.EnvID || e.Ret != conv.Ret || !e.RequireTLS || e.SMTPUTF8 || e.EightBit {
		t.Errorf("envelope %+v", e)
	}
	fd := transport.NotifyFailure | transport.NotifyDelay
	want := []queue.Recipient{
		{Addr: "bob@example.org", State: queue.Queued, Notify: transport.NotifySuccess, ORcpt: "RFC822;bob@example.org"},
		{Addr: "carol@example.org", State: queue.Queued, Notify: fd},
		{Addr: "dave@example.org", State: queue.Queued, Notify: fd},
	}
	if len(e.Recipients) != len(want) {
		t.Fatalf("recipients %d, want %d", len(e.Recipients), len(want))
	}
	for i, r := range e.Recipients {
		if *r != want[i] {
			t.Errorf("recipient %d: %+v, want %+v", i, *r, want[i])
		}
	}
}

// TestSubmitEightBitAndUTF8: unscanned, the text's 8-bit octets are found
// as it is copied, header or body; scanned, the caller's word is taken,
// but a field added here that is not ASCII makes it 8-bit; an address
// that is not ASCII implies SMTPUTF8.
func TestSubmitEightBitAndUTF8(t *testing.T) {
	for _, c := range []struct {
		name      string
		o         Options
		text      string
		eight, u8 bool
	}{
		{"ascii", Options{Sender: "joe@example.net"}, "From: joe@example.net\nSubject: x\n\nbody\n", false, false},
		{"8-bit body", Options{Sender: "joe@example.net"}, "From: joe@example.net\nSubject: x\n\nsmørbrød\n", true, false},
		{"8-bit header", Options{Sender: "joe@example.net"}, "From: joe@example.net\nSubject: é\n\nbody\n", true, false},
		{"scanned 7-bit", Options{Sender: "joe@example.net", Scanned: true}, "From: joe@example.net\nSubject: é\n\nbody\n", false, false},
		{"scanned 8-bit", Options{Sender: "joe@example.net", Scanned: true, EightBit: true}, "From: joe@example.net\n\nbody\n", true, false},
		{"UTF-8 sender, From added", Options{Sender: "zoë@example.net", Scanned: true}, "Subject: x\n\nbody\n", true, true},
		{"UTF-8 recipient", Options{Sender: "joe@example.net", Recipients: []Recipient{{Addr: "zoë@example.org"}}}, "From: joe@example.net\n\nbody\n", false, true},
		{"asked for SMTPUTF8", Options{Sender: "joe@example.net", Conversation: Conversation{SMTPUTF8: true}}, "From: joe@example.net\n\nbody\n", false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.o.Recipients == nil {
				c.o.Recipients = []Recipient{{Addr: "bob@example.org"}}
			}
			e, err := submit(t, c.o, c.text)
			if err != nil {
				t.Fatal(err)
			}
			if e.EightBit != c.eight || e.SMTPUTF8 != c.u8 {
				t.Errorf("8-bit %v, SMTPUTF8 %v; want %v, %v", e.EightBit, e.SMTPUTF8, c.eight, c.u8)
			}
		})
	}
}

// TestSubmitRefusesParameters: values the queue would not keep are usage
// errors (64), and nothing is queued.
func TestSubmitRefusesParameters(t *testing.T) {
	for name, o := range map[string]Options{
		"body":      {Conversation: Conversation{Body: "BINARYMIME"}},
		"ret":       {Conversation: Conversation{Ret: "ALL"}},
		"envid":     {Conversation: Conversation{EnvID: strings.Repeat("x", 101)}},
		"envid tab": {Conversation: Conversation{EnvID: "a\tb"}},
		"orcpt":     {Recipients: []Recipient{{Addr: "bob@example.org", ORcpt: "bob@example.org"}}},
		"notify":    {Recipients: []Recipient{{Addr: "bob@example.org", Notify: transport.NotifyNever | transport.NotifySuccess}}},
	} {
		if o.Recipients == nil {
			o.Recipients = []Recipient{{Addr: "bob@example.org"}}
		}
		o.Sender = "joe@example.net"
		if _, err := submit(t, o, "Subject: x\n\nbody\n"); sysexit.Code(err) != sysexit.Usage {
			t.Errorf("%s: %v, want a usage error", name, err)
		}
	}
}
