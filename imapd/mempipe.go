package imapd

import (
	"io"
	"net"
	"sync"
	"time"
)

// memPipe is an in-memory connection between the front and imapserver,
// buffered in both directions. net.Pipe is not: imapserver flushes after
// every response line, and through net.Pipe each flush waits for the
// relay to take it, a goroutine handoff per line (10,000 for a FETCH of
// flags). Here a flush appends to a buffer and the relay takes what has
// gathered; a writer waits only when maxPipeBuf is waiting unread.
func memPipe() (front, lib net.Conn) {
	a, b := newPipeBuf(), newPipeBuf()
	return &memConn{r: a, w: b}, &memConn{r: b, w: a}
}

const maxPipeBuf = 256 << 10

// pipeBuf is one direction.
type pipeBuf struct {
	mu     sync.Mutex
	cond   sync.Cond
	buf    []byte
	closed bool
}

func newPipeBuf() *pipeBuf {
	p := &pipeBuf{}
	p.cond.L = &p.mu
	return p
}

func (p *pipeBuf) write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for len(b) > 0 {
		for len(p.buf) >= maxPipeBuf && !p.closed {
			p.cond.Wait()
		}
		if p.closed {
			return n, io.ErrClosedPipe
		}
		k := min(len(b), maxPipeBuf-len(p.buf))
		p.buf = append(p.buf, b[:k]...)
		b, n = b[k:], n+k
		p.cond.Broadcast()
	}
	return n, nil
}

func (p *pipeBuf) read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.buf) == 0 && !p.closed {
		p.cond.Wait()
	}
	if len(p.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(b, p.buf)
	p.buf = p.buf[n:]
	if len(p.buf) == 0 {
		p.buf = nil // let a grown buffer go
	}
	p.cond.Broadcast()
	return n, nil
}

func (p *pipeBuf) close() {
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
}

// memConn is one end: it reads r and writes w. Closing either end ends
// both directions: what was written is still read, then EOF.
type memConn struct {
	r, w *pipeBuf
}

func (c *memConn) Read(b []byte) (int, error)  { return c.r.read(b) }
func (c *memConn) Write(b []byte) (int, error) { return c.w.write(b) }
func (c *memConn) Close() error {
	c.r.close()
	c.w.close()
	return nil
}

type memAddr struct{}

func (memAddr) Network() string { return "memory" }
func (memAddr) String() string  { return "front" }

func (c *memConn) LocalAddr() net.Addr              { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return memAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }
