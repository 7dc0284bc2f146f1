// Package msgauth gives a received message its sender-authentication
// verdicts, SPF (RFC 7208), DKIM (RFC 6376, RFC 8463) and DMARC (RFC 7489),
// and writes them as one Authentication-Results field (RFC 8601); it also
// signs outgoing mail with DKIM.
//
// The protocol work is the libraries' (blitiri.com.ar/go/spf,
// github.com/emersion/go-msgauth's dkim, dmarc and authres); what is ours
// is the DNS (every lookup through internal/resolver, so a broken DNS is a
// temperror and never a lost message), DMARC's policy discovery and
// identifier alignment, which go-msgauth leaves to its caller, and the
// bounds: lookups counted, signatures capped, the whole check timed.
package msgauth

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-msgauth/dmarc"

	"github.com/tern-mail/tern/internal/resolver"
)

// Envelope is what the SMTP conversation says about a message.
type Envelope struct {
	RemoteIP netip.Addr // the client's address
	Helo     string     // the EHLO or HELO argument
	MailFrom string     // the MAIL FROM address, "" for the null sender
}

// Checker computes verdicts. Its zero value is not usable: Resolver and
// AuthServID are needed.
type Checker struct {
	Resolver   resolver.Resolver
	AuthServID string           // this host's name, the authserv-id (RFC 8601 §2.5)
	Now        func() time.Time // nil: time.Now
	// Timeout bounds the whole check; 0 means DefaultTimeout.
	Timeout time.Duration
	// MaxSignatures is how many DKIM-Signature fields are verified; the
	// rest are ignored. 0 means DefaultMaxSignatures.
	MaxSignatures int
	// Sample returns a number from 0 to 99 for DMARC's pct= (RFC 7489
	// §6.6.4); nil: a random one.
	Sample func() int
}

const (
	// DefaultTimeout is RFC 7208 §4.6.4's "at least 20 seconds" for SPF,
	// which DKIM and DMARC, asked at the same time, share.
	DefaultTimeout = 20 * time.Second
	// DefaultMaxSignatures bounds the work one message can ask of us
	// (RFC 6376 §8.4: signatures are a denial-of-service vector).
	DefaultMaxSignatures = 5
)

// Verdict is the outcome of every check on one message.
type Verdict struct {
	SPF   SPFVerdict
	DKIM  []DKIMVerdict // one per signature verified; empty: none
	DMARC DMARCVerdict
}

// SPFVerdict is the SPF result for the MAIL FROM identity, or for HELO
// when the sender is null (RFC 7208 §2.3, §2.4).
type SPFVerdict struct {
	Result   spf.Result
	Domain   string // the domain checked
	Identity string // "mailfrom" or "helo" (RFC 8601 §2.7.2)
	Reason   string
}

// DKIMVerdict is one signature's result (RFC 8601 §2.7.1).
type DKIMVerdict struct {
	Result     authres.ResultValue
	Domain     string // d=
	Identifier string // i=, or "@" and d= when absent
	Reason     string
}

func (c *Checker) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Check computes the verdicts for a message: env from the SMTP
// conversation, msg the message as received (header and body, CRLF or LF
// line ends). Only a failure to read msg is an error; every DNS or
// syntax trouble is a verdict.
func (c *Checker) Check(ctx context.Context, env Envelope, msg io.Reader) (*Verdict, error) {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// SPF needs only the envelope: it asks the DNS while the message is
	// read and its signatures checked.
	spfc := make(chan SPFVerdict, 1)
	go func() { spfc <- c.checkSPF(ctx, env) }()

	// The header is kept to be read twice: for DMARC's From here, and
	// by the DKIM verifier, which wants the whole message as a stream.
	src := &readRecorder{r: msg}
	br := bufio.NewReader(src)
	raw, err := readHeaderBytes(br)
	if err != nil {
		cancel()
		<-spfc
		return nil, err
	}
	hdr, hdrErr := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
	dkimVs, dkimErr := c.verifyDKIM(ctx, io.MultiReader(bytes.NewReader(raw), br))
	v := &Verdict{SPF: <-spfc, DKIM: dkimVs}
	if src.err != nil {
		return nil, fmt.Errorf("read message: %w", src.err)
	}
	if dkimErr != nil {
		// Not a signature's fault: a header the verifier cannot read.
		v.DKIM = []DKIMVerdict{{Result: authres.ResultPermError, Reason: "unreadable header"}}
	}
	var from string
	if hdrErr == nil {
		from, hdrErr = fromDomain(hdr)
	}
	if hdrErr != nil {
		v.DMARC = DMARCVerdict{Result: authres.ResultPermError, Policy: dmarc.PolicyNone, Reason: hdrErr.Error()}
	} else {
		v.DMARC = c.checkDMARC(ctx, from, v.SPF, v.DKIM)
	}
	return v, nil
}

