package conf

import (
	"errors"
	"strings"

	"github.com/tern-mail/tern/internal/auth"
)

// RecipientDelimiter separates a user from a subaddress: mail to
// bob+lists@example.org goes to bob when there is no bob+lists (RFC 5233).
const RecipientDelimiter = "+"

// ErrNoUser is returned by LookupUser for a local address with no account
// and no alias; SMTP answers 550 5.1.1, delivery exits 67.
var ErrNoUser = errors.New("no such user")

// ErrNotLocal is returned by LookupUser for an address in a domain not
// delivered here.
var ErrNotLocal = errors.New("domain is not local")

// Recipient is a local address resolved to an account or an alias.
type Recipient struct {
	Local   string        // the local part as found, without the subaddress
	Detail  string        // the subaddress after '+', if any
	Domain  string        // lower-cased; "" for a bare name
	Account *auth.Account // set when the address is a user
	Alias   *Alias        // set when the address is an alias
}

// IsLocalDomain reports whether mail for domain is delivered here: a name
// in the domains file, this host's name, or "localhost" (as Postfix's
// mydestination has them by default).
func (c *Conf) IsLocalDomain(domain string) bool {
	d, err := normalizeDomain(domain)
	if err != nil {
		return false
	}
	return d == c.Hostname || d == "localhost" || c.Domains[d]
}

// LookupUser resolves "user@domain" or a bare "user". The domain must be
// local. In order, the first that exists wins: the user "user@domain",
// the alias "user@domain", the user "user", the alias "user"; and then the
// same again without a "+detail" subaddress. Case is ignored.
func (c *Conf) LookupUser(addr string) (*Recipient, error) {
	local, domain := addr, ""
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		local, domain = addr[:i], strings.ToLower(strings.TrimSuffix(addr[i+1:], "."))
		if !c.IsLocalDomain(domain) {
			return nil, ErrNotLocal
		}
	}
	if local == "" {
		return nil, ErrNoUser
	}
	if r := c.find(local, domain); r != nil {
		return r, nil
	}
	if base, detail, ok := strings.Cut(local, RecipientDelimiter); ok && base != "" {
		if r := c.find(base, domain); r != nil {
			r.Detail = detail
			return r, nil
		}
	}
	return nil, ErrNoUser
}

func (c *Conf) find(local, domain string) *Recipient {
	lower := strings.ToLower(local)
	names := []string{lower}
	if domain != "" {
		names = []string{lower + "@" + domain, lower}
	}
	for _, n := range names {
		if e, ok := c.Users.Exact(n); ok {
			return &Recipient{Local: local, Domain: domain, Account: e.Account()}
		}
		if al, ok := c.Aliases[n]; ok {
			return &Recipient{Local: local, Domain: domain, Alias: al}
		}
	}
	return nil
}
