package runner

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tern-mail/tern/mta/queue"
	"github.com/tern-mail/tern/mta/transport"
)

const dsnBody = "Subject: dsn test\nMessage-ID: <m1@example.org>\n\nthe body of the message\n"

// injectEnvelope queues a message with the DSN parameters of e.
func (w *world) injectEnvelope(t *testing.T, e *queue.Envelope) string {
	t.Helper()
	q, err := queue.Open(w.queue)
	if err != nil {
		t.Fatal(err)
	}
	e.UID = -1
	for _, rc := range e.Recipients {
		rc.State = queue.Queued
	}
	id, err := q.Inject(e, strings.NewReader(dsnBody), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// reports is what the deliver script wrote for user: the reports tern
// sent, one after another.
func (w *world) reports(user string) string {
	b, _ := os.ReadFile(filepath.Join(w.dir, "home", user, "got"))
	return string(b)
}

// remoteAnswers is a remote destination that refuses every address that
// starts with "bad" in its own words, and takes the rest; relayed says
// whether it lacks DSN.
func remoteAnswers(relayed bool) func(transport.Hop, transport.Recipient) transport.Result {
	return func(hop transport.Hop, rc transport.Recipient) transport.Result {
		if strings.HasPrefix(rc.Addr, "bad") {
			return transport.Result{Status: "5.1.1", Reply: 550, Answer: "550 5.1.1 <" + rc.Addr + ">: mailbox unknown, says the remote", RemoteMTA: "mx.remote.example[192.0.2.1]:25", DiagType: "smtp"}
		}
		res := sent(hop, rc)
		res.Relayed = relayed
		return res
	}
}

func TestBounceCarriesRemoteWords(t *testing.T) {
	w := newWorld(t, "bob")
	tr := newFakeSMTP(remoteAnswers(false))
	w.injectEnvelope(t, &queue.Envelope{Sender: "bob@example.org", EnvID: "env-42", Recipients: []*queue.Recipient{
		{Addr: "a@remote.example"}, {Addr: "bad@remote.example", ORcpt: "rfc822;Bad@Remote.Example"}, {Addr: "c@remote.example"},
	}})
	runOnce(t, w.remoteRunner(t, runnerSetup{o: Options{Once: true}, clock: &clock{t: time.Now()}, tr: tr}))
	got := w.reports("bob")
	for _, want := range []string{
		"Subject: Undelivered Mail Returned to Sender\n",
		"Original-Envelope-Id: env-42\n",
		"Original-Recipient: rfc822; Bad@Remote.Example\nFinal-Recipient: rfc822; bad@remote.example\nAction: failed\nStatus: 5.1.1\nRemote-MTA: dns; mx.remote.example\nDiagnostic-Code: smtp; 550 5.1.1 <bad@remote.example>: mailbox unknown, says the remote\n",
		"Content-Type: text/rfc822-headers\n\nSubject: dsn test\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the bounce lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "a@remote.example") || strings.Contains(got, "c@remote.example") || strings.Contains(got, "the body of the message") {
		t.Errorf("the bounce names delivered recipients or carries the body (no RET=FULL):\n%s", got)
	}
	if tr.count(tr.calls, "remote.example") != 1 {
		t.Errorf("%d transactions for three recipients of one destination, want 1", tr.count(tr.calls, "remote.example"))
	}
}

func TestNotify(t *testing.T) {
	never, failure, success := transport.NotifyNever, transport.NotifyFailure, transport.NotifySuccess|transport.NotifyFailure
	for _, c := range []struct {
		name    string
		rcpt    queue.Recipient
		ret     string
		relayed bool
		want    []string // in the reports, "" for none at all
		not     []string
	}{
		{name: "never", rcpt: queue.Recipient{Addr: "bad@remote.example", Notify: never}, want: []string{""}},
		{name: "failure", rcpt: queue.Recipient{Addr: "bad@remote.example", Notify: failure}, want: []string{"Action: failed\n"}},
		{name: "ret full", rcpt: queue.Recipient{Addr: "bad@remote.example"}, ret: "FULL", want: []string{"Content-Type: message/rfc822\n\nSubject: dsn test\n", "\nthe body of the message\n"}},
		{name: "ret hdrs", rcpt: queue.Recipient{Addr: "bad@remote.example"}, ret: "HDRS", want: []string{"Content-Type: text/rfc822-headers\n"}, not: []string{"the body of the message"}},
		{name: "success relayed", rcpt: queue.Recipient{Addr: "ok@remote.example", Notify: success}, relayed: true, want: []string{"Subject: Successful Mail Delivery Report\n", "Action: relayed\nStatus: 2.0.0\nRemote-MTA: dns; mx.remote.example\n"}},
		{name: "success passed on", rcpt: queue.Recipient{Addr: "ok@remote.example", Notify: success}, want: []string{""}},
		{name: "success local", rcpt: queue.Recipient{Addr: "bob@example.org", Notify: success}, want: []string{"Action: delivered\nStatus: 2.0.0\n"}, not: []string{"the body of the message\n--"}},
		{name: "success not asked", rcpt: queue.Recipient{Addr: "bob@example.org"}, want: []string{""}},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, "bob", "carol")
			tr := newFakeSMTP(remoteAnswers(c.relayed))
			rc := c.rcpt
			w.injectEnvelope(t, &queue.Envelope{Sender: "carol@example.org", Ret: c.ret, Recipients: []*queue.Recipient{&rc}})
			runOnce(t, w.remoteRunner(t, runnerSetup{o: Options{Once: true}, clock: &clock{t: time.Now()}, tr: tr}))
			got := w.reports("carol")
			for _, want := range c.want {
				if want == "" && got != "" || !strings.Contains(got, want) {
					t.Errorf("reports to the sender lack %q:\n%s", want, got)
				}
			}
			for _, not := range c.not {
				if strings.Contains(got, not) {
					t.Errorf("reports to the sender have %q:\n%s", not, got)
				}
			}
			if left := w.left(t); len(left) != 0 {
				t.Errorf("left: %v", left)
			}
		})
	}
}

