package tests

import (
	"crypto/sha256"
	"encoding/base64"
)

func sha256sum(b []byte) [32]byte { return sha256.Sum256(b) }

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
