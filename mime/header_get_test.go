package mime

import (
	"bufio"
	"math/rand"
	"strings"
	"testing"

	"github.com/emersion/go-message/textproto"
)

// header.get stands in for go-message's Header.Get, which unpack used
// before: the first field of a name in any case, trimmed of spaces and
// tabs. Random headers are read both ways.
func TestHeaderGetAsGoMessage(t *testing.T) {
	rnd := rand.New(rand.NewSource(2))
	names := []string{"Content-Type", "content-type", "CONTENT-TYPE", "Content-Transfer-Encoding",
		"content-disposition", "Content-Disposition", "X-Other", "Content-Type(", "Content_Type"}
	pieces := []string{" ", "\t", "text/plain", "; charset=\"utf-8\"", "\r", "\xa0", "\u00a0", "base64", "=?utf-8?q?a?=", "\v", ""}
	for n := 0; n < 5000; n++ {
		var b strings.Builder
		for k := rnd.Intn(6); k > 0; k-- {
			b.WriteString(names[rnd.Intn(len(names))])
			b.WriteString(":")
			for j := rnd.Intn(5); j > 0; j-- {
				b.WriteString(pieces[rnd.Intn(len(pieces))])
			}
			if rnd.Intn(4) == 0 {
				b.WriteString("\r\n\t" + pieces[rnd.Intn(len(pieces))])
			}
			b.WriteString("\r\n")
		}
		b.WriteString("\r\nbody\r\n")
		hd, err := readHeader(bufio.NewReader(strings.NewReader(b.String())))
		if err != nil {
			t.Fatal(err)
		}
		// What readHeader handed go-message before: the fields last to first.
		var h textproto.Header
		for i := len(hd.raw) - 1; i >= 0; i-- {
			k, v, _ := strings.Cut(hd.raw[i], ":")
			h.AddRaw([]byte(k + ":" + v + "\r\n"))
		}
		for _, name := range []string{"Content-Type", "Content-Transfer-Encoding", "Content-Disposition"} {
			if got, want := hd.get(name), h.Get(name); got != want {
				t.Fatalf("header %q: get(%s) = %q, go-message %q", b.String(), name, got, want)
			}
		}
	}
}
