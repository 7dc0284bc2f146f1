package smtpclient

import (
	"strconv"
	"strings"
)

// Extensions is what a server's EHLO reply offers (RFC 5321 §4.1.1.1:
// ehlo-line = ehlo-keyword *( SP ehlo-param )). Keywords not listed here
// are ignored.
type Extensions struct {
	EHLO bool // the server answered EHLO; false after a HELO fallback
	// Size is the SIZE limit in octets (RFC 1870 §4); 0 with SizeOffered
	// means the server declares no fixed limit.
	Size                int64
	SizeOffered         bool
	Pipelining          bool     // RFC 2920
	EightBitMIME        bool     // RFC 6152
	SMTPUTF8            bool     // RFC 6531
	DSN                 bool     // RFC 3461
	StartTLS            bool     // RFC 3207
	RequireTLS          bool     // RFC 8689
	EnhancedStatusCodes bool     // RFC 2034
	Auth                []string // RFC 4954 mechanisms, upper-case
	// RcptMax is LIMITS RCPTMAX (RFC 9422 §4.2): the recipients one
	// transaction may have; 0 when not said.
	RcptMax int
}

// maxAuthMechs bounds the AUTH mechanisms kept from one EHLO reply.
const maxAuthMechs = 32

// parseEHLO reads the keyword lines of an EHLO reply; the first line is
// the greeting and carries none.
func parseEHLO(r Reply) Extensions {
	ext := Extensions{EHLO: true}
	if len(r.Lines) < 2 {
		return ext
	}
	for _, line := range r.Lines[1:] {
		kw, params, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch strings.ToUpper(kw) {
		case "SIZE":
			ext.SizeOffered = true
			// RFC 1870 §4: an absent or zero parameter means no fixed limit;
			// a parameter that is not a number is treated the same way.
			if n, err := strconv.ParseInt(strings.TrimSpace(params), 10, 64); err == nil && n > 0 {
				ext.Size = n
			}
		case "PIPELINING":
			ext.Pipelining = true
		case "8BITMIME":
			ext.EightBitMIME = true
		case "SMTPUTF8":
			ext.SMTPUTF8 = true
		case "DSN":
			ext.DSN = true
		case "STARTTLS":
			ext.StartTLS = true
		case "REQUIRETLS":
			ext.RequireTLS = true
		case "ENHANCEDSTATUSCODES":
			ext.EnhancedStatusCodes = true
		case "AUTH":
			ext.Auth = addMechs(ext.Auth, params)
		case "LIMITS":
			for _, l := range strings.Fields(params) {
				if k, v, ok := strings.Cut(l, "="); ok && strings.EqualFold(k, "RCPTMAX") {
					if n, err := strconv.Atoi(v); err == nil && n > 0 {
						ext.RcptMax = n
					}
				}
			}
		default:
			// Old servers write "AUTH=LOGIN PLAIN" (before RFC 4954).
			if k, v, ok := strings.Cut(kw, "="); ok && strings.EqualFold(k, "AUTH") {
				ext.Auth = addMechs(ext.Auth, v+" "+params)
			}
		}
	}
	return ext
}

func addMechs(have []string, params string) []string {
	for _, m := range strings.Fields(params) {
		if len(have) == maxAuthMechs {
			break
		}
		m = strings.ToUpper(m)
		dup := false
		for _, h := range have {
			dup = dup || h == m
		}
		if !dup {
			have = append(have, m)
		}
	}
	return have
}

// HasAuth reports whether the server offers the SASL mechanism mech.
func (e Extensions) HasAuth(mech string) bool {
	for _, m := range e.Auth {
		if strings.EqualFold(m, mech) {
			return true
		}
	}
	return false
}
