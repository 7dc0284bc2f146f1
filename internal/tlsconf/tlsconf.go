// Package tlsconf loads the server certificate (tls.crt and tls.key in the
// control directory) and serves it to TLS handshakes, re-reading the files
// when they change on disk so that a renewed certificate (certbot, acme.sh,
// a cron job copying files in) is used without restarting any server.
//
// The files are checked with stat(2) at every handshake rather than at most
// once a second: two stat calls cost microseconds, a handshake costs a
// millisecond of public-key arithmetic, and checking every time means a
// renewal is seen by the very next client, with no window of stale serving.
package tlsconf

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/tern-mail/tern/internal/sysexit"
)

// File names in the control directory.
const (
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
)

// Cert is a certificate and key pair kept up to date with its files.
type Cert struct {
	certPath, keyPath string
	log               *slog.Logger

	mu    sync.Mutex
	cur   *tls.Certificate
	stamp [2]stamp
}

// stamp identifies one version of a file: a renewal either rewrites the
// file (mtime, size change) or renames a new one into place or changes a
// symlink (device and inode change).
type stamp struct {
	dev, ino uint64
	size     int64
	mtime    time.Time
}

func stat(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	s := stamp{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.dev, s.ino = uint64(st.Dev), st.Ino
	}
	return s, nil
}

// LoadDir loads tls.crt and tls.key from the control directory dir. When
// neither exists the error matches fs.ErrNotExist: the server then offers
// no STARTTLS.
func LoadDir(dir string, log *slog.Logger) (*Cert, error) {
	return Load(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile), log)
}

// Load loads a PEM certificate chain and its key. log, if not nil, is told
// when a changed certificate is loaded or fails to load.
func Load(certPath, keyPath string, log *slog.Logger) (*Cert, error) {
	c := &Cert{certPath: certPath, keyPath: keyPath, log: log}
	if _, err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// reload reads the files if their stamps differ from the loaded ones and
// reports whether it loaded anything. On failure the old certificate stays
// in use and the stamps are not updated, so the next handshake tries again
// (a renewal may be caught half-written: the new certificate with the old
// key).
func (c *Cert) reload() (bool, error) {
	cs, err := stat(c.certPath)
	if err != nil {
		return false, fmt.Errorf("read certificate %s: %w", c.certPath, err)
	}
	ks, err := stat(c.keyPath)
	if err != nil {
		return false, fmt.Errorf("read key %s: %w", c.keyPath, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != nil && c.stamp == [2]stamp{cs, ks} {
		return false, nil
	}
	pair, err := tls.LoadX509KeyPair(c.certPath, c.keyPath)
	if err != nil {
		return false, fmt.Errorf("load certificate %s and key %s: %w", c.certPath, c.keyPath, err)
	}
	c.cur = &pair
	c.stamp = [2]stamp{cs, ks}
	return true, nil
}

// GetCertificate is for tls.Config.GetCertificate: it returns the current
// certificate, reloading it first if its files changed.
func (c *Cert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	loaded, err := c.reload()
	c.mu.Lock()
	cur := c.cur
	c.mu.Unlock()
	if c.log != nil {
		switch {
		case err != nil:
			c.log.Warn("keeping the old certificate", "err", err)
		case loaded:
			c.log.Info("certificate reloaded", "file", c.certPath)
		}
	}
	if cur == nil {
		return nil, errors.New("no certificate loaded")
	}
	return cur, nil
}

// Config returns a server configuration using this certificate: TLS 1.2
// and newer only (RFC 8996 deprecates 1.0 and 1.1; RFC 9325 §3.1.1).
func (c *Cert) Config() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: c.GetCertificate,
	}
}

// ServerConfig is what a server does with its control directory: the TLS
// configuration when dir has tls.crt and tls.key, nil (no STARTTLS) when it
// has neither, and a configuration error (status 78) when they are there
// but unusable.
func ServerConfig(dir string, log *slog.Logger) (*tls.Config, error) {
	cert, err := LoadDir(dir, log)
	switch {
	case err == nil:
		return cert.Config(), nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil
	}
	return nil, sysexit.Wrap(sysexit.Config, err)
}
