// gencorpus writes the message corpus of tests/bench/mime.sh: a few hundred
// messages in the shapes mail really comes in (base64 and quoted-printable,
// RFC 2231 and RFC 2047 names, forwarded messages, uuencode, one 20 MB
// attachment), and expect.txt, one line per file a correct unpacker writes:
// "MESSAGE SHA256 NAME".
//
// It uses the standard library only, not package mime, so that the corpus
// does not share the mistakes of the program it measures.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"flag"
	"fmt"
	"math/rand/v2"
	"mime"
	"mime/quotedprintable"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	dir := flag.String("o", "corpus", "output directory")
	n := flag.Int("n", 300, "number of messages")
	bigMB := flag.Int("big", 20, "size of the big attachment in MiB (in message 0)")
	flag.Parse()
	if err := run(*dir, *n, *bigMB); err != nil {
		fmt.Fprintln(os.Stderr, "gencorpus:", err)
		os.Exit(1)
	}
}

type file struct {
	name    string
	content []byte
}

func run(dir string, n, bigMB int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var expect strings.Builder
	for i := 0; i < n; i++ {
		msg, files := message(rng, i, bigMB)
		id := fmt.Sprintf("msg%03d", i)
		if err := os.WriteFile(filepath.Join(dir, id+".eml"), msg, 0o644); err != nil {
			return err
		}
		for _, f := range files {
			fmt.Fprintf(&expect, "%s %x %s\n", id, sha256.Sum256(f.content), f.name)
		}
	}
	return os.WriteFile(filepath.Join(dir, "expect.txt"), []byte(expect.String()), 0o644)
}

var names = []string{
	"Отчёт %d.pdf", "報告書%d.pdf", "Grüße %d.doc", "café-%d.png", "résumé %d.odt", "データ%d.zip", "Σύνοψη %d.xlsx",
}

