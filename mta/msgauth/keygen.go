package msgauth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/tern-mail/tern/internal/fsync"
)

// Key types for GenerateKey.
const (
	KeyEd25519 = "ed25519" // RFC 8463
	KeyRSA     = "rsa"     // RSA-2048, RFC 8301
)

// RSABits is the size of the RSA keys GenerateKey makes: what the large
// providers expect, and what fits one DNS TXT record.
const RSABits = 2048

// KeyRecord returns the DKIM key record (RFC 6376 §3.6.1) to publish at
// SELECTOR._domainkey.DOMAIN for pub.
func KeyRecord(pub crypto.PublicKey) (string, error) {
	switch pub := pub.(type) {
	case ed25519.PublicKey:
		// RFC 8463 §4.2: p= is the bare 32-byte key.
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub), nil
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return "", err
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	}
	return "", fmt.Errorf("key of type %T: want ed25519 or RSA", pub)
}

// ValidSelector reports whether s can be a selector and a file name: DNS
// labels of letters, digits and hyphens, joined by dots (RFC 6376 §3.1).
func ValidSelector(s string) bool { return validLabels(s, 63) }

// validLabels reports whether s is dot-joined DNS labels of letters,
// digits and hyphens, at most max bytes long.
func validLabels(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// ValidDomain reports whether s is a domain name keys can be made for:
// two labels or more of letters, digits and hyphens (IDNs as A-labels).
func ValidDomain(s string) bool {
	s = strings.TrimSuffix(s, ".")
	return validLabels(s, 253) && strings.Contains(s, ".")
}

// ErrKeyExists is returned by GenerateKey when the key file is there
// already: a key in use is never replaced by accident.
var ErrKeyExists = errors.New("DKIM key exists")

// GenerateKey makes a key pair of keyType for domain and selector, writes
// the private key to CONF/dkim/DOMAIN/SELECTOR.key (mode 0600, fsynced)
// and returns its path and the key record to publish.
func GenerateKey(confDir, domain, selector, keyType string) (path, record string, err error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if !ValidDomain(domain) {
		return "", "", fmt.Errorf("domain %q: want a domain name such as example.org", domain)
	}
	if !ValidSelector(selector) {
		return "", "", fmt.Errorf("selector %q: want letters, digits and hyphens, such as s2026", selector)
	}
	var priv crypto.Signer
	switch keyType {
	case KeyEd25519:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case KeyRSA:
		priv, err = rsa.GenerateKey(rand.Reader, RSABits)
	default:
		return "", "", fmt.Errorf("key type %q: want %s or %s", keyType, KeyEd25519, KeyRSA)
	}
	if err != nil {
		return "", "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", "", err
	}
	record, err = KeyRecord(priv.Public())
	if err != nil {
		return "", "", err
	}
	dir := KeyDir(confDir, domain)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("make DKIM key directory: %w", err)
	}
	path = filepath.Join(dir, selector+".key")
	if err := writeNewFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
		return "", "", err
	}
	return path, record, nil
}

// writeNewFile writes a file that must not exist yet, readable only by
// its owner, and makes it durable: written to a temporary name, fsynced,
// linked into place (which fails if the name is taken) and the directory
// fsynced.
func writeNewFile(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write DKIM key: %w", err)
	}
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write DKIM key %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write DKIM key %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write DKIM key %s: %w", tmp, err)
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %s (remove it first to replace it)", ErrKeyExists, path)
		}
		return fmt.Errorf("write DKIM key: %w", err)
	}
	if err := fsync.Dir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("write DKIM key: %w", err)
	}
	return nil
}