// checkSPF runs RFC 7208 check_host() for MAIL FROM, or for HELO when
// the sender is null (§2.4: then the sender is postmaster@HELO).
func (c *Checker) checkSPF(ctx context.Context, env Envelope) SPFVerdict {
	sender, identity := env.MailFrom, "mailfrom"
	if sender == "" {
		sender, identity = "postmaster@"+env.Helo, "helo"
	}
	domain := sender[strings.LastIndexByte(sender, '@')+1:]
	if domain == "" || !env.RemoteIP.IsValid() {
		return SPFVerdict{Result: spf.None, Domain: domain, Identity: identity, Reason: "no domain to check"}
	}
	res, err := spf.CheckHostWithSender(net.IP(env.RemoteIP.Unmap().AsSlice()), env.Helo, sender,
		spf.WithContext(ctx), spf.WithResolver(spfResolver{c.Resolver}))
	v := SPFVerdict{Result: res, Domain: strings.ToLower(domain), Identity: identity}
	if err != nil && res != spf.Pass && res != spf.None {
		v.Reason = err.Error()
	}
	return v
}

// verifyDKIM checks every DKIM-Signature, up to MaxSignatures.
func (c *Checker) verifyDKIM(ctx context.Context, msg io.Reader) ([]DKIMVerdict, error) {
	maxSigs := c.MaxSignatures
	if maxSigs == 0 {
		maxSigs = DefaultMaxSignatures
	}
	vs, err := dkim.VerifyWithOptions(msg, &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			txts, _, err := resolver.LookupTXT(ctx, c.Resolver, name)
			return txts, netError(err, name)
		},
		MaxVerifications: maxSigs,
	})
	if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
		return nil, err
	}
	now := c.now()
	out := make([]DKIMVerdict, 0, len(vs))
	for _, v := range vs {
		dv := DKIMVerdict{Domain: strings.ToLower(v.Domain), Identifier: v.Identifier}
		switch {
		case v.Err == nil && !v.Expiration.IsZero() && now.After(v.Expiration):
			// RFC 6376 §3.5 x=: our clock, not the library's, decides.
			dv.Result, dv.Reason = authres.ResultFail, "signature expired"
		case v.Err == nil:
			dv.Result = authres.ResultPass
		case !v.Expiration.IsZero() && now.After(v.Expiration):
			dv.Result, dv.Reason = authres.ResultFail, "signature expired"
		case dkim.IsTempFail(v.Err):
			dv.Result, dv.Reason = authres.ResultTempError, v.Err.Error()
		case dkim.IsPermFail(v.Err):
			dv.Result, dv.Reason = authres.ResultPermError, v.Err.Error()
		default:
			// The signature or the body hash did not verify.
			dv.Result, dv.Reason = authres.ResultFail, v.Err.Error()
		}
		out = append(out, dv)
	}
	return out, nil
}

// netError turns a resolver error into the *net.DNSError both libraries
// classify by (go-msgauth by Temporary(), spf by IsNotFound and
// IsTemporary), so the kind decides and never the text.
func netError(err error, name string) error {
	if err == nil {
		return nil
	}
	e := &net.DNSError{Err: err.Error(), Name: name}
	if resolver.IsNotFound(err) {
		e.IsNotFound = true
	} else {
		e.IsTemporary = resolver.IsTemporary(err)
	}
	return e
}

// spfResolver is the spf package's resolver over tern's.
type spfResolver struct{ r resolver.Resolver }

func (s spfResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	txts, _, err := resolver.LookupTXT(ctx, s.r, name)
	return txts, netError(err, name)
}

func (s spfResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	mxs, _, err := resolver.LookupMX(ctx, s.r, name)
	if err != nil {
		return nil, netError(err, name)
	}
	out := make([]*net.MX, 0, len(mxs))
	for _, mx := range mxs {
		out = append(out, &net.MX{Host: mx.Host + ".", Pref: mx.Pref})
	}
	return out, nil
}

func (s spfResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	addrs, _, err := resolver.LookupIP(ctx, s.r, host)
	if err != nil {
		return nil, netError(err, host)
	}
	out := make([]net.IPAddr, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, net.IPAddr{IP: net.IP(a.AsSlice())})
	}
	return out, nil
}