func random(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func text(rng *rand.Rand, lines int, nonASCII bool) []byte {
	words := []string{"mail", "queue", "tern", "delivery", "boundary", "header", "message"}
	if nonASCII {
		words = append(words, "Grüße", "naïve", "Привет", "日本")
	}
	var b bytes.Buffer
	for l := 0; l < lines; l++ {
		for w := 0; w < 8; w++ {
			if w > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(words[rng.IntN(len(words))])
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func b64(data []byte) string {
	s := base64.StdEncoding.EncodeToString(data)
	var b strings.Builder
	for len(s) > 76 {
		b.WriteString(s[:76] + "\n")
		s = s[76:]
	}
	b.WriteString(s + "\n")
	return b.String()
}

func qp(data []byte) string {
	var b bytes.Buffer
	w := quotedprintable.NewWriter(&b)
	w.Write(data)
	w.Close()
	return strings.ReplaceAll(b.String(), "\r\n", "\n")
}

const head = "From: Ann <ann@example.org>\nTo: bob@example.org\nSubject: corpus message\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMIME-Version: 1.0\n"

func message(rng *rand.Rand, i, bigMB int) ([]byte, []file) {
	var b strings.Builder
	var files []file
	bd := fmt.Sprintf("=_b%d", i)
	b.WriteString(head)
	fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"%s\"\n\nThis is a MIME message.\n\n--%s\nContent-Type: text/plain; charset=us-ascii\n\nHello, see attached.\n", bd, bd)
	part := func(h, body string) {
		fmt.Fprintf(&b, "\n--%s\n%s\n\n%s", bd, h, body)
	}
	switch {
	case i == 0:
		f := file{"big.bin", random(rng, bigMB<<20)}
		part("Content-Type: application/octet-stream; name=\"big.bin\"\nContent-Disposition: attachment; filename=\"big.bin\"\nContent-Transfer-Encoding: base64", b64(f.content))
		files = append(files, f)
	case i%8 == 0: // plain ASCII name, base64
		f := file{fmt.Sprintf("report-%d.pdf", i), random(rng, 1000+rng.IntN(200000))}
		part("Content-Type: application/pdf; name=\""+f.name+"\"\nContent-Disposition: attachment; filename=\""+f.name+"\"\nContent-Transfer-Encoding: base64", b64(f.content))
		files = append(files, f)
	case i%8 == 1: // RFC 2231 name
		f := file{fmt.Sprintf(names[i%len(names)], i), random(rng, 1000+rng.IntN(100000))}
		p := mime.FormatMediaType("attachment", map[string]string{"filename": f.name})
		part("Content-Type: application/octet-stream\nContent-Disposition: "+p+"\nContent-Transfer-Encoding: base64", b64(f.content))
		files = append(files, f)
	case i%8 == 2: // RFC 2047 name, as Outlook and go-message write it
		f := file{fmt.Sprintf(names[(i+3)%len(names)], i), random(rng, 1000+rng.IntN(100000))}
		w := mime.BEncoding.Encode("utf-8", f.name)
		part("Content-Type: application/octet-stream; name=\""+w+"\"\nContent-Disposition: attachment; filename=\""+w+"\"\nContent-Transfer-Encoding: base64", b64(f.content))
		files = append(files, f)
	case i%8 == 3: // quoted-printable text attachment
		f := file{fmt.Sprintf("notes-%d.txt", i), text(rng, 20+rng.IntN(200), true)}
		part("Content-Type: text/plain; charset=utf-8; name=\""+f.name+"\"\nContent-Disposition: attachment; filename=\""+f.name+"\"\nContent-Transfer-Encoding: quoted-printable", qp(f.content))
		files = append(files, f)
	case i%8 == 4: // a forwarded message with an attachment inside
		f := file{fmt.Sprintf("inner-%d.zip", i), random(rng, 1000+rng.IntN(50000))}
		inner := "From: carol@example.org\nSubject: inner\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"=_in\"\n\n--=_in\nContent-Type: text/plain\n\ninner text\n--=_in\nContent-Type: application/zip; name=\"" + f.name + "\"\nContent-Transfer-Encoding: base64\n\n" + b64(f.content) + "--=_in--\n"
		part("Content-Type: message/rfc822", inner)
		files = append(files, f)
	case i%8 == 5: // uuencoded in the text, the pre-MIME way
		f := file{fmt.Sprintf("old-%d.bin", i), random(rng, 500+rng.IntN(20000))}
		part("Content-Type: text/plain; charset=us-ascii", "Here it is:\n\n"+uuencode(f.name, f.content)+"\nbye\n")
		files = append(files, f)
	case i%8 == 6: // 7bit CSV
		f := file{fmt.Sprintf("table-%d.csv", i), []byte(strings.ReplaceAll(string(text(rng, 50, false)), " ", ","))}
		part("Content-Type: text/csv; charset=us-ascii; name=\""+f.name+"\"\nContent-Disposition: attachment; filename=\""+f.name+"\"\nContent-Transfer-Encoding: 7bit", string(f.content))
		files = append(files, f)
	default: // two attachments, one with a long RFC 2231 name in pieces
		f1 := file{fmt.Sprintf("photo-%d.png", i), random(rng, 5000+rng.IntN(100000))}
		f2 := file{fmt.Sprintf("Протокол заседания правления номер %d.pdf", i), random(rng, 5000+rng.IntN(50000))}
		part("Content-Type: image/png; name=\""+f1.name+"\"\nContent-Transfer-Encoding: base64", b64(f1.content))
		part("Content-Type: application/pdf\nContent-Disposition: attachment;\n filename*0*=utf-8''"+pct(f2.name[:40])+";\n filename*1*="+pct(f2.name[40:])+"\nContent-Transfer-Encoding: base64", b64(f2.content))
		files = append(files, f1, f2)
	}
	fmt.Fprintf(&b, "\n--%s--\n", bd)
	return []byte(b.String()), files
}

func pct(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func uuencode(name string, data []byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "begin 644 %s\n", name)
	enc := func(c byte) byte {
		if c == 0 {
			return '`'
		}
		return c + ' '
	}
	for len(data) > 0 {
		n := min(45, len(data))
		line := data[:n]
		data = data[n:]
		b.WriteByte(enc(byte(n)))
		for j := 0; j < n; j += 3 {
			var t [3]byte
			copy(t[:], line[j:min(j+3, n)])
			b.WriteByte(enc(t[0] >> 2))
			b.WriteByte(enc((t[0]<<4 | t[1]>>4) & 0x3f))
			b.WriteByte(enc((t[1]<<2 | t[2]>>6) & 0x3f))
			b.WriteByte(enc(t[2] & 0x3f))
		}
		b.WriteByte('\n')
	}
	b.WriteString("`\nend\n")
	return b.String()
}
