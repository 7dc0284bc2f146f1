package imapd

import (
	"errors"
	"io"
)

// inflater decodes a raw DEFLATE stream (RFC 1951), the client's side of
// COMPRESS=DEFLATE (RFC 4978). It is written here, not taken from
// compress/flate, because a command must be read as soon as the client
// has flushed it, and clients flush in two ways:
//
//   - Z_SYNC_FLUSH ends the data with an empty stored block; every
//     decoder returns the data then.
//   - Z_PARTIAL_FLUSH (mbsync) ends the data block and starts an empty
//     fixed-code block whose 10 bits may not all be sent yet. The
//     standard library keeps a finished block's data until the next
//     block produces some (golang/go#31514), so the command waits for
//     the next one; klauspost/compress's WithPartialBlock returns at the
//     end of a block but reads ahead the longest code's bits before
//     decoding each symbol, and blocks inside the data block's last
//     symbols waiting for bits the client never sends.
//
// This decoder returns a block's data as soon as the block ends, and
// reads no bit before it needs it (codes are decoded a bit at a time,
// as RFC 1951 §3.2.2 defines them). The client's direction carries
// commands and APPEND bodies, for which that speed is plenty.
type inflater struct {
	r      io.ByteReader
	bits   uint32
	nbits  uint
	window [1 << 15]byte
	wpos   int  // bytes written to window, mod its size
	filled bool // the window has wrapped: every distance is valid
	out    []byte
	final  bool
	inBlk  bool // inside a Huffman-coded block
	lit    *huffman
	dist   *huffman
	err    error
}

func newInflater(r io.ByteReader) *inflater { return &inflater{r: r} }

// errCorrupt is a stream that breaks RFC 1951.
var errCorrupt = errors.New("deflate: corrupt stream")

// maxPending is how much decoded data is gathered before Read returns
// it even in the middle of a block.
const maxPending = 16 << 10

func (z *inflater) Read(p []byte) (int, error) {
	for len(z.out) == 0 {
		if z.err != nil {
			return 0, z.err
		}
		z.err = z.step()
	}
	n := copy(p, z.out)
	z.out = z.out[n:]
	return n, nil
}

// step decodes until a block ends or maxPending is reached.
func (z *inflater) step() error {
	z.out = z.out[:0]
	if !z.inBlk {
		if z.final {
			return io.EOF
		}
		hdr, err := z.need(3)
		if err != nil {
			return err
		}
		z.final = hdr&1 == 1
		switch hdr >> 1 {
		case 0:
			return z.stored()
		case 1:
			z.lit, z.dist = fixedLit, fixedDist
		case 2:
			if err := z.dynamic(); err != nil {
				return err
			}
		default:
			return errCorrupt
		}
		z.inBlk = true
	}
	for len(z.out) < maxPending {
		sym, err := z.decode(z.lit)
		if err != nil {
			return err
		}
		switch {
		case sym < 256:
			z.put(byte(sym))
			continue
		case sym == 256:
			z.inBlk = false
			return nil
		case sym > 285:
			return errCorrupt
		}
		sym -= 257
		extra, err := z.need(lenExtra[sym])
		if err != nil {
			return err
		}
		length := int(lenBase[sym]) + int(extra)
		ds, err := z.decode(z.dist)
		if err != nil {
			return err
		}
		if ds > 29 {
			return errCorrupt
		}
		extra, err = z.need(distExtra[ds])
		if err != nil {
			return err
		}
		d := int(distBase[ds]) + int(extra)
		if d > z.wpos && !z.filled {
			return errCorrupt // before the start of the stream
		}
		for ; length > 0; length-- {
			z.put(z.window[(z.wpos-d)&(len(z.window)-1)])
		}
	}
	return nil
}

func (z *inflater) put(c byte) {
	z.window[z.wpos] = c
	z.wpos++
	if z.wpos == len(z.window) {
		z.wpos, z.filled = 0, true
	}
	z.out = append(z.out, c)
}

// need returns the next n bits (n ≤ 16), least significant first.
func (z *inflater) need(n uint) (uint32, error) {
	for z.nbits < n {
		c, err := z.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		z.bits |= uint32(c) << z.nbits
		z.nbits += 8
	}
	v := z.bits & (1<<n - 1)
	z.bits >>= n
	z.nbits -= n
	return v, nil
}

