package queue

import (
	"bytes"
	"flag"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tern-mail/tern/mta/transport"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// sampleV2 is an envelope with every field version 2 added.
func sampleV2() *Envelope {
	t0 := time.Date(2026, 12, 6, 18, 0, 0, 0, time.UTC)
	return &Envelope{
		ID: NewID(t0, 4242), Arrived: t0, Sender: "joe@example.net", UID: 1000, Offset: 300, Size: 1234,
		SMTPUTF8: true, Body: "8BITMIME", EightBit: true, EnvID: "QQ314159 +x=y z", Ret: "HDRS", RequireTLS: true,
		Recipients: []*Recipient{
			{Addr: "bob@example.org", State: Queued, Notify: transport.NotifySuccess | transport.NotifyFailure, ORcpt: "RFC822;Bob@Example.org"},
			{Addr: "ann@example.net", State: Deferred, Attempts: 1, Next: t0.Add(time.Minute), Status: "4.7.0",
				Answer: "try later", Notify: transport.NotifyNever, RemoteMTA: "mx.example.net[192.0.2.7]:25", DiagType: "smtp"},
			{Addr: "zoë@example.org", State: Queued, ORcpt: "UTF-8;zoë=+tab@example.org", Notify: transport.NotifyDelay},
			{Addr: "plain@example.org", State: Queued},
		},
	}
}

func marshal(t testing.TB, e *Envelope) string {
	t.Helper()
	var b bytes.Buffer
	if err := e.Marshal(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to make it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs:\n%s\n--- want ---\n%s", p, got, want)
	}
}

// TestEnvelopeV2: every field version 2 added is written in the format
// tern-queue(5) gives (the golden file is its example) and read back as
// it was.
func TestEnvelopeV2(t *testing.T) {
	e := sampleV2()
	text := marshal(t, e)
	golden(t, "envelope-v2.txt", text)
	got, n, err := ParseEnvelope(strings.NewReader(text))
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if n != int64(len(text)) {
		t.Errorf("used %d of %d bytes", n, len(text))
	}
	if !reflect.DeepEqual(got, e) {
		t.Errorf("read back:\n%+v\nwant\n%+v", got, e)
		for i := range e.Recipients {
			t.Logf("rcpt %d: %+v / %+v", i, *got.Recipients[i], *e.Recipients[i])
		}
	}
	// A recipient with none of the new fields is a version 1 line, and
	// the last one here is.
	if !strings.Contains(text, "\nrcpt\tqueued\t0\t-\t-\tplain@example.org\t-\t-\n") {
		t.Errorf("plain recipient line changed:\n%s", text)
	}
}

// TestEnvelopeReadsV1: an entry a version 1 tern-queue wrote is read
// whole; its recipient waiting in the state "remote" (which version 1 gave
// remote addresses) is deferred and due now. Written again, it is
// version 2.
func TestEnvelopeReadsV1(t *testing.T) {
	v1, err := os.ReadFile(filepath.Join("testdata", "envelope-v1.txt"))
	if err != nil {
		t.Fatal(err)
	}
	e, n, err := ParseEnvelope(bytes.NewReader(v1))
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(v1)) || e.ID != "18eb658cb4105cbc05b55" || e.Sender != "joe@example.net" || e.UID != 1000 || e.Offset != 141 || e.Size != 125 || e.Warned.IsZero() {
		t.Errorf("read %d bytes: %+v", n, e)
	}
	if len(e.Recipients) != 3 {
		t.Fatalf("%d recipients", len(e.Recipients))
	}
	if r := e.Recipients[1]; r.State != Deferred || r.Next.IsZero() || r.Status != "4.2.2" {
		t.Errorf("deferred recipient: %+v", r)
	}
	r := e.Recipients[2]
	if r.State != Deferred || !r.Next.IsZero() || r.Attempts != 1 || r.Addr != "dave@elsewhere.example" {
		t.Errorf("remote recipient: %+v, want deferred and due now", r)
	}
	if next, ok := e.NextTry(); !ok || !next.IsZero() {
		t.Errorf("NextTry = %v, %v: the remote recipient is due now", next, ok)
	}
	if e.SMTPUTF8 || e.Body != "" || e.EnvID != "" || e.Ret != "" || e.RequireTLS {
		t.Errorf("a version 1 entry has no conversation parameters: %+v", e)
	}
	if !e.EightBit {
		t.Errorf("a version 1 entry, whose text nobody looked at, is not taken for 8-bit")
	}
	text := marshal(t, e)
	if !strings.HasPrefix(text, "tern-queue 2\n8bit\n") || !strings.Contains(text, "\nrcpt\tdeferred\t1\t-\t4.3.2\tdave@elsewhere.example\t") {
		t.Errorf("written again:\n%s", text)
	}
}

