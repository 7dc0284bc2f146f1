package enqueue

import (
	"strings"

	"github.com/tern-mail/tern/internal/sysexit"
	"github.com/tern-mail/tern/mta"
	"github.com/tern-mail/tern/mta/transport"
)

// Recipient is one envelope recipient with the parameters RFC 3461 lets
// an SMTP client give it.
type Recipient struct {
	Addr   string
	Notify transport.Notify // RFC 3461 §4.1; 0 when none was given
	ORcpt  string           // RFC 3461 §4.2 as "addr-type;address", decoded; "" for none
}

// maxRecipientArg bounds a recipient argument: an RCPT TO line is at most
// 512 octets (RFC 5321 §4.5.3.1.4), and tern-smtpd takes lines of 1000.
const maxRecipientArg = 1000

// ParseRecipient reads a recipient argument: an address, or, in one
// argument, RCPT TO's forward-path and its DSN parameters as an SMTP
// client writes them (RFC 3461 §4.1, §4.2), which is how tern-smtpd hands
// them to an enqueue program:
//
//	<bob@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.org
//
// ORCPT's address is xtext (RFC 3461 §4), whatever its type. Parameter
// names are read in any case, each at most once.
func ParseRecipient(arg string) (Recipient, error) {
	if len(arg) > maxRecipientArg {
		return Recipient{}, sysexit.New(sysexit.Usage, "recipient argument longer than %d octets", maxRecipientArg)
	}
	if !strings.HasPrefix(arg, "<") {
		return Recipient{Addr: arg}, nil
	}
	end := pathEnd(arg)
	if end < 0 {
		return Recipient{}, sysexit.New(sysexit.Usage, "recipient argument %q: no > after the address", arg)
	}
	r := Recipient{Addr: arg[1:end]}
	rest := arg[end+1:]
	if rest != "" && rest[0] != ' ' {
		return Recipient{}, sysexit.New(sysexit.Usage, "recipient argument %q: a blank must follow the address", arg)
	}
	seen := map[string]bool{}
	for _, p := range strings.Fields(rest) {
		key, val, ok := strings.Cut(p, "=")
		key = strings.ToUpper(key)
		if !ok || val == "" {
			return Recipient{}, sysexit.New(sysexit.Usage, "recipient argument %q: %q is not NAME=VALUE", arg, p)
		}
		if seen[key] {
			return Recipient{}, sysexit.New(sysexit.Usage, "recipient argument %q: %s twice", arg, key)
		}
		seen[key] = true
		switch key {
		case "NOTIFY":
			n, err := transport.ParseNotify(val)
			if err != nil {
				return Recipient{}, sysexit.New(sysexit.Usage, "recipient argument %q: %v", arg, err)
			}
			r.Notify = n
		case "ORCPT":
			typ, xaddr, _ := strings.Cut(val, ";")
			addr, err := mta.DecodeXtext(xaddr)
			if err == nil {
				r.ORcpt, err = mta.CheckORcpt(typ + ";" + addr)
			}
			if err != nil {
				return Recipient{}, sysexit.New(sysexit.Usage, "recipient argument %q: %v", arg, err)
			}
		default:
			return Recipient{}, sysexit.New(sysexit.Usage, "recipient argument %q: unknown parameter %s (only NOTIFY and ORCPT)", arg, key)
		}
	}
	return r, nil
}

// pathEnd finds the ">" that closes a forward-path starting at s[0]: the
// first outside a quoted local part (RFC 5321 §4.1.2); -1 if none.
func pathEnd(s string) int {
	quoted := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case c == '>' && !quoted:
			return i
		}
	}
	return -1
}

// Arg writes r as ParseRecipient reads it: the bare address when it has
// no parameters, which any enqueue program understands.
func (r Recipient) Arg() string {
	if r.Notify == 0 && r.ORcpt == "" {
		return r.Addr
	}
	var b strings.Builder
	b.WriteString("<" + r.Addr + ">")
	if r.Notify != 0 {
		b.WriteString(" NOTIFY=" + r.Notify.String())
	}
	if r.ORcpt != "" {
		typ, addr, _ := strings.Cut(r.ORcpt, ";")
		b.WriteString(" ORCPT=" + typ + ";" + mta.EncodeXtext(addr))
	}
	return b.String()
}

// check refuses parameters the queue would not keep.
func (r Recipient) check() error {
	if r.ORcpt != "" {
		if _, err := mta.CheckORcpt(r.ORcpt); err != nil {
			return sysexit.New(sysexit.Usage, "recipient %s: %v", r.Addr, err)
		}
	}
	if r.Notify != 0 {
		if _, err := transport.ParseNotify(r.Notify.String()); err != nil {
			return sysexit.New(sysexit.Usage, "recipient %s: %v", r.Addr, err)
		}
	}
	return nil
}
