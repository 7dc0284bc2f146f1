package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/GehirnInc/crypt"
	"github.com/GehirnInc/crypt/sha256_crypt"
	"github.com/GehirnInc/crypt/sha512_crypt"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Password schemes, spelled as Dovecot spells them between braces.
const (
	SchemeArgon2id = "ARGON2ID"
	SchemeBcrypt   = "BLF-CRYPT"
	SchemeSHA512   = "SHA512-CRYPT" // glibc crypt(3) $6$, what doveadm pw -s SHA512-CRYPT writes
	SchemeSHA256   = "SHA256-CRYPT" // $5$
	SchemePlain    = "PLAIN"
)

// shaCrypt are the crypt(3) SHA-2 schemes: their prefix in the hash, and
// the implementation.
var shaCrypt = map[string]struct {
	prefix string
	new    func() crypt.Crypter
}{
	SchemeSHA512: {"$6$", sha512_crypt.New},
	SchemeSHA256: {"$5$", sha256_crypt.New},
}

// DefaultSHACryptRounds is what glibc and Dovecot use when a hash names
// none; maxSHACryptRounds keeps one users file line from making a login
// take minutes (glibc allows 999,999,999).
const (
	DefaultSHACryptRounds = 5000
	maxSHACryptRounds     = 1000000
)

// Defaults for new hashes. Argon2id with 64 MiB, 3 passes, one lane is
// the second recommendation of RFC 9106 §4 (the first needs 2 GiB);
// bcrypt cost 10 is what Dovecot and htpasswd -B use.
const (
	DefaultArgonMemory = 64 * 1024 // KiB
	DefaultArgonTime   = 3
	DefaultArgonLanes  = 1
	DefaultBcryptCost  = 10
)

// Bounds on the parameters of a stored Argon2id hash: a users file line
// must not be able to make one login take a gigabyte or a minute.
const (
	maxArgonMemory = 1 << 20 // KiB, 1 GiB
	maxArgonTime   = 64
	maxArgonLanes  = 64
	maxPassword    = 1024
)

// Hash is a parsed password hash, ready to verify.
type Hash struct {
	Scheme string
	text   string // the stored form, without the {SCHEME} prefix

	// Argon2id
	memory uint32
	time   uint32 // passes; for SHA-crypt, rounds
	lanes  uint8
	salt   []byte
	sum    []byte
	locked bool // empty or "!"/"*": no password can match
}

// ErrUnknownScheme is returned for a hash in a scheme tern cannot verify.
var ErrUnknownScheme = errors.New("unknown password scheme")

// ParseHash parses a password field: "{SCHEME}stored". A field without a
// scheme is accepted when its own prefix says what it is ($argon2id$,
// $2a$/$2b$/$2y$), as Dovecot's CRYPT default would read it. An empty
// field, or one starting with "!" or "*", is a locked account.
func ParseHash(field string) (*Hash, error) {
	if field == "" || field[0] == '!' || field[0] == '*' {
		return &Hash{Scheme: "LOCKED", locked: true}, nil
	}
	scheme, text := "", field
	if field[0] == '{' {
		end := strings.IndexByte(field, '}')
		if end < 0 {
			return nil, errors.New("password scheme without closing '}'")
		}
		scheme, text = strings.ToUpper(field[1:end]), field[end+1:]
	} else {
		switch {
		case strings.HasPrefix(field, "$argon2id$"):
			scheme = SchemeArgon2id
		default:
			if scheme = cryptScheme(field); scheme == "" {
				return nil, errors.New("password hash without a {SCHEME} prefix")
			}
		}
	}
	if scheme == "CRYPT" {
		// Dovecot's CRYPT is whatever crypt(3) makes of the hash: its
		// prefix says which.
		if scheme = cryptScheme(text); scheme == "" {
			return nil, errors.New("{CRYPT} hash: tern reads $argon2id$, $2a$/$2b$/$2y$ (bcrypt), $5$ and $6$ (SHA-crypt)")
		}
	}
	h := &Hash{Scheme: scheme, text: text}
	switch scheme {
	case SchemeArgon2id:
		return h, h.parseArgon2id()
	case SchemeBcrypt, "BCRYPT":
		h.Scheme = SchemeBcrypt
		if _, err := bcrypt.Cost([]byte(text)); err != nil {
			return nil, fmt.Errorf("bad {BLF-CRYPT} hash: %w", err)
		}
		if !(strings.HasPrefix(text, "$2a$") || strings.HasPrefix(text, "$2b$") || strings.HasPrefix(text, "$2y$")) {
			return nil, errors.New("bad {BLF-CRYPT} hash: want $2a$, $2b$ or $2y$")
		}
		return h, nil
	case SchemeSHA512, SchemeSHA256:
		sc := shaCrypt[scheme]
		if !strings.HasPrefix(text, sc.prefix) {
			return nil, fmt.Errorf("bad {%s} hash: want one starting with %s", scheme, sc.prefix)
		}
		// The stored form is $6$[rounds=N$]salt$hash; the salt part is
		// what the hash is made again from.
		end := strings.LastIndexByte(text, '$')
		rounds, err := sc.new().Cost(text[:end])
		if err != nil {
			return nil, fmt.Errorf("bad {%s} hash: %w", scheme, err)
		}
		if rounds > maxSHACryptRounds {
			return nil, fmt.Errorf("bad {%s} hash: rounds=%d, more than %d", scheme, rounds, maxSHACryptRounds)
		}
		h.time = uint32(rounds)
		return h, nil
	case SchemePlain, "CLEARTEXT", "CLEAR":
		h.Scheme = SchemePlain
		return h, nil
	}
	return nil, fmt.Errorf("%w {%s}: tern reads ARGON2ID, BLF-CRYPT, SHA512-CRYPT, SHA256-CRYPT and PLAIN (tern-passwd hash makes one)", ErrUnknownScheme, scheme)
}

