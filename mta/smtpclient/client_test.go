package smtpclient

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
)

// server plays the other end of a net.Pipe from a script: each step reads
// one line and checks it, or writes a reply.
type step struct {
	expect string // a line the client must send, without CRLF; "" to only write
	reply  string // written after it, CRLF added per line
}

func playServer(t *testing.T, c net.Conn, greeting string, steps []step) <-chan error {
	done := make(chan error, 1)
	go func() {
		defer c.Close()
		r := bufio.NewReader(c)
		if _, err := io.WriteString(c, greeting+"\r\n"); err != nil {
			done <- err
			return
		}
		for _, s := range steps {
			if s.expect != "" {
				l, err := r.ReadString('\n')
				if err != nil {
					done <- err
					return
				}
				if l != s.expect+"\r\n" {
					done <- errors.New("got " + l + ", want " + s.expect)
					return
				}
			}
			if s.reply != "" {
				if _, err := io.WriteString(c, strings.ReplaceAll(s.reply, "\n", "\r\n")+"\r\n"); err != nil {
					done <- err
					return
				}
			}
		}
		done <- nil
	}()
	return done
}

func TestClientConversation(t *testing.T) {
	cc, sc := net.Pipe()
	done := playServer(t, sc, "220 mx.test ESMTP", []step{
		{"EHLO client.test", "250-mx.test\n250-SIZE 1000\n250 DSN"},
		{"MAIL FROM:<a@b.test> SIZE=10", "250 2.1.0 ok"},
		{"RCPT TO:<x@y.test> NOTIFY=NEVER", "550 5.1.1 unknown"},
		{"RCPT TO:<z@y.test>", "250 2.1.5 ok"},
		{"DATA", "354 go"},
		{"..dot", ""}, {"line", ""}, {".", "250 2.0.0 queued"},
		{"QUIT", "221 bye"},
	})
	c, err := New(cc, Options{Hostname: "client.test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Hello(); err != nil {
		t.Fatal(err)
	}
	if e := c.Extensions(); e.Size != 1000 || !e.DSN || e.Pipelining {
		t.Fatalf("extensions %+v", e)
	}
	reps, err := c.Envelope(&Transaction{From: "a@b.test", FromParams: []string{"SIZE=10"},
		Rcpts: []Rcpt{{Addr: "x@y.test", Params: []string{"NOTIFY=NEVER"}}, {Addr: "z@y.test"}}})
	if err != nil {
		t.Fatal(err)
	}
	if reps.Mail.Code != 250 || len(reps.Rcpts) != 2 || reps.Rcpts[0].String() != "550 5.1.1 unknown" || reps.Rcpts[1].Code != 250 {
		t.Fatalf("replies %+v", reps)
	}
	r, err := c.Data(Copy(strings.NewReader(".dot\nline"), make([]byte, 4)))
	if err != nil || r.String() != "250 2.0.0 queued" {
		t.Fatalf("DATA: %v %v", r, err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A greeting other than 220 is an error carrying the reply, after QUIT.
func TestClientGreetingRefused(t *testing.T) {
	cc, sc := net.Pipe()
	done := playServer(t, sc, "554 5.7.1 go away", []step{{"QUIT", "221 bye"}})
	_, err := New(cc, Options{Hostname: "client.test"})
	var re *ReplyError
	if !errors.As(err, &re) || re.Reply.Code != 554 || re.Reply.Status() != "5.7.1" {
		t.Fatalf("err = %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Credentials are never sent without TLS, whatever the server offers.
func TestClientAuthNeedsTLS(t *testing.T) {
	cc, sc := net.Pipe()
	done := playServer(t, sc, "220 mx.test", []step{{"EHLO client.test", "250-mx.test\n250 AUTH PLAIN"}, {"QUIT", "221 bye"}})
	c, err := New(cc, Options{Hostname: "client.test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Hello(); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "u", "p")); !errors.Is(err, ErrAuthWithoutTLS) {
		t.Fatalf("Auth without TLS: %v", err)
	}
	c.Quit()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A server that sends more after its 220 to STARTTLS could inject
// commands into the TLS session (CVE-2011-0411): refused.
func TestClientStartTLSInjection(t *testing.T) {
	cc, sc := net.Pipe()
	playServer(t, sc, "220 mx.test", []step{{"EHLO client.test", "250-mx.test\n250 STARTTLS"}, {"STARTTLS", "220 go ahead\n250 injected"}})
	c, err := New(cc, Options{Hostname: "client.test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Hello(); err != nil {
		t.Fatal(err)
	}
	// net.Pipe delivers the two lines in one read, as a socket would.
	if err := c.StartTLS(&tls.Config{InsecureSkipVerify: true}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("StartTLS = %v, want a protocol error", err)
	}
}

// When the text cannot be read, the connection is closed without the
// final dot: half a message is never delivered.
func TestClientBodyErrorSendsNoDot(t *testing.T) {
	cc, sc := net.Pipe()
	var got strings.Builder
	served := make(chan struct{})
	go func() {
		defer close(served)
		r := bufio.NewReader(sc)
		io.WriteString(sc, "220 mx.test\r\n")
		for {
			l, err := r.ReadString('\n')
			got.WriteString(l)
			if err != nil {
				return
			}
			if l == "DATA\r\n" {
				io.WriteString(sc, "354 go\r\n")
			} else if strings.HasPrefix(l, "EHLO") {
				io.WriteString(sc, "250 mx.test\r\n")
			}
		}
	}()
	c, err := New(cc, Options{Hostname: "client.test"})
	if err != nil {
		t.Fatal(err)
	}
	c.Hello()
	broken := io.MultiReader(strings.NewReader("first line\n"), &failingReader{})
	_, err = c.Data(Copy(broken, make([]byte, 512)))
	var be *BodyError
	if !errors.As(err, &be) {
		t.Fatalf("Data = %v, want a BodyError", err)
	}
	<-served // the client closed the connection
	if strings.Contains(got.String(), "\r\n.\r\n") {
		t.Fatalf("the final dot was sent: %q", got.String())
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

// A server that stops reading the text is given up after the data block
// timeout, not waited on for ever.
func TestClientDataBlockTimeout(t *testing.T) {
	cc, sc := net.Pipe()
	go func() {
		r := bufio.NewReader(sc)
		io.WriteString(sc, "220 mx.test\r\n")
		r.ReadString('\n')
		io.WriteString(sc, "250 mx.test\r\n")
		r.ReadString('\n')
		io.WriteString(sc, "354 go\r\n")
		// and reads no more
	}()
	defer sc.Close()
	c, err := New(cc, Options{Hostname: "client.test", DataBlockTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c.Hello()
	start := time.Now()
	_, err = c.Data(Copy(strings.NewReader(strings.Repeat("x", 1<<20)), make([]byte, 32<<10)))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Data = %v, want a timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("gave up after %v", d)
	}
}

// Every step has its own time limit (RFC 5321 §4.5.3.2): a server silent
// at that step is given up after that limit, whatever the others are.
func TestClientStepTimeouts(t *testing.T) {
	long := time.Minute
	for _, tt := range []struct {
		step string // the command the server does not answer
		set  func(o *Options)
	}{
		{"greeting", func(o *Options) { o.GreetingTimeout = 100 * time.Millisecond }},
		{"EHLO", func(o *Options) { o.EHLOTimeout = 100 * time.Millisecond }},
		{"MAIL", func(o *Options) { o.MailTimeout = 100 * time.Millisecond }},
		{"RCPT", func(o *Options) { o.RcptTimeout = 100 * time.Millisecond }},
		{"DATA", func(o *Options) { o.DataInitTimeout = 100 * time.Millisecond }},
		{".", func(o *Options) { o.DataEndTimeout = 100 * time.Millisecond }},
		{"RSET", func(o *Options) { o.CommandTimeout = 100 * time.Millisecond }},
	} {
		t.Run(tt.step, func(t *testing.T) {
			cc, sc := net.Pipe()
			defer sc.Close()
			go func() {
				r := bufio.NewReader(sc)
				if tt.step == "greeting" {
					io.Copy(io.Discard, r)
					return
				}
				io.WriteString(sc, "220 mx.test\r\n")
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					verb, _, _ := strings.Cut(strings.TrimSpace(l), " ")
					if verb == tt.step {
						io.Copy(io.Discard, r) // silent from here on
						return
					}
					switch verb {
					case "DATA":
						io.WriteString(sc, "354 go\r\n")
					case ".", "x":
					default:
						io.WriteString(sc, "250 ok\r\n")
					}
				}
			}()
			o := Options{Hostname: "client.test", GreetingTimeout: long, EHLOTimeout: long, MailTimeout: long,
				RcptTimeout: long, DataInitTimeout: long, DataBlockTimeout: long, DataEndTimeout: long, CommandTimeout: long}
			tt.set(&o)
			start := time.Now()
			err := func() error {
				c, err := New(cc, o)
				if err != nil {
					return err
				}
				if err := c.Hello(); err != nil {
					return err
				}
				if tt.step == "RSET" {
					return c.Reset()
				}
				reps, err := c.Envelope(&Transaction{From: "a@b.test", Rcpts: []Rcpt{{Addr: "x@y.test"}}})
				if err != nil {
					return err
				}
				if reps.Mail.Code != 250 {
					return reps.Mail.Err()
				}
				_, err = c.Data(Copy(strings.NewReader("x\n"), make([]byte, 64)))
				return err
			}()
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("err = %v, want a timeout", err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("gave up after %v, with %s's limit at 100ms", d, tt.step)
			}
		})
	}
}

// FuzzClientConversation plays a server whose replies are the fuzz input
// against a whole conversation: whatever the server says, the client
// neither panics nor hangs, and a reply it accepts is a well-formed one.
func FuzzClientConversation(f *testing.F) {
	f.Add([]byte("220 mx\r\n250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n250 2.0.0 queued\r\n221 bye\r\n"))
	f.Add([]byte("220 mx\r\n502 no\r\n250 hi\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n"))
	f.Add([]byte("220 mx\r\n250-mx\r\n250 STARTTLS\r\n220 go\r\n"))
	f.Fuzz(func(t *testing.T, script []byte) {
		cc, sc := net.Pipe()
		go io.Copy(io.Discard, sc)
		go func() {
			sc.Write(script) // returns once the client has read it all
			sc.Close()
		}()
		short := 200 * time.Millisecond
		o := Options{Hostname: "client.test", GreetingTimeout: short, EHLOTimeout: short, MailTimeout: short, RcptTimeout: short,
			DataInitTimeout: short, DataBlockTimeout: short, DataEndTimeout: short, CommandTimeout: short}
		c, err := New(cc, o)
		if err != nil {
			return
		}
		defer c.Close()
		if c.Hello() != nil {
			return
		}
		reps, err := c.Envelope(&Transaction{From: "a@b.test", Rcpts: []Rcpt{{Addr: "x@y.test"}, {Addr: "z@y.test"}}})
		if err != nil {
			return
		}
		if reps.Mail.Code < 200 || reps.Mail.Code > 599 || (reps.Rcpts != nil && len(reps.Rcpts) != 2) {
			t.Fatalf("replies %+v", reps)
		}
		c.Data(Copy(strings.NewReader("a\n.b\n"), make([]byte, 16)))
	})
}
