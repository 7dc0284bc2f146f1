package serve

import (
	"net"
	"sync"
)

// Listener returns a net.Listener whose Accept yields c once and then
// waits until Close: the way to hand one connection to a protocol library
// that only serves listeners (go-smtp's Server.Serve). c is a *Conn or a
// protocol's wrapper around one.
func Listener(c net.Conn) net.Listener {
	return &oneShot{c: c, addr: c.LocalAddr(), closed: make(chan struct{})}
}

type oneShot struct {
	mu     sync.Mutex
	c      net.Conn
	addr   net.Addr
	once   sync.Once
	closed chan struct{}
}

func (l *oneShot) Accept() (net.Conn, error) {
	l.mu.Lock()
	c := l.c
	l.c = nil
	l.mu.Unlock()
	if c != nil {
		return c, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *oneShot) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *oneShot) Addr() net.Addr { return l.addr }
