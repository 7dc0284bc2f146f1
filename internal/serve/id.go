package serve

import (
	"encoding/base32"
	"encoding/binary"
	"sync/atomic"
	"time"
)

// ids makes connection ids: 40 bits of milliseconds, 24 bits of process id
// and a 16-bit counter, in lower-case base32 (16 characters). Two
// processes never share a pid at the same time, and one process would have
// to accept 65536 connections in a millisecond to repeat itself, so ids
// are unique across the per-connection processes of one host; the time
// part wraps after 34 years.
type ids struct {
	pid uint32
	n   atomic.Uint32
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func (s *ids) next(now time.Time) string {
	var b [10]byte
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(now.UnixMilli()))
	copy(b[0:5], ms[3:8])
	b[5], b[6], b[7] = byte(s.pid>>16), byte(s.pid>>8), byte(s.pid)
	binary.BigEndian.PutUint16(b[8:10], uint16(s.n.Add(1)))
	return idEncoding.EncodeToString(b[:])
}
