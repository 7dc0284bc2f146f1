// Package route finds the hosts that mail for a domain goes to: the routes
// file's entry, else the domain's MX records (RFC 5321 §5.1), with the
// addresses of each host in the order to try them.
package route

import (
	"net/netip"
)

// Target is one host to try, in order.
type Target struct {
	Host  string       // the MX or route host name, lower-case, A-labels; "" for an address literal
	Addrs []netip.Addr // its addresses in the order to try them
	Port  int          // the port to connect to
	// Err is set when the host's addresses could not be looked up (a
	// temporary DNS failure): the next target is tried, and if none could
	// be reached the delivery is deferred.
	Err error
}

// Error is a routing failure that decides a recipient's fate without a
// connection: no such domain (5.1.2), a null MX (5.1.10), an MX pointing
// back at this host (5.4.6), or a temporary DNS failure (4.4.3).
type Error struct {
	Status    string // RFC 3463 enhanced status code
	Temporary bool
	Msg       string
}

func (e *Error) Error() string { return e.Msg }
