package smtpd

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// Refusals of message content. Each is answered once the message has
// ended (the engine reads it to its end), and nothing of it is queued.
var (
	// RFC 5321 §2.3.8: CR and LF only as CRLF. A bare one is how SMTP
	// smuggling hides a second message in the first (CVE-2023-51764):
	// "\n.\n", "\r\n.\n" and "\n.\r\n" end DATA for some servers and not
	// for others.
	errBareLF = smtpErr(550, smtp.EnhancedCode{5, 6, 0}, "message refused: bare LF (RFC 5321 section 2.3.8); lines must end in CRLF")
	errBareCR = smtpErr(550, smtp.EnhancedCode{5, 6, 0}, "message refused: bare CR (RFC 5321 section 2.3.8); lines must end in CRLF")
	errNUL    = smtpErr(550, smtp.EnhancedCode{5, 6, 0}, "message refused: NUL byte in the message")
	// RFC 5321 §4.5.3.1.6 and §4.5.3.1.10.
	errLongLine = smtpErr(500, smtp.EnhancedCode{5, 5, 2}, "line too long: more than 1000 octets (RFC 5321 section 4.5.3.1.6)")
)

func errTooBig(max int64) *smtp.SMTPError {
	// RFC 1870 §6.3.
	return smtpErr(552, smtp.EnhancedCode{5, 3, 4}, "message exceeds fixed maximum message size %d", max)
}

// checker scans a message as the client sent it (CRLF line ends, dots
// unstuffed) and returns it with LF line ends, as the queue's pipe takes
// it. It refuses bare CR, bare LF, NUL, lines over MaxLine octets and
// messages over max.
type checker struct {
	max  int64
	size int64
	line int
	cr   bool
	high byte // every octet ORed: its top bit says the text is 8-bit
	out  []byte
}

// eightBit reports whether the text so far has an octet over 127
// (RFC 6152), which the queue keeps for delivery.
func (c *checker) eightBit() bool { return c.high&0x80 != 0 }

func (c *checker) scan(p []byte) ([]byte, *smtp.SMTPError) {
	c.out = c.out[:0]
	if c.size+int64(len(p)) > c.max {
		return nil, errTooBig(c.max)
	}
	c.size += int64(len(p))
	start := 0
	for i, b := range p {
		switch b {
		case '\r':
			if c.cr {
				return nil, errBareCR
			}
			c.out = append(c.out, p[start:i]...)
			start = i + 1
			c.cr = true
			continue
		case '\n':
			if !c.cr {
				return nil, errBareLF
			}
			c.cr = false
			c.line = 0
			continue
		case 0:
			return nil, errNUL
		}
		if c.cr {
			return nil, errBareCR
		}
		c.high |= b
		c.line++
		if c.line > MaxLine-2 {
			return nil, errLongLine
		}
	}
	c.out = append(c.out, p[start:]...)
	return c.out, nil
}

// end is called after the last byte; it returns what must still be
// written: a newline when the message did not end in one (BDAT allows
// that).
func (c *checker) end() ([]byte, *smtp.SMTPError) {
	if c.cr {
		return nil, errBareCR
	}
	if c.line > 0 {
		return []byte{'\n'}, nil
	}
	return nil, nil
}

// spool holds a message while it is read: in memory up to memLimit, then
// in an unlinked temporary file, so a hundred clients sending 35 MB each
// do not need 3.5 GB of memory.
type spool struct {
	dir string
	mem bytes.Buffer
	f   *os.File
}

const memLimit = 1 << 20

func (s *spool) Write(p []byte) (int, error) {
	if s.f == nil && s.mem.Len()+len(p) > memLimit {
		f, err := os.CreateTemp(s.dir, "tern-smtpd-")
		if err != nil {
			return 0, fmt.Errorf("hold message: %w", err)
		}
		os.Remove(f.Name())
		s.f = f
		if _, err := f.Write(s.mem.Bytes()); err != nil {
			return 0, fmt.Errorf("hold message in %s: %w", f.Name(), err)
		}
		s.mem = bytes.Buffer{}
	}
	if s.f != nil {
		n, err := s.f.Write(p)
		if err != nil {
			return n, fmt.Errorf("hold message in %s: %w", s.f.Name(), err)
		}
		return n, nil
	}
	return s.mem.Write(p)
}

// Reader returns the message from its start: the file itself, when there
// is one, so a child process reads it straight from its descriptor.
func (s *spool) Reader() (io.Reader, error) {
	if s.f != nil {
		if _, err := s.f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		return s.f, nil
	}
	return bytes.NewReader(s.mem.Bytes()), nil
}

func (s *spool) Close() error {
	if s.f != nil {
		return s.f.Close()
	}
	return nil
}

// receivedLocked makes the Received line (RFC 5321 §4.4, RFC 5322
// §3.6.7): the client's HELO name, its name if known and address, this
// host, the protocol in the words of RFC 3848 and RFC 6531 §3.7.3, the
// TLS version and cipher, an id, and the recipient when there is only
// one (more would tell each recipient of the others).
//
// The id is the queue ID when the Enqueuer makes it beforehand (IDMaker),
// else the connection id and the message's number.
func (s *session) receivedLocked(id string, env Envelope) string {
	var b strings.Builder
	b.WriteString("Received: from ")
	b.WriteString(cleanHelo(s.heloName))
	b.WriteString(" (")
	if s.rdnsName != "" && isClosed(s.rdnsDone) {
		b.WriteString(cleanHelo(s.rdnsName))
		b.WriteString(" ")
	}
	if ip := s.remote(); ip.IsValid() {
		if ip.Is6() {
			b.WriteString("[IPv6:" + ip.String() + "]")
		} else {
			b.WriteString("[" + ip.String() + "]")
		}
	} else {
		b.WriteString("unknown")
	}
	b.WriteString(")\r\n\tby ")
	b.WriteString(s.host())
	b.WriteString(" (tern) with ")
	proto := "SMTP"
	if s.esmtp {
		proto = "ESMTP"
	}
	tlsInfo, isTLS := s.tlsState()
	if s.conv.SMTPUTF8 {
		proto = "UTF8SMTP"
	}
	if isTLS {
		proto += "S"
	}
	if s.user != nil {
		proto += "A"
	}
	b.WriteString(proto)
	if isTLS {
		b.WriteString(" (" + tlsInfo + ")")
	}
	b.WriteString("\r\n\tid ")
	b.WriteString(id)
	if len(env.Recipients) == 1 && !strings.ContainsAny(env.Recipients[0].Addr, "<>\r\n") {
		b.WriteString("\r\n\tfor <" + env.Recipients[0].Addr + ">")
	}
	b.WriteString("; ")
	b.WriteString(s.cfg.now().Format(time.RFC1123Z))
	b.WriteString("\r\n")
	// The pipe takes LF line ends.
	return strings.ReplaceAll(b.String(), "\r\n", "\n")
}

// cleanHelo keeps a client-given name from breaking the header: printable
// ASCII without parentheses, backslash or brackets, at most 255 octets.
func cleanHelo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < 255; i++ {
		c := s[i]
		if c > ' ' && c < 0x7f && !strings.ContainsRune("()\\;", rune(c)) {
			b.WriteByte(c)
		} else {
			b.WriteByte('?')
		}
	}
	if b.Len() == 0 {
		return "unknown"
	}
	return b.String()
}

func tlsVersion(v uint16) string {
	return strings.ReplaceAll(tls.VersionName(v), " ", "")
}

func tlsCipher(c uint16) string { return tls.CipherSuiteName(c) }

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
