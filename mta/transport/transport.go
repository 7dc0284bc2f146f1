// Package transport is the seam between tern-queue's scheduler and the
// ways a message leaves the queue. The runner routes each recipient to a
// Hop, groups the recipients of one message by hop, and hands each group to
// the hop's Transport, which answers once per recipient. Local delivery
// (tern-deliver as the account) and SMTP to the next hop are its two
// implementations.
//
// Why it is built this way (maddy's delivery targets, mox's queue): routing
// decides where, a transport only delivers, and a result nobody classified
// is temporary. A transport never touches the queue: the runner holds no
// entry lock while a transport runs, and records the results afterwards.
package transport

import (
	"context"
	"io"

	"github.com/tern-mail/tern/internal/conf"
)

// Notify is RFC 3461's NOTIFY parameter as a set; zero means the client
// gave none (the default: failure and delay, RFC 3461 §4.1).
type Notify uint8

// NOTIFY keywords. Never excludes the others.
const (
	NotifyNever Notify = 1 << iota
	NotifySuccess
	NotifyFailure
	NotifyDelay
)

// Message is what a transport needs of one queued message: its text and
// what the SMTP conversation that brought it said about it.
type Message struct {
	ID     string // the queue ID, for logs
	Sender string // the envelope sender; "" is the null sender
	Size   int64  // the text's size as stored (LF line ends)
	// Open returns the text from its first byte, with LF line ends, as the
	// queue stores it; a transport converts to CRLF and dot-stuffs as its
	// protocol needs.
	Open       func() (io.ReadCloser, error)
	SMTPUTF8   bool   // RFC 6531: the sender asked for SMTPUTF8
	Body       string // RFC 6152 BODY= as received: "", "7BIT" or "8BITMIME"
	EightBit   bool   // the text has an octet over 127 (found at intake)
	EnvID      string // RFC 3461 ENVID, decoded from xtext; "" if none
	Ret        string // RFC 3461 RET: "FULL", "HDRS" or ""
	RequireTLS bool   // RFC 8689 REQUIRETLS
}

// Recipient is one envelope recipient handed to a transport.
type Recipient struct {
	Addr   string
	Notify Notify // RFC 3461 NOTIFY; 0 when not given
	ORcpt  string // RFC 3461 ORCPT as "addr-type;address", decoded from xtext; "" if none
	// Parent is the alias this recipient was expanded from, or "". The
	// local transport runs an alias's "|command" and "/path/" targets
	// for it, with the alias as RECIPIENT.
	Parent string
}

// Kind names a transport.
type Kind string

// The transports.
const (
	Local Kind = "local" // tern-deliver, as the account
	SMTP  Kind = "smtp"  // SMTP to the next hop: a route's host, else the domain's MX
)

// Hop is where a group of recipients goes next.
type Hop struct {
	Kind Kind
	// Key names the destination for per-destination concurrency and
	// back-off: "smtp:example.org" for a domain's MX hosts, or the route's
	// host for a static route, so that every domain sent through one
	// smarthost shares its limit.
	Key string
	// Domain is the recipients' domain (SMTP): what the MX lookup is for.
	Domain string
	// Route is the routes file's entry for Domain, or nil to look up MX.
	Route *conf.Route
}

// Result is a transport's answer for one recipient.
type Result struct {
	Status    string // RFC 3463 enhanced status code, such as "2.0.0" or "5.1.1"
	Temporary bool   // try again later; a failure nobody classified is temporary
	Answer    string // one line: the remote server's own words, or the agent's
	Reply     int    // the SMTP reply code (RFC 5321 §4.2), 0 where there was none
	RemoteMTA string // "mx.example.org[192.0.2.7]:25"; "" for local delivery
	DiagType  string // RFC 3464 §2.3.6 diagnostic type: "smtp" or "X-Unix"
	TLS       string // the TLS version the answer came over ("TLSv1.3"), or ""
	// Relayed is set on a delivered recipient when the next hop did not
	// offer DSN, so a NOTIFY=SUCCESS recipient gets a "relayed" notice
	// from us (RFC 3461 §4.2).
	Relayed bool
	// Unreachable is set when the failure was reaching the destination at
	// all (no host answered, or every host failed before MAIL), not this
	// message: the runner backs the whole destination off.
	Unreachable bool
}

// Delivered reports whether the recipient is done with success.
func (r Result) Delivered() bool { return !r.Temporary && len(r.Status) > 0 && r.Status[0] == '2' }

// Transport delivers one message to a group of recipients that share a
// hop, and returns one result per recipient, in order.
type Transport interface {
	Deliver(ctx context.Context, m *Message, hop Hop, rcpts []Recipient) []Result
}