func (s spfResolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: err.Error(), Name: addr}
	}
	names, _, err := resolver.LookupPTR(ctx, s.r, ip)
	if err != nil {
		return nil, netError(err, addr)
	}
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = n + "."
	}
	return out, nil
}

// Field returns the Authentication-Results field for v, name and value,
// ending in CRLF, as this host (authservID) writes it (RFC 8601 §2.2).
func (v *Verdict) Field(authservID string) string {
	var rs []authres.Result
	sr := &authres.SPFResult{Value: authres.ResultValue(v.SPF.Result), Reason: cleanReason(v.SPF.Reason)}
	if v.SPF.Identity == "helo" {
		sr.Helo = v.SPF.Domain
	} else {
		sr.From = v.SPF.Domain
	}
	rs = append(rs, sr)
	if len(v.DKIM) == 0 {
		rs = append(rs, &authres.DKIMResult{Value: authres.ResultNone})
	}
	for _, d := range v.DKIM {
		rs = append(rs, &authres.DKIMResult{Value: d.Result, Reason: cleanReason(d.Reason), Domain: d.Domain, Identifier: d.Identifier})
	}
	rs = append(rs, &authres.DMARCResult{Value: v.DMARC.Result, Reason: cleanReason(v.DMARC.Reason), From: v.DMARC.From})
	return "Authentication-Results: " + foldResults(authres.Format(authservID, rs)) + "\r\n"
}

// cleanReason makes a reason fit a quoted string on one line: library
// errors can hold line ends, bytes of the message and the "; " that
// foldResults breaks lines at.
func cleanReason(s string) string {
	var b strings.Builder
	space := false
	for _, c := range []byte(s) {
		switch {
		case c == ';':
			c = ','
		case c <= ' ' || c >= 0x7f || c == '"' || c == '\\':
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteByte(c)
		if b.Len() >= 100 {
			break
		}
	}
	return b.String()
}

// foldResults puts each "; method=" on a line of its own, so the field
// stays under RFC 5322 §2.1.1's 78 columns in the usual case.
func foldResults(s string) string {
	return strings.ReplaceAll(s, "; ", ";\r\n\t")
}

// RemoveOurResults deletes from h every Authentication-Results field
// whose authserv-id is ours (RFC 8601 §5: a forged one must not reach
// the reader as if we had written it). Fields that cannot be parsed are
// also removed when they start with our authserv-id. It reports how many
// it removed.
func RemoveOurResults(h *textproto.Header, authservID string) int {
	n := 0
	for f := h.FieldsByKey("Authentication-Results"); f.Next(); {
		id := authservIDOf(f.Value())
		if strings.EqualFold(id, authservID) {
			f.Del()
			n++
		}
	}
	return n
}

// authservIDOf returns the authserv-id a field value claims: its first
// token, before any CFWS, version or ";" (RFC 8601 §2.2).
func authservIDOf(value string) string {
	id, _, err := authres.Parse(value)
	if err == nil {
		return id
	}
	s := strings.TrimLeft(value, " \t\r\n")
	if i := strings.IndexAny(s, " \t\r\n;("); i >= 0 {
		s = s[:i]
	}
	return s
}

// MaxHeaderBytes bounds the header kept in memory for the checks.
const MaxHeaderBytes = 1 << 20

// ErrHeaderTooLong is returned for a header over MaxHeaderBytes.
var ErrHeaderTooLong = errors.New("message header longer than 1 MiB")

// readHeaderBytes reads the header and the empty line after it, as sent.
// A message without a body ends at EOF.
func readHeaderBytes(br *bufio.Reader) ([]byte, error) {
	var raw []byte
	for {
		line, err := br.ReadSlice('\n')
		raw = append(raw, line...)
		if len(raw) > MaxHeaderBytes {
			return nil, ErrHeaderTooLong
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			return raw, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read message header: %w", err)
		}
		if len(line) == 1 || (len(line) == 2 && line[0] == '\r') {
			return raw, nil
		}
	}
}

// readRecorder keeps the first read error other than EOF, which the DKIM
// verifier would otherwise report as a bad message.
type readRecorder struct {
	r   io.Reader
	err error
}

func (rr *readRecorder) Read(p []byte) (int, error) {
	n, err := rr.r.Read(p)
	if err != nil && err != io.EOF && rr.err == nil {
		rr.err = err
	}
	return n, err
}
