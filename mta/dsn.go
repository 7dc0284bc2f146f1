package mta

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"mime"
	"strings"
	"time"
)

// DSN actions of RFC 3464 §2.3.3 that tern sends.
const (
	ActionFailed    = "failed"
	ActionDelayed   = "delayed"
	ActionDelivered = "delivered" // NOTIFY=SUCCESS, delivered here
	ActionRelayed   = "relayed"   // NOTIFY=SUCCESS, passed to a next hop that did not take DSN on
)

// ReportRecipient is one recipient's part of a delivery status
// notification.
type ReportRecipient struct {
	Original     string // the address the sender used, when it differs (an alias, or ORCPT)
	OriginalType string // ORCPT's address type (RFC 3461 §4.2); "" means rfc822
	Final        string // the address delivery was tried for
	Action       string // one of the Action constants
	Status       string // RFC 3463 enhanced status code
	Diagnostic   string // the last answer: the delivery agent's, or the remote server's own words
	DiagType     string // "smtp" for a remote server's answer; "" means X-Unix
	RemoteMTA    string // the host that answered (RFC 3464 §2.3.5), "" for local delivery
	LastAttempt  time.Time
	RetryUntil   time.Time // for a delay: when tern gives up
}

// Report is an RFC 3464 delivery status notification about one queued
// message.
type Report struct {
	ReportingMTA string // this host's name
	QueueID      string // the original message's queue ID
	Arrived      time.Time
	To           string // who gets the report: the original sender, or postmaster
	Date         time.Time
	MessageID    string // for the report itself, without angle brackets
	EnvID        string // RFC 3461 ENVID of the original message, "" if none
	Recipients   []ReportRecipient
	Header       []byte // the original message's header, for the third part
	// Message, when set, is the whole original message (RET=FULL): the
	// third part is message/rfc822 with it instead of the header.
	Message io.Reader
}

// MaxReportHeader bounds the original header quoted in a report.
const MaxReportHeader = 64 << 10

// ReadHeader returns the header of a message (up to the empty line),
// bounded by MaxReportHeader, for a report's third part.
func ReadHeader(r io.Reader) []byte {
	br := bufio.NewReader(io.LimitReader(r, MaxReportHeader))
	var b bytes.Buffer
	for {
		line, err := br.ReadBytes('\n')
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break
		}
		b.Write(line)
		if err != nil {
			if !bytes.HasSuffix(line, []byte("\n")) {
				b.WriteByte('\n')
			}
			break
		}
	}
	return b.Bytes()
}

// Delayed reports whether this is a delay warning rather than a bounce.
func (r *Report) Delayed() bool { return r.all(ActionDelayed) }

// Success reports whether this is a notice of delivery (NOTIFY=SUCCESS).
func (r *Report) Success() bool { return r.all(ActionDelivered, ActionRelayed) }

func (r *Report) all(actions ...string) bool {
	for _, rc := range r.Recipients {
		ok := false
		for _, a := range actions {
			ok = ok || rc.Action == a
		}
		if !ok {
			return false
		}
	}
	return true
}

