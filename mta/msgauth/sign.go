package msgauth

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-msgauth/dkim"
)

// SigningKey is one DKIM private key of ours, from
// CONF/dkim/DOMAIN/SELECTOR.key.
type SigningKey struct {
	Domain   string
	Selector string
	Signer   crypto.Signer // ed25519.PrivateKey or *rsa.PrivateKey
	Path     string
}

// Oversigned are the header fields signed once more than they occur, so
// that nobody can add one after signing without breaking the signature
// (RFC 6376 §8.15): the set the large mailbox providers expect.
var Oversigned = []string{
	"Date", "From", "Subject", "To", "Cc", "Message-ID", "MIME-Version",
	"Content-Type", "Reply-To", "In-Reply-To", "References",
}

// alsoSigned are signed as often as they occur, when they do (RFC 6376
// §5.4.1's recommended set, less what Oversigned has).
var alsoSigned = []string{
	"Sender", "Content-Transfer-Encoding", "Content-Disposition",
	"List-Id", "List-Unsubscribe", "List-Unsubscribe-Post",
}

// KeyDir is where the DKIM keys of domain are, under the control
// directory.
func KeyDir(confDir, domain string) string {
	return filepath.Join(confDir, "dkim", strings.ToLower(domain))
}

// LoadSigningKeys reads every SELECTOR.key of domain, in selector order.
// A domain without keys has none and no error: signing starts when a key
// exists.
func LoadSigningKeys(confDir, domain string) ([]SigningKey, error) {
	dir := KeyDir(confDir, domain)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read DKIM keys: %w", err)
	}
	var keys []SigningKey
	for _, e := range ents {
		sel, ok := strings.CutSuffix(e.Name(), ".key")
		if !ok || sel == "" || e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read DKIM key: %w", err)
		}
		s, err := ParsePrivateKey(data)
		if err != nil {
			return nil, fmt.Errorf("DKIM key %s: %w", p, err)
		}
		keys = append(keys, SigningKey{Domain: strings.ToLower(domain), Selector: sel, Signer: s, Path: p})
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Selector < keys[j].Selector })
	return keys, nil
}

// ParsePrivateKey reads a PEM private key: PKCS #8 (ed25519 or RSA, as
// tern-dkim and openssl genpkey write) or PKCS #1 (RSA, as opendkim-genkey
// writes).
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM block: want a PRIVATE KEY in PEM")
	}
	var k any
	var err error
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q: want PRIVATE KEY or RSA PRIVATE KEY", b.Type)
	}
	if err != nil {
		return nil, err
	}
	switch k := k.(type) {
	case ed25519.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		// RFC 8301 §3.2: signers MUST use at least 1024 bits.
		if k.N.BitLen() < 1024 {
			return nil, fmt.Errorf("RSA key of %d bits: RFC 8301 wants at least 1024, 2048 is usual", k.N.BitLen())
		}
		return k, nil
	}
	return nil, fmt.Errorf("key of type %T: want ed25519 or RSA", k)
}

// Sign returns the DKIM-Signature fields, one per key, to put at the top
// of msg, each ending in CRLF. Canonicalisation is relaxed/relaxed (RFC
// 6376 §3.4.2, §3.4.4), which survives the re-folding and trailing
// white space that relays add.
func Sign(msg io.Reader, keys []SigningKey) (string, error) {
	br := bufio.NewReader(msg)
	raw, err := readHeaderBytes(br)
	if err != nil {
		return "", err
	}
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		return "", fmt.Errorf("read message header: %w", err)
	}
	headerKeys := signedHeaderKeys(h)
	signers := make([]*dkim.Signer, 0, len(keys))
	ws := make([]io.Writer, 0, len(keys))
	closed := 0
	defer func() {
		// Each signer's goroutine ends only when its input does.
		for _, s := range signers[closed:] {
			s.Close()
		}
	}()
	for _, k := range keys {
		s, err := dkim.NewSigner(&dkim.SignOptions{
			Domain:                 k.Domain,
			Selector:               k.Selector,
			Signer:                 k.Signer,
			Hash:                   crypto.SHA256,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed,
			BodyCanonicalization:   dkim.CanonicalizationRelaxed,
			HeaderKeys:             headerKeys,
		})
		if err != nil {
			return "", fmt.Errorf("DKIM key %s: %w", k.Path, err)
		}
		signers = append(signers, s)
		ws = append(ws, s)
	}
	if _, err := io.Copy(io.MultiWriter(ws...), io.MultiReader(bytes.NewReader(raw), br)); err != nil {
		return "", fmt.Errorf("sign message: %w", err)
	}
	var out strings.Builder
	for i, s := range signers {
		closed++
		if err := s.Close(); err != nil {
			return "", fmt.Errorf("sign with %s: %w", keys[i].Path, err)
		}
		out.WriteString(s.Signature())
	}
	return out.String(), nil
}

// signedHeaderKeys lists the h= tag for a header: each Oversigned field
// once more than it occurs, the others as often as they occur.
func signedHeaderKeys(h textproto.Header) []string {
	var keys []string
	for _, k := range Oversigned {
		for range len(h.Values(k)) + 1 {
			keys = append(keys, k)
		}
	}
	for _, k := range alsoSigned {
		for range len(h.Values(k)) {
			keys = append(keys, k)
		}
	}
	return keys
}
