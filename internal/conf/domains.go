package conf

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// Domains is the set of domains whose mail is delivered on this host,
// lower-cased, without a trailing dot.
type Domains map[string]bool

// ParseDomains reads the domains file: one domain a line.
func ParseDomains(file string, r io.Reader) (Domains, error) {
	ls, err := lines(file, r)
	if err != nil {
		return nil, err
	}
	d := Domains{}
	for _, l := range ls {
		name, err := normalizeDomain(l.text)
		if err != nil {
			return nil, lineErr(file, l.n, "%v", err)
		}
		d[name] = true
	}
	return d, nil
}

// Contains reports whether domain is in the set, ignoring case and a
// trailing dot.
func (d Domains) Contains(domain string) bool {
	name, err := normalizeDomain(domain)
	return err == nil && d[name]
}

// normalizeDomain checks a domain name and returns it lower-cased without
// a trailing dot. Names are compared in their ASCII form: internationalized
// names are written as A-labels ("xn--bcher-kva.example", RFC 5890 §2.3.2.1),
// since a U-label has more than one spelling and the ASCII form is what
// DNS and most SMTP clients send.
func normalizeDomain(s string) (string, error) {
	name := strings.ToLower(strings.TrimSuffix(s, "."))
	if name == "" {
		return "", errors.New("empty domain name")
	}
	if len(name) > 253 {
		return "", fmt.Errorf("domain %.40q... longer than 253 bytes", s)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return "", fmt.Errorf("domain %q: empty label or one longer than 63 bytes", s)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			case c == '-' && i > 0 && i < len(label)-1:
			case c == '_': // seen in real host names; harmless here
			case c >= 0x80:
				return "", fmt.Errorf("domain %q is not ASCII: write it as an A-label (xn--...)", s)
			default:
				return "", fmt.Errorf("domain %q: character %q not allowed", s, c)
			}
		}
	}
	return name, nil
}
