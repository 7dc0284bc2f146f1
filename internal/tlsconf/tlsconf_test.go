package tlsconf

import (
	"crypto/tls"
	"errors"
	"github.com/tern-mail/tern/internal/testcert"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// writeCert writes a fresh self-signed certificate with the given serial
// into dir as tls.crt and tls.key.
func writeCert(t *testing.T, dir string, serial int64) { testcert.Write(t, dir, serial) }

// handshake runs one TLS handshake against cfg and returns the serial of
// the certificate the server sent.
func handshake(t *testing.T, cfg *tls.Config, client *tls.Config) (int64, error) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	srv := make(chan error, 1)
	go func() {
		s := tls.Server(a, cfg)
		srv <- s.Handshake()
		// Not s.Close: its close_notify would wait on the unbuffered
		// pipe for a reader that is gone.
		a.Close()
	}()
	c := tls.Client(b, client)
	err := c.Handshake()
	if err != nil {
		<-srv
		return 0, err
	}
	serial := c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	return serial, <-srv
}

func clientConfig() *tls.Config { return &tls.Config{InsecureSkipVerify: true, ServerName: "mx.test"} }

func TestReloadWhenChanged(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir, 1)
	c, err := LoadDir(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.Config()
	if s, err := handshake(t, cfg, clientConfig()); err != nil || s != 1 {
		t.Fatalf("first handshake: serial %d, %v", s, err)
	}
	writeCert(t, dir, 2)
	if s, err := handshake(t, cfg, clientConfig()); err != nil || s != 2 {
		t.Fatalf("after renewal: serial %d, %v; want 2", s, err)
	}
}

func TestKeepOldOnHalfWrittenRenewal(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir, 1)
	c, err := LoadDir(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A new certificate next to the old key: the pair does not match.
	other := t.TempDir()
	writeCert(t, other, 2)
	crt, _ := os.ReadFile(filepath.Join(other, CertFile))
	if err := os.WriteFile(filepath.Join(dir, CertFile), crt, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := handshake(t, c.Config(), clientConfig()); err != nil || s != 1 {
		t.Fatalf("half-written renewal: serial %d, %v; want the old 1", s, err)
	}
	// The key arrives: now the new pair is used.
	key, _ := os.ReadFile(filepath.Join(other, KeyFile))
	if err := os.WriteFile(filepath.Join(dir, KeyFile), key, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := handshake(t, c.Config(), clientConfig()); err != nil || s != 2 {
		t.Fatalf("completed renewal: serial %d, %v; want 2", s, err)
	}
}

func TestRefuseOldTLS(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir, 1)
	c, err := LoadDir(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := clientConfig()
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if _, err := handshake(t, c.Config(), old); err == nil {
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
	v12 := clientConfig()
	v12.MaxVersion = tls.VersionTLS12
	if _, err := handshake(t, c.Config(), v12); err != nil {
		t.Fatalf("TLS 1.2: %v", err)
	}
}

func TestMissing(t *testing.T) {
	_, err := LoadDir(t.TempDir(), nil)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LoadDir of an empty directory: %v, want fs.ErrNotExist", err)
	}
}
