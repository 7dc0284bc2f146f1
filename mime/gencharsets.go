//go:build ignore

// gencharsets writes charsets_table.go: every charset name that
// go-message's charset.Reader resolves, with the x/text encoding it resolves
// to. The names are those of x/text's IANA and WHATWG indexes, read from
// their sources. The table lets tern-mime convert the same charsets without
// linking those indexes, whose package initialisation (maps of some
// thousand names) every run of the program paid, unpack included (see
// charsetReader for the benchmark that shows it).
//
//	go run gencharsets.go
package main

import (
	"bytes"
	"fmt"
	"go/format"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/emersion/go-message/charset"
	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/htmlindex"
	"golang.org/x/text/encoding/ianaindex"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/korean"
	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/encoding/traditionalchinese"
	"golang.org/x/text/encoding/unicode"
)

// The encodings the indexes hand out, by the Go expression that names
// them; the order is the order of the ids in the table.
var encodings = []struct {
	expr string
	enc  encoding.Encoding
}{
	{"asciiEncoding{}", nil}, // ianaindex's own, found by its name
	{"unicode.UTF8", unicode.UTF8},
	{"unicode.UTF16(unicode.BigEndian, unicode.UseBOM)", unicode.UTF16(unicode.BigEndian, unicode.UseBOM)},
	{"unicode.UTF16(unicode.BigEndian, unicode.IgnoreBOM)", unicode.UTF16(unicode.BigEndian, unicode.IgnoreBOM)},
	{"unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM)", unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM)},
	{"encoding.Replacement", encoding.Replacement},
	{"japanese.EUCJP", japanese.EUCJP},
	{"japanese.ISO2022JP", japanese.ISO2022JP},
	{"japanese.ShiftJIS", japanese.ShiftJIS},
	{"korean.EUCKR", korean.EUCKR},
	{"simplifiedchinese.GB18030", simplifiedchinese.GB18030},
	{"simplifiedchinese.GBK", simplifiedchinese.GBK},
	{"simplifiedchinese.HZGB2312", simplifiedchinese.HZGB2312},
	{"traditionalchinese.Big5", traditionalchinese.Big5},
}

func init() {
	for _, c := range charmap.All {
		name := fmt.Sprint(c)
		expr := ""
		for _, v := range charmapVars {
			if v.enc == c {
				expr = "charmap." + v.name
			}
		}
		if expr == "" {
			log.Fatalf("charmap %s has no variable here", name)
		}
		encodings = append(encodings, struct {
			expr string
			enc  encoding.Encoding
		}{expr, c})
	}
}

var charmapVars = []struct {
	name string
	enc  encoding.Encoding
}{
	{"CodePage037", charmap.CodePage037}, {"CodePage437", charmap.CodePage437}, {"CodePage850", charmap.CodePage850},
	{"CodePage852", charmap.CodePage852}, {"CodePage855", charmap.CodePage855}, {"CodePage858", charmap.CodePage858},
	{"CodePage860", charmap.CodePage860}, {"CodePage862", charmap.CodePage862}, {"CodePage863", charmap.CodePage863},
	{"CodePage865", charmap.CodePage865}, {"CodePage866", charmap.CodePage866}, {"CodePage1047", charmap.CodePage1047},
	{"CodePage1140", charmap.CodePage1140}, {"ISO8859_1", charmap.ISO8859_1}, {"ISO8859_2", charmap.ISO8859_2},
	{"ISO8859_3", charmap.ISO8859_3}, {"ISO8859_4", charmap.ISO8859_4}, {"ISO8859_5", charmap.ISO8859_5},
	{"ISO8859_6", charmap.ISO8859_6}, {"ISO8859_6E", charmap.ISO8859_6E}, {"ISO8859_6I", charmap.ISO8859_6I},
	{"ISO8859_7", charmap.ISO8859_7}, {"ISO8859_8", charmap.ISO8859_8}, {"ISO8859_8E", charmap.ISO8859_8E},
	{"ISO8859_8I", charmap.ISO8859_8I}, {"ISO8859_9", charmap.ISO8859_9}, {"ISO8859_10", charmap.ISO8859_10},
	{"ISO8859_13", charmap.ISO8859_13}, {"ISO8859_14", charmap.ISO8859_14}, {"ISO8859_15", charmap.ISO8859_15},
	{"ISO8859_16", charmap.ISO8859_16}, {"KOI8R", charmap.KOI8R}, {"KOI8U", charmap.KOI8U},
	{"Macintosh", charmap.Macintosh}, {"MacintoshCyrillic", charmap.MacintoshCyrillic}, {"Windows874", charmap.Windows874},
	{"Windows1250", charmap.Windows1250}, {"Windows1251", charmap.Windows1251}, {"Windows1252", charmap.Windows1252},
	{"Windows1253", charmap.Windows1253}, {"Windows1254", charmap.Windows1254}, {"Windows1255", charmap.Windows1255},
	{"Windows1256", charmap.Windows1256}, {"Windows1257", charmap.Windows1257}, {"Windows1258", charmap.Windows1258},
	{"XUserDefined", charmap.XUserDefined},
}

