package mime

import (
	"bytes"
	"io"
	"sort"
	"strings"
	"testing"

	"github.com/emersion/go-message/charset"
)

// The table stands in for go-message's charset package: every name in it
// must convert exactly as charset.Reader does, and names mail really
// carries must be in it.
func TestCharsetsAsGoMessage(t *testing.T) {
	if !sort.SliceIsSorted(charsetNames[:], func(i, j int) bool { return charsetNames[i].name < charsetNames[j].name }) {
		t.Fatal("charsetNames is not sorted; run go generate")
	}
	var sample []byte
	for i := 0; i < 256; i++ {
		sample = append(sample, byte(i))
	}
	// Some multibyte text in the CJK encodings, and escapes of ISO-2022-JP.
	sample = append(sample, "\x1b$B$3$s$K$A$O\x1b(B \xa4\xb3\xa4\xf3 \x82\xb1\x82\xf1 \xc4\xe3\xba\xc3 \xa7\x41"...)
	names := []string{"UTF-8", " Windows-1252 ", "ISO-8859-15", "KOI8-R", "Shift_JIS", "x-sjis", "EUC-JP",
		"ISO-2022-JP", "GB2312", "GBK", "gb18030", "Big5", "EUC-KR", "ks_c_5601-1987", "UTF-16", "utf-16le",
		"us-ascii", "ANSI_X3.4-1968", "latin1", "cp1251", "ibm866", "ANSI_X3.110-1983", "x-utf_8j", "csISOLatin2", "ISOLatin2"}
	for _, n := range charsetNames {
		names = append(names, n.name, strings.ToUpper(n.name))
	}
	for _, n := range names {
		want, werr := charset.Reader(n, bytes.NewReader(sample))
		got, gerr := charsetReader(n, bytes.NewReader(sample))
		if (werr == nil) != (gerr == nil) {
			t.Errorf("%q: go-message says %v, we say %v", n, werr, gerr)
			continue
		}
		if werr != nil {
			continue
		}
		w, _ := io.ReadAll(want)
		g, _ := io.ReadAll(got)
		if !bytes.Equal(w, g) {
			t.Errorf("%q: converted differently:\n got %q\nwant %q", n, g, w)
		}
	}
	for _, n := range []string{"", "unknown-8bit", "x-unknown", "utf-7", "iso-8859-12", "cs"} {
		_, werr := charset.Reader(n, strings.NewReader(""))
		_, gerr := charsetReader(n, strings.NewReader(""))
		if (werr == nil) != (gerr == nil) {
			t.Errorf("%q: go-message says %v, we say %v", n, werr, gerr)
		}
	}
}