// TestEnvelopeV2Refused: what ParseEnvelope refuses in a version 2
// envelope, and that version 1 has none of version 2's lines or fields.
func TestEnvelopeV2Refused(t *testing.T) {
	good := "tern-queue 2\n7bit\nid 18eb658cb4105cbc05b55\narrived 2026-11-25T21:02:11Z\nsender a@b.example\nrcpt\tqueued\t0\t-\t-\tbob@example.org\t-\t-\n"
	if _, _, err := ParseEnvelope(strings.NewReader(good)); err != nil {
		t.Fatal(err)
	}
	head, rcpt, _ := strings.Cut(good, "rcpt")
	rcpt = "rcpt" + strings.TrimSuffix(rcpt, "\n")
	line := func(l string) string { return head + l + "\n" + rcpt + "\n" }
	field := func(f ...string) string { return head + rcpt + "\t" + strings.Join(f, "\t") + "\n" }
	for name, in := range map[string]string{
		"version 3":             strings.Replace(good, "tern-queue 2", "tern-queue 3", 1),
		"v1 with smtputf8":      strings.Replace(strings.Replace(line("smtputf8"), "7bit\n", "", 1), "tern-queue 2", "tern-queue 1", 1),
		"v1 with a text line":   strings.Replace(good, "tern-queue 2", "tern-queue 1", 1),
		"v1 with a field":       strings.Replace(strings.Replace(field("notify=NEVER"), "7bit\n", "", 1), "tern-queue 2", "tern-queue 1", 1),
		"flag with a value":     line("smtputf8 yes"),
		"flag twice":            line("requiretls\nrequiretls"),
		"no text line":          strings.Replace(good, "7bit\n", "", 1),
		"text line twice":       line("8bit"),
		"text line with value":  strings.Replace(good, "7bit", "7bit yes", 1),
		"body binary":           line("body BINARYMIME"),
		"body lower case":       line("body 8bitmime"),
		"body twice":            line("body 7BIT\nbody 7BIT"),
		"ret other":             line("ret ALL"),
		"envid empty":           line("envid "),
		"envid too long":        line("envid " + strings.Repeat("x", 101)),
		"envid line end":        line("envid a+0Ab"),
		"envid not ascii":       line("envid a+C3+A9"),
		"envid bad xtext":       line("envid a+0ab"),
		"envid raw blank":       line("envid a=b"),
		"unknown line":          line("priority 3"),
		"remote in version 2":   strings.Replace(good, "\tqueued\t", "\tremote\t", 1),
		"field without =":       field("notify"),
		"field empty":           field("notify="),
		"field unknown":         field("color=blue"),
		"field twice":           field("diag=smtp", "diag=smtp"),
		"notify never and more": field("notify=NEVER,SUCCESS"),
		"notify twice":          field("notify=DELAY,DELAY"),
		"notify other":          field("notify=ALWAYS"),
		"orcpt no type":         field("orcpt=bob@example.org"),
		"orcpt tab":             field("orcpt=rfc822;bob+09x@example.org"),
		"orcpt C1 control":      field("orcpt=utf-8;bob+C2+85x@example.org"),
		"orcpt bad UTF-8":       field("orcpt=utf-8;bob+FFx@example.org"),
		"orcpt too long":        field("orcpt=rfc822;" + strings.Repeat("x", 500)),
		"remote-mta control":    field("remote-mta=mx+0A"),
		"diag not a token":      field("diag=smtp+3B"),
		"thirteen fields":       field("notify=NEVER", "orcpt=rfc822;a", "diag=smtp", "remote-mta=x", "notify=NEVER"),
	} {
		if _, _, err := ParseEnvelope(strings.NewReader(in)); err == nil {
			t.Errorf("%s: no error for\n%s", name, in)
		}
	}
	// Values are read in any case and written in one.
	e, _, err := ParseEnvelope(strings.NewReader(field("notify=failure,success", "orcpt=rfc822;Bob@Example.org")))
	if err != nil {
		t.Fatal(err)
	}
	if r := e.Recipients[0]; r.Notify != transport.NotifySuccess|transport.NotifyFailure || r.ORcpt != "RFC822;Bob@Example.org" {
		t.Errorf("read %+v", r)
	}
	if text := marshal(t, e); !strings.Contains(text, "\tnotify=SUCCESS,FAILURE\torcpt=RFC822;Bob@Example.org\n") {
		t.Errorf("written:\n%s", text)
	}
}