// quirks is go-message's own table (charset.go), looked at first.
var quirks = map[string]encoding.Encoding{
	"ansi_x3.110-1983": charmap.ISO8859_1,
	"x-utf_8j":         unicode.UTF8,
}

// resolve is charset.Reader's lookup, giving the encoding.
func resolve(name string) encoding.Encoding {
	if e, ok := quirks[strings.ToLower(name)]; ok {
		return e
	}
	enc, err := ianaindex.MIME.Encoding(name)
	if enc == nil {
		enc, err = ianaindex.MIME.Encoding("cs" + name)
	}
	if enc == nil {
		enc, err = htmlindex.Get(name)
	}
	if err != nil {
		return nil
	}
	return enc
}

func main() {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "golang.org/x/text").Output()
	if err != nil {
		log.Fatal(err)
	}
	dir := strings.TrimSpace(string(out))
	key := regexp.MustCompile(`(?m)^\s*"([^"]+)":\s*\w+,`)
	names := map[string]bool{}
	for _, f := range []string{"encoding/ianaindex/tables.go", "encoding/htmlindex/tables.go"} {
		src, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			log.Fatal(err)
		}
		for _, m := range key.FindAllStringSubmatch(string(src), -1) {
			n := strings.ToLower(m[1])
			names[n] = true
			if strings.HasPrefix(n, "cs") {
				names[n[2:]] = true // found through the "cs" + name retry
			}
		}
	}
	for n := range quirks {
		names[n] = true
	}
	asciiEnc, _ := ianaindex.MIME.Encoding("us-ascii")

	type row struct {
		name string
		id   int
	}
	var rows []row
	sample := make([]byte, 256)
	for i := range sample {
		sample[i] = byte(i)
	}
	for n := range names {
		if _, err := charset.Reader(n, bytes.NewReader(nil)); err != nil {
			continue
		}
		enc := resolve(n)
		id := -1
		for i, e := range encodings {
			if e.enc == enc || (i == 0 && enc == asciiEnc) {
				id = i
			}
		}
		if id < 0 {
			log.Fatalf("%s: encoding %v not in the list", n, enc)
		}
		// The same bytes come out as through charset.Reader itself.
		r, _ := charset.Reader(n, bytes.NewReader(sample))
		want, _ := io.ReadAll(r)
		got, _ := io.ReadAll(enc.NewDecoder().Reader(bytes.NewReader(sample)))
		if !bytes.Equal(got, want) {
			log.Fatalf("%s: resolved to %s, which decodes differently", n, encodings[id].expr)
		}
		rows = append(rows, row{n, id})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].name < rows[j].name })

	var b bytes.Buffer
	fmt.Fprintf(&b, "// Code generated by gencharsets.go from golang.org/x/text's indexes and go-message's charset package; DO NOT EDIT.\n\n")
	fmt.Fprintf(&b, "package mime\n\nimport (\n\t\"golang.org/x/text/encoding\"\n\t\"golang.org/x/text/encoding/charmap\"\n\t\"golang.org/x/text/encoding/japanese\"\n\t\"golang.org/x/text/encoding/korean\"\n\t\"golang.org/x/text/encoding/simplifiedchinese\"\n\t\"golang.org/x/text/encoding/traditionalchinese\"\n\t\"golang.org/x/text/encoding/unicode\"\n)\n\n")
	fmt.Fprintf(&b, "// charsetNames holds every name go-message's charset.Reader knows, lower case and sorted, with\n// the index of its encoding in charsetEncoding.\nvar charsetNames = [...]struct {\n\tname string\n\tid   uint8\n}{\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "\t{%q, %d},\n", r.name, r.id)
	}
	fmt.Fprintf(&b, "}\n\n// charsetEncoding gives the encoding of an id in charsetNames.\nfunc charsetEncoding(id uint8) encoding.Encoding {\n\tswitch id {\n")
	for i, e := range encodings {
		fmt.Fprintf(&b, "\tcase %d:\n\t\treturn %s\n", i, e.expr)
	}
	fmt.Fprintf(&b, "\t}\n\treturn nil\n}\n")
	src, err := format.Source(b.Bytes())
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile("charsets_table.go", src, 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "gencharsets: %d names, %d encodings\n", len(rows), len(encodings))
}