// TestNotifyDelay: a delay warning goes only to recipients whose NOTIFY
// has DELAY (or who gave none).
func TestNotifyDelay(t *testing.T) {
	for _, c := range []struct {
		notify transport.Notify
		warned bool
	}{{0, true}, {transport.NotifyDelay, true}, {transport.NotifyFailure, false}, {transport.NotifyNever, false}} {
		t.Run(c.notify.String(), func(t *testing.T) {
			w := newWorld(t, "carol")
			tr := newFakeSMTP(func(transport.Hop, transport.Recipient) transport.Result {
				return transport.Result{Status: "4.2.0", Temporary: true, Reply: 451, Answer: "451 4.2.0 later", RemoteMTA: "mx.remote.example[192.0.2.1]:25", DiagType: "smtp"}
			})
			id := w.injectEnvelope(t, &queue.Envelope{Sender: "carol@example.org", Recipients: []*queue.Recipient{{Addr: "x@remote.example", Notify: c.notify}}})
			clk := &clock{t: time.Now().Add(5 * time.Hour)}
			runOnce(t, w.remoteRunner(t, runnerSetup{o: Options{Once: true, WarnAfter: 4 * time.Hour}, clock: clk, tr: tr}))
			got := w.reports("carol")
			if warned := strings.Contains(got, "Action: delayed\n"); warned != c.warned {
				t.Errorf("warned %v, want %v:\n%s", warned, c.warned, got)
			}
			if c.warned && !strings.Contains(got, "Diagnostic-Code: smtp; 451 4.2.0 later\n") {
				t.Errorf("the warning lacks the remote's words:\n%s", got)
			}
			e := w.load(t, id)
			if e.Warned.IsZero() || e.Recipients[0].RemoteMTA != "mx.remote.example[192.0.2.1]:25" || e.Recipients[0].DiagType != "smtp" {
				t.Errorf("envelope after the warning: warned %v, %+v", e.Warned, e.Recipients[0])
			}
		})
	}
}
