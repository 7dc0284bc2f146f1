package msgauth

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/tern-mail/tern/internal/resolver"
)

// A DNSRecord is a TXT record a domain should publish for mail from it
// to be trusted, and what DNS holds there today.
type DNSRecord struct {
	Kind  string // "DKIM", "SPF" or "DMARC"
	Name  string // owner name, without the final dot
	Value string // the record to publish

	State     RecordState
	Published []string // the records of Kind found at Name
	Err       error    // the lookup failure, for RecordUnknown
}

// RecordState says how DNS compares with a DNSRecord.
type RecordState int

const (
	RecordUnchecked RecordState = iota // not looked up
	RecordOK                           // published as it should be
	RecordMissing                      // no record of its kind at the name
	RecordDiffers                      // a record of its kind, but another one
	RecordUnknown                      // the lookup failed
)

func (s RecordState) String() string {
	return [...]string{"unchecked", "ok", "missing", "differs", "lookup failed"}[s]
}

// RecommendedRecords lists what domain should publish: a DKIM key record
// for every key of ours, an SPF record naming this host (hostname) and
// the domain's MX hosts, and a DMARC record.
func RecommendedRecords(confDir, domain, hostname string) ([]DNSRecord, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	keys, err := LoadSigningKeys(confDir, domain)
	if err != nil {
		return nil, err
	}
	var recs []DNSRecord
	for _, k := range keys {
		v, err := KeyRecord(k.Signer.Public())
		if err != nil {
			return nil, fmt.Errorf("DKIM key %s: %w", k.Path, err)
		}
		recs = append(recs, DNSRecord{Kind: "DKIM", Name: k.Selector + "._domainkey." + domain, Value: v})
	}
	// ~all rather than -all: DMARC, not SPF alone, is what should make
	// a receiver refuse, and forwarded mail fails SPF.
	spfValue := "v=spf1 mx ~all"
	if hostname != "" && !strings.EqualFold(hostname, domain) {
		spfValue = "v=spf1 a:" + strings.ToLower(hostname) + " mx ~all"
	}
	recs = append(recs,
		DNSRecord{Kind: "SPF", Name: domain, Value: spfValue},
		// quarantine, not reject, while the first reports show that
		// every sender of the domain signs or passes SPF.
		DNSRecord{Kind: "DMARC", Name: "_dmarc." + domain, Value: "v=DMARC1; p=quarantine; adkim=r; aspf=r"},
	)
	return recs, nil
}

// recordOfKind reports whether a TXT string is a record of kind (RFC 7208
// §4.5, RFC 7489 §6.6.3, RFC 6376 §3.6.1).
func recordOfKind(kind, txt string) bool {
	switch kind {
	case "SPF":
		l := strings.ToLower(txt)
		return l == "v=spf1" || strings.HasPrefix(l, "v=spf1 ")
	case "DMARC":
		return strings.HasPrefix(txt, "v=DMARC1")
	}
	// A DKIM key record need not start with v=DKIM1.
	return strings.Contains(txt, "p=")
}

// CompareDNS looks each record up and sets its State. A DKIM record is
// OK when the key (p=) is the same; SPF and DMARC records only when the
// text is, as the domain's owner may publish more than tern suggests.
func CompareDNS(ctx context.Context, r resolver.Resolver, recs []DNSRecord) {
	for i := range recs {
		rec := &recs[i]
		txts, _, err := resolver.LookupTXT(ctx, r, rec.Name)
		if err != nil && !resolver.IsNotFound(err) {
			rec.State, rec.Err = RecordUnknown, err
			continue
		}
		rec.Published = nil
		for _, t := range txts {
			if recordOfKind(rec.Kind, t) {
				rec.Published = append(rec.Published, t)
			}
		}
		switch {
		case len(rec.Published) == 0:
			rec.State = RecordMissing
		case len(rec.Published) == 1 && sameRecord(rec.Kind, rec.Published[0], rec.Value):
			rec.State = RecordOK
		default:
			rec.State = RecordDiffers
		}
	}
}

func sameRecord(kind, published, want string) bool {
	if kind == "DKIM" {
		return keyTag(published) == keyTag(want) && keyTag(want) != ""
	}
	return strings.Join(strings.Fields(published), " ") == want
}

// keyTag returns the p= value of a DKIM key record, white space removed
// (RFC 6376 §3.6.1: base64 may hold FWS).
func keyTag(rec string) string {
	for _, tag := range strings.Split(rec, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(tag), "=")
		if ok && strings.TrimSpace(k) == "p" {
			return strings.Join(strings.Fields(v), "")
		}
	}
	return ""
}

// WriteZone writes recs as zone-file lines, long values cut into the
// 255-byte strings one TXT record holds (RFC 1035 §3.3.14), each line
// followed by a comment with its state when it was checked.
func WriteZone(w io.Writer, recs []DNSRecord) error {
	for _, rec := range recs {
		var q []string
		for v := rec.Value; v != ""; {
			n := min(len(v), 255)
			q = append(q, `"`+v[:n]+`"`)
			v = v[n:]
		}
		if _, err := fmt.Fprintf(w, "%s. 3600 IN TXT %s\n", rec.Name, strings.Join(q, " ")); err != nil {
			return err
		}
		var note string
		switch rec.State {
		case RecordUnchecked:
			continue
		case RecordUnknown:
			note = fmt.Sprintf("; %s: %s: %v", rec.Kind, rec.State, rec.Err)
		case RecordDiffers:
			note = fmt.Sprintf("; %s: %s: published %q", rec.Kind, rec.State, strings.Join(rec.Published, `" and "`))
		default:
			note = fmt.Sprintf("; %s: %s", rec.Kind, rec.State)
		}
		if _, err := fmt.Fprintln(w, note); err != nil {
			return err
		}
	}
	return nil
}