// TestEnvelopeMarshalRefuses: Marshal writes nothing ParseEnvelope would
// refuse: a bad parameter from the caller is an error, and what a remote
// server said is made to fit.
func TestEnvelopeMarshalRefuses(t *testing.T) {
	for name, change := range map[string]func(*Envelope){
		"envid too long": func(e *Envelope) { e.EnvID = strings.Repeat("x", 101) },
		"envid control":  func(e *Envelope) { e.EnvID = "a\tb" },
		"orcpt no type":  func(e *Envelope) { e.Recipients[0].ORcpt = "bob@example.org" },
		"orcpt newline":  func(e *Envelope) { e.Recipients[0].ORcpt = "rfc822;bob\n@example.org" },
		"body":           func(e *Envelope) { e.Body = "BINARYMIME" },
		"ret":            func(e *Envelope) { e.Ret = "hdrs" },
		"notify":         func(e *Envelope) { e.Recipients[0].Notify = transport.NotifyNever | transport.NotifyDelay },
	} {
		e := sampleV2()
		change(e)
		if err := e.Marshal(&bytes.Buffer{}); err == nil {
			t.Errorf("%s: Marshal wrote it", name)
		}
	}
	e := sampleV2()
	e.Recipients[1].RemoteMTA = "mx.example.net\t[192.0.2.7]:25\n" + strings.Repeat("x", 600)
	e.Recipients[1].DiagType = "smtp; 550"
	got, _, err := ParseEnvelope(strings.NewReader(marshal(t, e)))
	if err != nil {
		t.Fatal(err)
	}
	if r := got.Recipients[1]; !strings.HasPrefix(r.RemoteMTA, "mx.example.net?[192.0.2.7]:25?xxx") || len(r.RemoteMTA) != maxRemoteMTA || r.DiagType != "" {
		t.Errorf("remote-mta %q, diag %q", r.RemoteMTA, r.DiagType)
	}
}

// TestInjectFindsEightBit: Inject finds an octet over 127 wherever it is
// in the message, as it copies it, and the text line of the submission
// says so; InjectScanned takes the caller's word and looks at nothing.
// Both survive the take-in into env/.
func TestInjectFindsEightBit(t *testing.T) {
	big := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n", 2000)
	for _, c := range []struct {
		name    string
		text    string
		scanned bool
		known8  bool
		want    bool
	}{
		{"ascii", "Subject: x\n\nbody\n", false, false, false},
		{"8-bit header", "Subject: é\n\nbody\n", false, false, true},
		{"8-bit at the end of a large body", "Subject: x\n\n" + big + "caf\xc3\xa9\n", false, false, true},
		{"8-bit in the last octet", "Subject: x\n\n" + big + "\xff", false, false, true},
		{"DEL is 7-bit", "Subject: x\n\n\x7f\n", false, false, false},
		{"scanned, said 7-bit", "Subject: é\n\nbody\n", true, false, false},
		{"scanned, said 8-bit", "Subject: x\n\nbody\n", true, true, true},
		{"unscanned, said 8-bit", "Subject: x\n\nbody\n", false, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			q, err := Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			e := &Envelope{Sender: "a@b.example", UID: -1, EightBit: c.known8, Recipients: []*Recipient{{Addr: "bob@example.org", State: Queued}}}
			inject := q.Inject
			if c.scanned {
				inject = q.InjectScanned
			}
			id, err := inject(e, strings.NewReader(c.text), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if e.EightBit != c.want {
				t.Errorf("envelope says 8-bit %v, want %v", e.EightBit, c.want)
			}
			b, err := os.ReadFile(filepath.Join(q.Dir, Incoming, id))
			if err != nil {
				t.Fatal(err)
			}
			line := "7bit"
			if c.want {
				line = "8bit"
			}
			if !bytes.HasPrefix(b, []byte(Format+"\n"+line+"\n")) {
				t.Errorf("submission starts %q, want the text line %q", b[:min(len(b), 40)], line)
			}
			if !bytes.HasSuffix(b, []byte(c.text)) {
				t.Errorf("message changed")
			}
			got, err := q.Ingest(id)
			if err != nil {
				t.Fatal(err)
			}
			if got.EightBit != c.want {
				t.Errorf("taken in as 8-bit %v, want %v", got.EightBit, c.want)
			}
			if again, err := q.Load(id); err != nil || again.EightBit != c.want {
				t.Errorf("env/ reads 8-bit %v (%v), want %v", again.EightBit, err, c.want)
			}
		})
	}
}

