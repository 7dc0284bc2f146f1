package serve

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"time"

	"github.com/tern-mail/tern/internal/sysexit"
)

// unixPrefix marks a --listen address that is a path: "unix:/run/tern/lmtp".
const unixPrefix = "unix:"

// openListener opens one --listen address: host:port over TCP, or unix:PATH.
func openListener(addr string, mode os.FileMode) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, unixPrefix)
	if !ok {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, sysexit.Wrap(sysexit.OSErr, fmt.Errorf("listen on %s: %w", addr, err))
		}
		return ln, nil
	}
	if path == "" {
		return nil, sysexit.New(sysexit.Usage, "listen on %q: no path after unix:", addr)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	if mode == 0 {
		mode = 0o600
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, sysexit.Wrap(sysexit.OSErr, fmt.Errorf("listen on %s: %w", addr, err))
	}
	// The socket's mode decides who may connect (unix(7)); it is set
	// before the first Accept, and the listener removes the file when
	// it is closed.
	if err := os.Chmod(path, mode.Perm()); err != nil {
		ln.Close()
		return nil, sysexit.Wrap(sysexit.OSErr, fmt.Errorf("listen on %s: %w", addr, err))
	}
	return ln, nil
}

// removeStaleSocket removes a socket file that a server which ended
// without closing its listener left behind, as Postfix and Dovecot do at
// start; a socket someone still answers on, or a file that is not a
// socket, is an error instead.
func removeStaleSocket(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return sysexit.Wrap(sysexit.OSErr, fmt.Errorf("listen on unix:%s: %w", path, err))
	}
	if st.Mode().Type() != fs.ModeSocket {
		return sysexit.New(sysexit.Config, "listen on unix:%s: the file exists and is not a socket: remove it or choose another path", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return sysexit.New(sysexit.Unavailable, "listen on unix:%s: another server answers on that socket", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return sysexit.Wrap(sysexit.OSErr, fmt.Errorf("listen on unix:%s: remove the stale socket: %w", path, err))
	}
	return nil
}
