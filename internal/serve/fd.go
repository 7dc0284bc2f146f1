package serve

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// fdConn takes the connection on descriptors rfd (from the client) and
// wfd (to the client): one socket on both (inetd, tcpserver, systemd
// Accept=yes), or anything else, typically two pipes (a TLS wrapper in
// front). The descriptors are then pointed at /dev/null (0, 1, 2) or
// closed, so that closing the returned net.Conn really ends the
// connection and no later open(2) reuses fd 0 or 1.
func fdConn(rfd, wfd int) (net.Conn, error) {
	var rs, ws unix.Stat_t
	if err := unix.Fstat(rfd, &rs); err != nil {
		return nil, fmt.Errorf("fstat fd %d: %w", rfd, err)
	}
	if err := unix.Fstat(wfd, &ws); err != nil {
		return nil, fmt.Errorf("fstat fd %d: %w", wfd, err)
	}
	var c net.Conn
	if rs.Mode&unix.S_IFMT == unix.S_IFSOCK && rs.Dev == ws.Dev && rs.Ino == ws.Ino {
		f := os.NewFile(uintptr(rfd), "socket")
		fc, err := net.FileConn(f) // a dup, in the runtime's poller
		if err != nil {
			return nil, fmt.Errorf("use fd %d as a socket: %w", rfd, err)
		}
		c = fc
	} else {
		r, err := dupNonblock(rfd)
		if err != nil {
			return nil, err
		}
		w, err := dupNonblock(wfd)
		if err != nil {
			r.Close()
			return nil, err
		}
		c = &pipeConn{r: r, w: w}
	}
	for _, fd := range []int{rfd, wfd} {
		if err := release(fd); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// dupNonblock returns a copy of fd in non-blocking mode: os.NewFile then
// registers it with the runtime's poller and read and write deadlines work
// (for pipes, ttys and sockets; a regular file cannot be polled and simply
// has no deadlines, which is harmless: reads from it never hang).
//
// O_NONBLOCK belongs to the open file description, which the process that
// gave us the pipe may share; a wrapper such as stunnel uses non-blocking
// I/O itself, and one that does not would see EAGAIN only on its own end,
// which is not this description.
func dupNonblock(fd int) (*os.File, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, fmt.Errorf("dup fd %d: %w", fd, err)
	}
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return nil, fmt.Errorf("set fd %d non-blocking: %w", fd, err)
	}
	return os.NewFile(uintptr(nfd), "fd"+strconv.Itoa(fd)), nil
}

// release gives up fd once it has been copied: the standard descriptors
// point at /dev/null afterwards, others are closed.
func release(fd int) error {
	if fd > 2 {
		unix.Close(fd)
		return nil
	}
	null, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/null: %w", err)
	}
	defer unix.Close(null)
	if err := unix.Dup3(null, fd, 0); err != nil {
		return fmt.Errorf("dup /dev/null to fd %d: %w", fd, err)
	}
	return nil
}

// pipeConn is a net.Conn over two files, with the files' deadlines.
type pipeConn struct {
	r, w *os.File
}

func (p *pipeConn) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p *pipeConn) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p *pipeConn) Close() error {
	err := p.w.Close()
	if rerr := p.r.Close(); err == nil {
		err = rerr
	}
	return err
}
func (p *pipeConn) LocalAddr() net.Addr  { return pipeAddr("fd1") }
func (p *pipeConn) RemoteAddr() net.Addr { return pipeAddr("fd0") }
func (p *pipeConn) SetDeadline(d time.Time) error {
	err := p.r.SetReadDeadline(d)
	if werr := p.w.SetWriteDeadline(d); err == nil {
		err = werr
	}
	return err
}
func (p *pipeConn) SetReadDeadline(d time.Time) error  { return p.r.SetReadDeadline(d) }
func (p *pipeConn) SetWriteDeadline(d time.Time) error { return p.w.SetWriteDeadline(d) }

type pipeAddr string

func (a pipeAddr) Network() string { return "pipe" }
func (a pipeAddr) String() string  { return string(a) }

// addrs returns the peer's and our address: the socket's when it is TCP,
// otherwise what tcpserver (or our own listener, or a TLS wrapper that
// follows the UCSPI convention) put in the environment.
func addrs(c net.Conn, getenv func(string) string) (remote, local netip.AddrPort) {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		remote = unmap(a.AddrPort())
	} else {
		remote = envAddr(getenv("TCPREMOTEIP"), getenv("TCPREMOTEPORT"))
	}
	if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
		local = unmap(a.AddrPort())
	} else {
		local = envAddr(getenv("TCPLOCALIP"), getenv("TCPLOCALPORT"))
	}
	return remote, local
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// envAddr parses an address and port as tcpserver writes them; a missing
// or bad port is 0, a bad address gives the zero AddrPort.
func envAddr(ip, port string) netip.AddrPort {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.AddrPort{}
	}
	p, _ := strconv.ParseUint(port, 10, 16)
	return netip.AddrPortFrom(a.Unmap(), uint16(p))
}