// WriteTo writes the report as a message: RFC 3464 §2 multipart/report
// (RFC 6522) with report-type=delivery-status, a text/plain part for
// people, the message/delivery-status part, and the original header as
// text/rfc822-headers (RFC 6522 §4 allows the header alone), or the whole
// message as message/rfc822 when Message is set.
func (r *Report) WriteTo(w io.Writer) (int64, error) {
	var b bytes.Buffer
	boundary := "=_tern_" + r.QueueID + "_" + fmt.Sprint(r.Date.Unix())
	subject := "Undelivered Mail Returned to Sender"
	switch {
	case r.Delayed():
		subject = "Delayed Mail (still being retried)"
	case r.Success():
		subject = "Successful Mail Delivery Report"
	}
	fmt.Fprintf(&b, "From: Mail Delivery System <MAILER-DAEMON@%s>\n", r.ReportingMTA)
	fmt.Fprintf(&b, "To: %s\n", r.To)
	fmt.Fprintf(&b, "Subject: %s\n", subject)
	fmt.Fprintf(&b, "Date: %s\n", r.Date.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s>\n", r.MessageID)
	// RFC 3834 §5: an automatic response.
	fmt.Fprintf(&b, "Auto-Submitted: auto-replied\n")
	fmt.Fprintf(&b, "MIME-Version: 1.0\n")
	fmt.Fprintf(&b, "Content-Type: multipart/report; report-type=delivery-status;\n\tboundary=%q\n\n", boundary)
	fmt.Fprintf(&b, "This is a MIME-encapsulated message.\n\n--%s\n", boundary)
	fmt.Fprintf(&b, "Content-Description: Notification\nContent-Type: text/plain; charset=utf-8\n\n")
	r.writeHuman(&b)
	fmt.Fprintf(&b, "\n--%s\n", boundary)
	fmt.Fprintf(&b, "Content-Description: Delivery report\nContent-Type: message/delivery-status\n\n")
	r.writeStatus(&b)
	fmt.Fprintf(&b, "\n--%s\n", boundary)
	if r.Message == nil {
		fmt.Fprintf(&b, "Content-Description: Undelivered message header\nContent-Type: text/rfc822-headers\n\n")
		b.Write(r.Header)
		fmt.Fprintf(&b, "\n--%s--\n", boundary)
		n, err := w.Write(b.Bytes())
		return int64(n), err
	}
	fmt.Fprintf(&b, "Content-Description: Undelivered message\nContent-Type: message/rfc822\n\n")
	n, err := w.Write(b.Bytes())
	total := int64(n)
	if err != nil {
		return total, err
	}
	// The boundary begins "=_", which quoted-printable never makes and a
	// message's own boundaries do not use with our queue ID in it.
	c, err := io.Copy(w, r.Message)
	total += c
	if err != nil {
		return total, err
	}
	n, err = fmt.Fprintf(w, "\n--%s--\n", boundary)
	return total + int64(n), err
}

func (r *Report) writeHuman(b *bytes.Buffer) {
	fmt.Fprintf(b, "This is the mail system at host %s.\n\n", r.ReportingMTA)
	switch {
	case r.Success():
		fmt.Fprintf(b, "Your message (queue ID %s) was delivered to the recipients below,\n", r.QueueID)
		fmt.Fprintf(b, "or passed on to a mail system that does not report deliveries\n")
		fmt.Fprintf(b, "(\"relayed\"). You asked to be told.\n\n")
	case r.Delayed():
		fmt.Fprintf(b, "Your message (queue ID %s) could not be delivered yet to the\n", r.QueueID)
		fmt.Fprintf(b, "recipients below. It is still in the queue and will be tried again;\n")
		fmt.Fprintf(b, "you need not send it again. You will be told if it fails for good.\n\n")
	default:
		fmt.Fprintf(b, "Your message (queue ID %s) could not be delivered to the\n", r.QueueID)
		fmt.Fprintf(b, "recipients below. This is a permanent error; nothing more will be tried.\n")
		fmt.Fprintf(b, "The header of your message is attached.\n\n")
	}
	for _, rc := range r.Recipients {
		fmt.Fprintf(b, "<%s>: %s\n", rc.Final, textLine(rc.Diagnostic))
	}
}

// writeStatus writes the message/delivery-status body: per-message fields,
// then a block per recipient (RFC 3464 §2.2, §2.3).
func (r *Report) writeStatus(b *bytes.Buffer) {
	fmt.Fprintf(b, "Reporting-MTA: dns; %s\n", r.ReportingMTA)
	fmt.Fprintf(b, "X-Tern-Queue-ID: %s\n", r.QueueID)
	if r.EnvID != "" {
		// RFC 3464 §2.2.1, as the sender gave it (RFC 3461 §4.4).
		fmt.Fprintf(b, "Original-Envelope-Id: %s\n", textLine(r.EnvID))
	}
	if !r.Arrived.IsZero() {
		fmt.Fprintf(b, "Arrival-Date: %s\n", r.Arrived.Format(time.RFC1123Z))
	}
	for _, rc := range r.Recipients {
		b.WriteByte('\n')
		switch {
		case rc.OriginalType != "":
			// RFC 3464 §2.3.1: ORCPT as the sender gave it.
			fmt.Fprintf(b, "Original-Recipient: %s; %s\n", textLine(rc.OriginalType), textLine(rc.Original))
		case rc.Original != "" && rc.Original != rc.Final:
			fmt.Fprintf(b, "Original-Recipient: rfc822; %s\n", rc.Original)
		}
		fmt.Fprintf(b, "Final-Recipient: rfc822; %s\n", rc.Final)
		fmt.Fprintf(b, "Action: %s\n", rc.Action)
		fmt.Fprintf(b, "Status: %s\n", rc.Status)
		if rc.RemoteMTA != "" {
			// RFC 3464 §2.3.5.
			fmt.Fprintf(b, "Remote-MTA: dns; %s\n", textLine(rc.RemoteMTA))
		}
		// RFC 3464 §2.3.6: the diagnostic type names what the text comes
		// from: "smtp" for a remote server's own reply, "X-Unix" for a
		// local delivery agent's words, as Postfix and Sendmail write them.
		diagType := "X-Unix"
		if rc.DiagType == "smtp" {
			diagType = "smtp"
		}
		if rc.Action == ActionDelivered || rc.Action == ActionRelayed {
			if rc.DiagType == "smtp" {
				fmt.Fprintf(b, "Diagnostic-Code: smtp; %s\n", textLine(rc.Diagnostic))
			}
		} else {
			fmt.Fprintf(b, "Diagnostic-Code: %s; %s\n", diagType, textLine(rc.Diagnostic))
		}
		if !rc.LastAttempt.IsZero() {
			fmt.Fprintf(b, "Last-Attempt-Date: %s\n", rc.LastAttempt.Format(time.RFC1123Z))
		}
		if !rc.RetryUntil.IsZero() {
			fmt.Fprintf(b, "Will-Retry-Until: %s\n", rc.RetryUntil.Format(time.RFC1123Z))
		}
	}
}

// textLine makes text safe for a single header-like line: no controls,
// UTF-8 outside ASCII encoded (message/delivery-status is ASCII,
// RFC 3464 §2.1.2).
func textLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, strings.TrimSpace(s))
	if s == "" {
		s = "no answer"
	}
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return mime.QEncoding.Encode("utf-8", s)
		}
	}
	return s
}