// TestInjectPreparedOnlyScanned: a prepared entry's seal covers the text
// line, so only a message whose text was looked at already goes into one.
func TestInjectPreparedOnlyScanned(t *testing.T) {
	q, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	q.KeepReady(2)
	defer q.Close()
	waitPool(t, q, 2)
	sealed := func(id string) bool {
		f, err := os.Open(filepath.Join(q.Dir, Incoming, id))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		_, err = checkSeal(f)
		return err == nil
	}
	e, text := newMessage(1)
	id, err := q.Inject(e, strings.NewReader(text+"\xe9\n"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if sealed(id) || !e.EightBit {
		t.Errorf("unscanned message: in a prepared entry %v, 8-bit %v", sealed(id), e.EightBit)
	}
	e, text = newMessage(2)
	e.EightBit = true
	id, err = q.InjectScanned(e, strings.NewReader(text+"\xe9\n"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !sealed(id) {
		t.Errorf("scanned message not in a prepared entry")
	}
	if got, err := q.Ingest(id); err != nil || !got.EightBit {
		t.Errorf("taken in: %+v, %v", got, err)
	}
}

// TestReclaimVersion1Prepared: a prepared entry that a version 1
// tern-smtpd sealed, left as .pool- by a crash before its rename, is taken
// in by this version after an upgrade.
func TestReclaimVersion1Prepared(t *testing.T) {
	q, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	id := NewID(time.Now(), 77)
	rest := "id " + id + "\narrived 2026-11-25T21:02:11Z\nsender a@b.example\nrcpt\tqueued\t0\t-\t-\tbob@example.org\t-\t-\n\nSubject: old\n\nbody\n"
	crc := crc32.Checksum([]byte(rest), crc32.MakeTable(crc32.Castagnoli))
	v1 := formatV1 + "\n" + sealKey + sealValue(int64(len(rest)), crc) + "\n" + rest
	if err := os.WriteFile(filepath.Join(q.Dir, Incoming, PoolPrefix+"v1"), []byte(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	notes := q.ReclaimPool()
	if ids, _ := q.Incoming(); len(ids) != 1 || ids[0] != id {
		t.Fatalf("incoming: %v; notes %q", ids, notes)
	}
	e, err := q.Ingest(id)
	if err != nil || !e.EightBit || e.Size != int64(len("Subject: old\n\nbody\n")) {
		t.Errorf("taken in: %+v, %v", e, err)
	}
}

// BenchmarkHas8Bit: what Inject's look for 8-bit octets costs a message
// of plain ASCII (the whole text is read), against copying it.
func BenchmarkHas8Bit(b *testing.B) {
	for _, size := range []int{4 << 10, 1 << 20} {
		text := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n"), size/64)
		b.Run(fmt.Sprintf("scan/%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				if has8Bit(text) {
					b.Fatal("8-bit")
				}
			}
		})
		dst := make([]byte, len(text))
		b.Run(fmt.Sprintf("copy/%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				copy(dst, text)
			}
		})
	}
}

// TestHas8Bit: an octet over 127 is found at every place in a buffer,
// whatever the word it falls in.
func TestHas8Bit(t *testing.T) {
	for n := 0; n < 100; n++ {
		p := bytes.Repeat([]byte{0x7f}, n)
		if has8Bit(p) {
			t.Fatalf("%d octets of 0x7f: 8-bit", n)
		}
		for i := 0; i < n; i++ {
			p[i] = 0x80
			if !has8Bit(p) {
				t.Fatalf("0x80 at %d of %d not found", i, n)
			}
			p[i] = 0x7f
		}
	}
}
