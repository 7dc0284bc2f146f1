package msgauth

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"

	"github.com/tern-mail/tern/internal/resolver"
)

// DMARCVerdict is the DMARC result for the RFC 5322 From domain and the
// policy its owner asks receivers to apply.
type DMARCVerdict struct {
	Result authres.ResultValue // pass, fail, none, temperror or permerror
	From   string              // the From domain
	// Policy is what to do with the message (RFC 7489 §6.6.4): none
	// unless Result is fail, and already lowered when pct sampled it out.
	Policy dmarc.Policy
	// Published is the record's policy for this domain (p=, or sp= for
	// a subdomain of the organisational domain), before pct.
	Published dmarc.Policy
	Reason    string
}

// fromDomain returns the one domain of the From field (RFC 7489 §6.6.1:
// a message with no From, several, or authors from several domains has
// no single identity to check).
func fromDomain(h textproto.Header) (string, error) {
	if n := len(h.Values("From")); n != 1 {
		if n == 0 {
			return "", errors.New("no From field")
		}
		return "", errors.New("more than one From field")
	}
	addrs, err := (&mail.Header{Header: message.Header{Header: h}}).AddressList("From")
	if err != nil || len(addrs) == 0 {
		return "", errors.New("the From field holds no address")
	}
	var domain string
	for _, a := range addrs {
		at := strings.LastIndexByte(a.Address, '@')
		if at < 0 || at == len(a.Address)-1 {
			return "", errors.New("the From address has no domain")
		}
		d := strings.ToLower(strings.TrimSuffix(a.Address[at+1:], "."))
		if domain != "" && d != domain {
			return "", errors.New("the From field holds authors of several domains")
		}
		domain = d
	}
	return domain, nil
}

// OrganizationalDomain is RFC 7489 §3.2's organisational domain: the
// public suffix of domain and one label more, or domain itself when it is
// a public suffix.
func OrganizationalDomain(domain string) string {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	org, err := publicsuffix.EffectiveTLDPlusOne(domain)
	if err != nil {
		return domain
	}
	return org
}

// aligned reports identifier alignment (RFC 7489 §3.1): the same domain
// in strict mode, the same organisational domain in relaxed mode.
func aligned(mode dmarc.AlignmentMode, from, authenticated string) bool {
	authenticated = strings.ToLower(strings.TrimSuffix(authenticated, "."))
	if authenticated == "" {
		return false
	}
	if mode == dmarc.AlignmentStrict {
		return authenticated == from
	}
	return OrganizationalDomain(authenticated) == OrganizationalDomain(from)
}

// lookupDMARC finds the DMARC record for a From domain (RFC 7489 §6.6.3):
// at _dmarc.DOMAIN, else at _dmarc.ORGDOMAIN. sub is set when the record
// came from the organisational domain, so sp= applies.
func (c *Checker) lookupDMARC(ctx context.Context, from string) (rec *dmarc.Record, sub bool, result authres.ResultValue, reason string) {
	names := []string{from}
	if org := OrganizationalDomain(from); org != from {
		names = append(names, org)
	}
	for i, name := range names {
		txts, _, err := resolver.LookupTXT(ctx, c.Resolver, "_dmarc."+name)
		if err != nil && !resolver.IsNotFound(err) {
			if resolver.IsTemporary(err) {
				return nil, false, authres.ResultTempError, "DNS lookup of _dmarc." + name + " failed"
			}
			return nil, false, authres.ResultPermError, err.Error()
		}
		var recs []string
		for _, t := range txts {
			// RFC 7489 §6.6.3 step 3: records not starting with
			// "v=DMARC1" are discarded.
			if strings.HasPrefix(t, "v=DMARC1") {
				recs = append(recs, t)
			}
		}
		switch len(recs) {
		case 0:
			continue
		case 1:
		default:
			// Step 4: more than one record means no policy.
			return nil, false, authres.ResultNone, "several DMARC records at _dmarc." + name
		}
		r, err := dmarc.Parse(recs[0])
		if err != nil {
			// §6.6.3 step 6 would fall back to the organisational
			// domain only for a missing record; a broken one is the
			// owner's error.
			return nil, false, authres.ResultPermError, "DMARC record of " + name + ": " + err.Error()
		}
		return r, i > 0, "", ""
	}
	return nil, false, authres.ResultNone, "no DMARC record"
}

// checkDMARC evaluates RFC 7489 §4.2 for the From domain: pass when SPF
// or a DKIM signature passed for an aligned domain.
func (c *Checker) checkDMARC(ctx context.Context, from string, spfV SPFVerdict, dkimVs []DKIMVerdict) DMARCVerdict {
	v := DMARCVerdict{From: from, Policy: dmarc.PolicyNone}
	rec, sub, result, reason := c.lookupDMARC(ctx, from)
	if rec == nil {
		v.Result, v.Reason = result, reason
		return v
	}
	v.Published = rec.Policy
	if sub && rec.SubdomainPolicy != "" {
		v.Published = rec.SubdomainPolicy
	}
	// RFC 7489 §4.1: SPF's identity is MAIL FROM, or HELO for the null
	// sender, which checkSPF already chose.
	if spfV.Result == "pass" && aligned(rec.SPFAlignment, from, spfV.Domain) {
		v.Result, v.Reason = authres.ResultPass, "aligned SPF pass"
		return v
	}
	for _, d := range dkimVs {
		if d.Result == authres.ResultPass && aligned(rec.DKIMAlignment, from, d.Domain) {
			v.Result, v.Reason = authres.ResultPass, "aligned DKIM pass"
			return v
		}
	}
	// No aligned pass. When an aligned check could not finish for a DNS
	// failure, it might have passed: a temperror, so that the message is
	// retried rather than refused (RFC 7489 §6.6.2 leaves this to the
	// receiver; losing mail to a DNS outage is never our choice).
	if spfV.Result == "temperror" && aligned(rec.SPFAlignment, from, spfV.Domain) {
		v.Result, v.Reason = authres.ResultTempError, "SPF temperror"
		return v
	}
	for _, d := range dkimVs {
		if d.Result == authres.ResultTempError && aligned(rec.DKIMAlignment, from, d.Domain) {
			v.Result, v.Reason = authres.ResultTempError, "DKIM temperror"
			return v
		}
	}
	v.Result = authres.ResultFail
	v.Policy = v.Published
	if rec.Percent != nil && *rec.Percent < 100 && c.sample() >= *rec.Percent {
		// §6.6.4: a message sampled out gets the next policy down.
		switch v.Policy {
		case dmarc.PolicyReject:
			v.Policy = dmarc.PolicyQuarantine
		case dmarc.PolicyQuarantine:
			v.Policy = dmarc.PolicyNone
		}
	}
	v.Reason = "p=" + string(v.Policy)
	return v
}

func (c *Checker) sample() int {
	if c.Sample != nil {
		return c.Sample()
	}
	return rand.IntN(100)
}
