package mime

import (
	"bytes"
	stdmime "mime"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxNameBytes leaves room under NAME_MAX (255) for a "-NNNN" suffix.
const maxNameBytes = 240

// SafeName makes a filename from a message safe to create in a directory:
// only its last path element (senders write "C:\Users\x\a.pdf" and
// "../../.bashrc"), no control or format characters, no leading dots or
// spaces, valid UTF-8, and at most maxNameBytes bytes, cut at a character
// and keeping the extension. It returns "" when nothing is left.
func SafeName(name string) string {
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	var b strings.Builder
	for i, r := range name {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(name[i:], "\uFFFD"):
			b.WriteByte('_') // an invalid byte
		case r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0):
			b.WriteByte('_')
		case unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029':
			// Bidi overrides and the like disguise an extension
			// ("invoice\u202Efdp.exe").
			b.WriteByte('_')
		default:
			b.WriteRune(r)
		}
	}
	name = strings.TrimSpace(b.String())
	name = strings.TrimLeft(name, ". ")
	name = strings.TrimRight(name, " ")
	if len(name) > maxNameBytes {
		ext := path.Ext(name)
		if len(ext) > 16 || !utf8.ValidString(ext) {
			ext = ""
		}
		stem := name[:len(name)-len(ext)]
		cut := maxNameBytes - len(ext)
		for cut > 0 && !utf8.RuneStart(stem[cut]) {
			cut--
		}
		name = stem[:cut] + ext
	}
	return name
}

// typeExts gives extensions for the types people send most; the system's
// mime.types is asked only after these, so that names do not change from
// host to host. A table rather than a map: a map literal is built when the
// program starts, by every run of tern-mime, used or not.
var typeExts = []struct{ typ, ext string }{
	{"text/plain", ".txt"},
	{"text/html", ".html"},
	{"text/calendar", ".ics"},
	{"text/csv", ".csv"},
	{"text/markdown", ".md"},
	{"text/xml", ".xml"},
	{"text/x-vcard", ".vcf"},
	{"text/vcard", ".vcf"},
	{"text/rfc822-headers", ".txt"},
	{"message/rfc822", ".eml"},
	{"message/delivery-status", ".txt"},
	{"application/pdf", ".pdf"},
	{"application/zip", ".zip"},
	{"application/gzip", ".gz"},
	{"application/x-gzip", ".gz"},
	{"application/x-tar", ".tar"},
	{"application/json", ".json"},
	{"application/xml", ".xml"},
	{"application/octet-stream", ".bin"},
	{"application/pgp-signature", ".asc"},
	{"application/pkcs7-signature", ".p7s"},
	{"application/msword", ".doc"},
	{"application/vnd.openxmlformats-officedocument.wordprocessingml.document", ".docx"},
	{"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", ".xlsx"},
	{"application/vnd.oasis.opendocument.text", ".odt"},
	{"image/png", ".png"},
	{"image/jpeg", ".jpg"},
	{"image/gif", ".gif"},
	{"image/webp", ".webp"},
	{"image/svg+xml", ".svg"},
	{"audio/mpeg", ".mp3"},
	{"audio/ogg", ".ogg"},
	{"video/mp4", ".mp4"},
}

// extForType gives the extension of a type in typeExts.
func extForType(typ string) (string, bool) {
	for _, te := range typeExts {
		if te.typ == typ {
			return te.ext, true
		}
	}
	return "", false
}

// nameFor makes a name for a part that has none: "part-1.2" and an
// extension for its type.
func nameFor(p *Part) string {
	ext, ok := extForType(p.Type)
	if !ok {
		ext = ".bin"
		if strings.HasPrefix(p.Type, "text/") {
			ext = ".txt"
		}
	}
	num := p.Number
	if num == "" {
		num = "0"
	}
	return "part-" + num + ext
}

// typeForExt is typeExts the other way round, for pack: where several
// types share an extension, the one chosen here, else the first in sort
// order.
func typeForExt(ext string) (string, bool) {
	switch ext {
	case ".txt":
		return "text/plain", true
	case ".xml":
		return "application/xml", true
	case ".vcf":
		return "text/vcard", true
	case ".gz", ".tgz":
		return "application/gzip", true
	case ".jpeg":
		return "image/jpeg", true
	case ".htm":
		return "text/html", true
	case ".bin":
		return "", false
	}
	typ := ""
	for _, te := range typeExts {
		if te.ext == ext && (typ == "" || te.typ < typ) {
			typ = te.typ
		}
	}
	return typ, typ != ""
}

// TypeOf picks a content type for a file from its name, then its content
// (the first 512 bytes, as http.DetectContentType reads them).
func TypeOf(name string, head []byte) string {
	ext := strings.ToLower(path.Ext(name))
	if t, ok := typeForExt(ext); ok {
		return t
	}
	if ext != "" {
		if t := stdmime.TypeByExtension(ext); t != "" {
			t, _, _ = strings.Cut(t, ";")
			return t
		}
	}
	return sniff(head)
}

// magic numbers of the formats sent most, for files without a known
// extension. (net/http's DetectContentType does more, but linking net/http
// doubles the program and its start-up time, which is most of the time a
// script spends on a small message.)
var magic = []struct{ prefix, typ string }{
	{"%PDF-", "application/pdf"},
	{"\x89PNG\r\n\x1a\n", "image/png"},
	{"\xff\xd8\xff", "image/jpeg"},
	{"GIF87a", "image/gif"},
	{"GIF89a", "image/gif"},
	{"PK\x03\x04", "application/zip"},
	{"\x1f\x8b", "application/gzip"},
	{"%!PS", "application/postscript"},
}

func sniff(head []byte) string {
	for _, m := range magic {
		if bytes.HasPrefix(head, []byte(m.prefix)) {
			return m.typ
		}
	}
	// A cut multibyte sequence at the end of the sample is not binary.
	for i := 0; i < 3 && len(head) > 0 && !utf8.Valid(head); i++ {
		head = head[:len(head)-1]
	}
	if utf8.Valid(head) && !bytes.ContainsFunc(head, func(r rune) bool { return r < ' ' && r != '\n' && r != '\r' && r != '\t' && r != '\f' }) {
		return "text/plain"
	}
	return "application/octet-stream"
}