// stored copies a stored block (RFC 1951 §3.2.4).
func (z *inflater) stored() error {
	z.bits, z.nbits = 0, 0 // to the byte boundary
	var hdr [4]byte
	for i := range hdr {
		c, err := z.r.ReadByte()
		if err != nil {
			return io.ErrUnexpectedEOF
		}
		hdr[i] = c
	}
	n := int(hdr[0]) | int(hdr[1])<<8
	if n != ^(int(hdr[2])|int(hdr[3])<<8)&0xffff {
		return errCorrupt
	}
	for ; n > 0; n-- {
		c, err := z.r.ReadByte()
		if err != nil {
			return io.ErrUnexpectedEOF
		}
		z.put(c)
	}
	return nil
}

// codeLengthOrder is RFC 1951 §3.2.7's order of the code length codes.
var codeLengthOrder = [19]int{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}

// dynamic reads the code tables of a dynamic block (RFC 1951 §3.2.7).
func (z *inflater) dynamic() error {
	v, err := z.need(14)
	if err != nil {
		return err
	}
	nlen, ndist, ncode := int(v&31)+257, int(v>>5&31)+1, int(v>>10)+4
	if nlen > 286 || ndist > 30 {
		return errCorrupt
	}
	var lengths [320]uint8
	for i := 0; i < ncode; i++ {
		l, err := z.need(3)
		if err != nil {
			return err
		}
		lengths[codeLengthOrder[i]] = uint8(l)
	}
	cl, err := newHuffman(lengths[:19])
	if err != nil {
		return err
	}
	clear(lengths[:19])
	for i := 0; i < nlen+ndist; {
		sym, err := z.decode(cl)
		if err != nil {
			return err
		}
		if sym < 16 {
			lengths[i] = uint8(sym)
			i++
			continue
		}
		var prev uint8
		var rep uint32
		switch sym {
		case 16:
			if i == 0 {
				return errCorrupt
			}
			prev = lengths[i-1]
			rep, err = z.need(2)
			rep += 3
		case 17:
			rep, err = z.need(3)
			rep += 3
		default:
			rep, err = z.need(7)
			rep += 11
		}
		if err != nil {
			return err
		}
		if i+int(rep) > nlen+ndist {
			return errCorrupt
		}
		for ; rep > 0; rep-- {
			lengths[i] = prev
			i++
		}
	}
	if lengths[256] == 0 {
		return errCorrupt // no end-of-block code
	}
	if z.lit, err = newHuffman(lengths[:nlen]); err != nil {
		return err
	}
	z.dist, err = newHuffman(lengths[nlen : nlen+ndist])
	return err
}

// huffman is a canonical Huffman code (RFC 1951 §3.2.2): how many codes
// of each length, and the symbols in code order.
type huffman struct {
	count  [16]uint16
	symbol []uint16
}

func newHuffman(lengths []uint8) (*huffman, error) {
	h := &huffman{symbol: make([]uint16, len(lengths))}
	for _, l := range lengths {
		h.count[l]++
	}
	h.count[0] = 0
	left := 1
	for l := 1; l < 16; l++ {
		left = left<<1 - int(h.count[l])
		if left < 0 {
			return nil, errCorrupt // over-subscribed
		}
	}
	var offs [16]uint16
	for l := 1; l < 15; l++ {
		offs[l+1] = offs[l] + h.count[l]
	}
	for sym, l := range lengths {
		if l != 0 {
			h.symbol[offs[l]] = uint16(sym)
			offs[l]++
		}
	}
	return h, nil
}

// decode reads one symbol a bit at a time, never a bit more than its
// code has.
func (z *inflater) decode(h *huffman) (int, error) {
	code, first, index := 0, 0, 0
	for l := 1; l < 16; l++ {
		b, err := z.need(1)
		if err != nil {
			return 0, err
		}
		code |= int(b)
		count := int(h.count[l])
		if code-first < count {
			return int(h.symbol[index+code-first]), nil
		}
		index += count
		first = (first + count) << 1
		code <<= 1
	}
	return 0, errCorrupt
}

// RFC 1951 §3.2.5: the lengths and distances of back-references.
var (
	lenBase   = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lenExtra  = [29]uint{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase  = [30]uint16{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra = [30]uint{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
)

// The fixed codes of RFC 1951 §3.2.6.
var fixedLit, fixedDist = func() (*huffman, *huffman) {
	var l [288]uint8
	for i := range l {
		switch {
		case i < 144:
			l[i] = 8
		case i < 256:
			l[i] = 9
		case i < 280:
			l[i] = 7
		default:
			l[i] = 8
		}
	}
	lit, _ := newHuffman(l[:])
	var d [30]uint8
	for i := range d {
		d[i] = 5
	}
	dist, _ := newHuffman(d[:])
	return lit, dist
}()
