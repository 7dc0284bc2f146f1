package mime

//go:generate go run gencharsets.go

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/transform"
)

// charsetReader converts text in a charset (RFC 2045 §5.1, RFC 2046 §4.1.2)
// to UTF-8. It knows the names go-message's charset.Reader knows, and gives
// the same encodings for them (charsets_table.go is made from that package
// and checked against it by a test), but looks them up in a sorted table
// instead of the x/text indexes, whose initialisation every run of
// tern-mime paid, mostly for no converted byte at all: what that costs shows
// in tests/bench/mime.sh's "start" row of a tern-mime built with
// go-message's charset.Reader here instead.
func charsetReader(name string, r io.Reader) (io.Reader, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	i := sort.Search(len(charsetNames), func(i int) bool { return charsetNames[i].name >= n })
	if i == len(charsetNames) || charsetNames[i].name != n {
		return nil, fmt.Errorf("charset %q: unsupported charset", name)
	}
	return charsetEncoding(charsetNames[i].id).NewDecoder().Reader(r), nil
}

// asciiEncoding is US-ASCII as x/text's IANA index has it: a byte above
// 0x7f decodes to U+FFFD.
type asciiEncoding struct{}

func (asciiEncoding) NewDecoder() *encoding.Decoder {
	return &encoding.Decoder{Transformer: asciiDecoder{}}
}

func (asciiEncoding) NewEncoder() *encoding.Encoder {
	return &encoding.Encoder{Transformer: asciiEncoder{}}
}

type asciiDecoder struct{ transform.NopResetter }

func (asciiDecoder) Transform(dst, src []byte, atEOF bool) (nDst, nSrc int, err error) {
	for _, c := range src {
		if c >= utf8.RuneSelf {
			if nDst+3 > len(dst) {
				return nDst, nSrc, transform.ErrShortDst
			}
			nDst += utf8.EncodeRune(dst[nDst:], utf8.RuneError)
		} else {
			if nDst >= len(dst) {
				return nDst, nSrc, transform.ErrShortDst
			}
			dst[nDst] = c
			nDst++
		}
		nSrc++
	}
	return nDst, nSrc, nil
}

// asciiEncoder is never used to write mail; it is here for the interface,
// and refuses what ASCII cannot say.
type asciiEncoder struct{ transform.NopResetter }

func (asciiEncoder) Transform(dst, src []byte, atEOF bool) (nDst, nSrc int, err error) {
	for _, c := range src {
		if c >= utf8.RuneSelf {
			return nDst, nSrc, fmt.Errorf("byte %#x is not ASCII", c)
		}
		if nDst >= len(dst) {
			return nDst, nSrc, transform.ErrShortDst
		}
		dst[nDst] = c
		nDst++
		nSrc++
	}
	return nDst, nSrc, nil
}