// cryptScheme names the scheme of a crypt(3)-style hash by its prefix, ""
// when it is none tern reads.
func cryptScheme(text string) string {
	switch {
	case strings.HasPrefix(text, "$argon2id$"):
		return SchemeArgon2id
	case strings.HasPrefix(text, "$2a$"), strings.HasPrefix(text, "$2b$"), strings.HasPrefix(text, "$2y$"):
		return SchemeBcrypt
	case strings.HasPrefix(text, "$6$"):
		return SchemeSHA512
	case strings.HasPrefix(text, "$5$"):
		return SchemeSHA256
	}
	return ""
}

// parseArgon2id reads the PHC string form libsodium and Dovecot write:
// $argon2id$v=19$m=65536,t=3,p=1$<salt>$<hash>, base64 without padding.
func (h *Hash) parseArgon2id() error {
	bad := func(why string) error { return fmt.Errorf("bad {ARGON2ID} hash: %s", why) }
	f := strings.Split(h.text, "$")
	if len(f) != 6 || f[0] != "" || f[1] != "argon2id" {
		return bad("want $argon2id$v=19$m=M,t=T,p=P$salt$hash")
	}
	if f[2] != "v=19" {
		return bad("version " + f[2] + ", want v=19")
	}
	var seen [3]bool
	for _, kv := range strings.Split(f[3], ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return bad("parameter " + kv)
		}
		switch k {
		case "m":
			h.memory, seen[0] = uint32(n), true
		case "t":
			h.time, seen[1] = uint32(n), true
		case "p":
			if n > 255 {
				return bad("parameter " + kv)
			}
			h.lanes, seen[2] = uint8(n), true
		default:
			return bad("parameter " + kv)
		}
	}
	if !seen[0] || !seen[1] || !seen[2] {
		return bad("missing m, t or p")
	}
	if h.lanes < 1 || h.lanes > maxArgonLanes || h.time < 1 || h.time > maxArgonTime ||
		h.memory < 8*uint32(h.lanes) || h.memory > maxArgonMemory {
		return bad(fmt.Sprintf("parameters m=%d,t=%d,p=%d out of bounds (m<=%d, t<=%d, p<=%d)",
			h.memory, h.time, h.lanes, maxArgonMemory, maxArgonTime, maxArgonLanes))
	}
	var err error
	if h.salt, err = base64.RawStdEncoding.DecodeString(f[4]); err != nil || len(h.salt) < 8 || len(h.salt) > 64 {
		return bad("salt")
	}
	if h.sum, err = base64.RawStdEncoding.DecodeString(f[5]); err != nil || len(h.sum) < 16 || len(h.sum) > 128 {
		return bad("hash")
	}
	return nil
}

// Verify reports whether password matches, taking the time the scheme
// takes whatever the answer; the comparison itself is constant-time.
func (h *Hash) Verify(password string) bool {
	if len(password) > maxPassword {
		password = password[:maxPassword]
	}
	switch h.Scheme {
	case SchemeArgon2id:
		sum := argon2.IDKey([]byte(password), h.salt, h.time, h.memory, h.lanes, uint32(len(h.sum)))
		return subtle.ConstantTimeCompare(sum, h.sum) == 1 && !h.locked
	case SchemeBcrypt:
		return bcrypt.CompareHashAndPassword([]byte(h.text), []byte(password)) == nil && !h.locked
	case SchemeSHA512, SchemeSHA256:
		// The library's own Verify misreads a salt after rounds=N when
		// given the whole hash: it is given the salt part alone.
		sum, err := shaCrypt[h.Scheme].new().Generate([]byte(password), []byte(h.text[:strings.LastIndexByte(h.text, '$')]))
		return err == nil && subtle.ConstantTimeCompare([]byte(sum), []byte(h.text)) == 1 && !h.locked
	case SchemePlain:
		// Compare digests so that the time does not depend on where
		// the strings differ or on their lengths.
		a, b := sha256.Sum256([]byte(password)), sha256.Sum256([]byte(h.text))
		return subtle.ConstantTimeCompare(a[:], b[:]) == 1 && !h.locked
	}
	return false
}

