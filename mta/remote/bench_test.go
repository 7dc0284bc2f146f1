package remote

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/mta/route"
	"github.com/tern-mail/tern/mta/transport"
)

// benchText is a 4 KiB message, the size most mail is.
var benchText = "From: a@sender.test\nTo: b@example.org\nSubject: bench\n\n" + strings.Repeat("a line of text, as mail has, seventy-odd octets long, more or less....\n", 57)

// BenchmarkDeliver sends 4 KiB messages to a go-smtp sink on loopback,
// one recipient each: the transport with its connection cache, without it
// (a connection a message), and go-smtp's own client both ways, the
// library the transport's client replaces. msgs/s is the figure to
// compare; run with -cpuprofile to see where the time goes.
func BenchmarkDeliver(b *testing.B) {
	sink := newBenchSink(b)
	tg := route.Target{Host: "mx.example.org", Addrs: []netip.Addr{sink.ap.Addr()}, Port: int(sink.ap.Port())}
	hop := transport.Hop{Kind: transport.SMTP, Key: "smtp:example.org", Domain: "example.org"}
	rs := rcpts("b@example.org")
	msg := &transport.Message{ID: "B", Sender: "a@sender.test", Size: int64(len(benchText)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(benchText)), nil }}
	newTransport := func(perConn int) *Transport {
		return New(Options{
			Targets:            func(context.Context, string, *conf.Route) ([]route.Target, error) { return []route.Target{tg}, nil },
			Hostname:           "tern.test",
			MaxMessagesPerConn: perConn,
			Log:                slog.New(slog.DiscardHandler),
		})
	}
	run := func(b *testing.B, tr *Transport) {
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if r := tr.Deliver(ctx, msg, hop, rs); !r[0].Delivered() {
				b.Fatalf("result %+v", r[0])
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		tr.Close()
	}
	b.Run("tern/reuse", func(b *testing.B) { run(b, newTransport(0)) })
	b.Run("tern/no-reuse", func(b *testing.B) { run(b, newTransport(1)) })
	b.Run("tern/reuse-parallel-8", func(b *testing.B) {
		tr := newTransport(0)
		b.ReportAllocs()
		b.SetParallelism(4) // 2 cores × 4 = 8 senders
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if r := tr.Deliver(context.Background(), msg, hop, rs); !r[0].Delivered() {
					b.Errorf("result %+v", r[0])
					return
				}
			}
		})
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		tr.Close()
	})
	addr := sink.ap.String()
	b.Run("go-smtp/no-reuse", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			c, err := smtp.Dial(addr)
			if err != nil {
				b.Fatal(err)
			}
			if err := c.SendMail("a@sender.test", []string{"b@example.org"}, strings.NewReader(strings.ReplaceAll(benchText, "\n", "\r\n"))); err != nil {
				b.Fatal(err)
			}
			c.Quit()
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("go-smtp/reuse", func(b *testing.B) {
		b.ReportAllocs()
		c, err := smtp.Dial(addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Quit()
		for range b.N {
			if err := c.SendMail("a@sender.test", []string{"b@example.org"}, strings.NewReader(strings.ReplaceAll(benchText, "\n", "\r\n"))); err != nil {
				b.Fatal(err)
			}
			if err := c.Reset(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}

// benchSink is a go-smtp server that reads and drops every message.
type benchSink struct {
	ap  netip.AddrPort
	srv *smtp.Server
}

type sinkSession struct{}

func (sinkSession) Reset()                               {}
func (sinkSession) Logout() error                        { return nil }
func (sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (sinkSession) Data(r io.Reader) error               { _, err := io.Copy(io.Discard, r); return err }

func newBenchSink(b *testing.B) *benchSink {
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return sinkSession{}, nil }))
	srv.Domain = "sink.test"
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	b.Cleanup(func() { srv.Close() })
	return &benchSink{ap: netip.MustParseAddrPort(l.Addr().String()), srv: srv}
}