// Locked reports whether no password can match.
func (h *Hash) Locked() bool { return h.locked }

// String returns the stored form with its {SCHEME} prefix.
func (h *Hash) String() string {
	if h.locked {
		return "!"
	}
	return "{" + h.Scheme + "}" + h.text
}

// dummy returns a hash with the same scheme and cost as h for a password
// nobody knows, so that a login for an unknown user can be made to cost
// what a wrong password for this one costs. A locked hash costs nothing,
// so its dummy is the default scheme's.
func (h *Hash) dummy() *Hash {
	var secret [16]byte
	_, _ = rand.Read(secret[:])
	pw := base64.RawStdEncoding.EncodeToString(secret[:])
	scheme := h.Scheme
	if h.locked {
		scheme = ""
	}
	switch scheme {
	case SchemeArgon2id:
		d := *h
		d.salt = make([]byte, len(h.salt))
		_, _ = rand.Read(d.salt)
		d.sum = make([]byte, len(h.sum))
		_, _ = rand.Read(d.sum)
		d.locked = true
		return &d
	case SchemeBcrypt:
		cost, _ := bcrypt.Cost([]byte(h.text))
		b, err := bcrypt.GenerateFromPassword([]byte(pw), cost)
		if err == nil {
			return &Hash{Scheme: SchemeBcrypt, text: string(b), locked: true}
		}
	case SchemeSHA512, SchemeSHA256:
		if t, err := shaCryptHash(h.Scheme, pw, int(h.time)); err == nil {
			return &Hash{Scheme: h.Scheme, text: t, time: h.time, locked: true}
		}
	case SchemePlain:
		return &Hash{Scheme: SchemePlain, text: pw, locked: true}
	}
	d, _ := ParseHash(mustArgon(pw))
	d.locked = true
	return d
}

func mustArgon(pw string) string {
	s, err := HashPassword(SchemeArgon2id, pw)
	if err != nil {
		panic(err) // only crypto/rand failing gets here
	}
	return s
}

// HashPassword makes a new hash of password in scheme (ARGON2ID or
// BLF-CRYPT; PLAIN for tests) with the default cost, with its {SCHEME}
// prefix, ready for the users file.
func HashPassword(scheme, password string) (string, error) {
	if password == "" {
		return "", errors.New("empty password")
	}
	if len(password) > maxPassword {
		return "", fmt.Errorf("password longer than %d bytes", maxPassword)
	}
	switch strings.ToUpper(scheme) {
	case SchemeArgon2id, "":
		salt := make([]byte, 16)
		if _, err := rand.Read(salt); err != nil {
			return "", fmt.Errorf("read random salt: %w", err)
		}
		sum := argon2.IDKey([]byte(password), salt, DefaultArgonTime, DefaultArgonMemory, DefaultArgonLanes, 32)
		return fmt.Sprintf("{ARGON2ID}$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", DefaultArgonMemory, DefaultArgonTime, DefaultArgonLanes,
			base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(sum)), nil
	case SchemeBcrypt, "BCRYPT":
		if len(password) > 72 {
			// bcrypt reads 72 bytes only; refusing beats silently
			// accepting any password that shares the first 72.
			return "", errors.New("{BLF-CRYPT} takes passwords up to 72 bytes; use {ARGON2ID}")
		}
		b, err := bcrypt.GenerateFromPassword([]byte(password), DefaultBcryptCost)
		if err != nil {
			return "", fmt.Errorf("bcrypt: %w", err)
		}
		// bcrypt writes $2a$; Dovecot writes $2y$. The algorithm is the
		// same for every password Go accepts, so keep Go's prefix.
		return "{BLF-CRYPT}" + string(b), nil
	case SchemeSHA512, SchemeSHA256:
		// For a users file shared with Dovecot or other crypt(3)
		// readers; ARGON2ID is the stronger choice.
		t, err := shaCryptHash(strings.ToUpper(scheme), password, DefaultSHACryptRounds)
		if err != nil {
			return "", err
		}
		return "{" + strings.ToUpper(scheme) + "}" + t, nil
	case SchemePlain:
		return "{PLAIN}" + password, nil
	}
	return "", fmt.Errorf("%w {%s}: use ARGON2ID, BLF-CRYPT, SHA512-CRYPT or SHA256-CRYPT", ErrUnknownScheme, scheme)
}

// shaCryptHash hashes password with SHA-crypt, a random 16-character salt
// and the given rounds, in crypt(3)'s form: $6$[rounds=N$]salt$hash.
func shaCryptHash(scheme, password string, rounds int) (string, error) {
	const alphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("read random salt: %w", err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	sc := shaCrypt[scheme]
	salt := sc.prefix
	if rounds != DefaultSHACryptRounds {
		salt += fmt.Sprintf("rounds=%d$", rounds)
	}
	return sc.new().Generate([]byte(password), []byte(salt+string(b[:])))
}
