// Command echod is a tiny line protocol served through package serve, for
// tests only (it is not shipped: it lives under testdata). Every line gets
// an answer; a few words do more:
//
//	UID            +OK uid=N gid=N
//	LOGIN name     become the system account name (fails closed)
//	SLEEP ms       answer after ms milliseconds (a long command)
//	STARTTLS       upgrade to TLS with tls.crt/tls.key from --conf
//	TLS            +OK tls=true version=0304
//	QUIT           +OK bye, and hang up
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tern-mail/tern/internal/command"
	"github.com/tern-mail/tern/internal/logging"
	"github.com/tern-mail/tern/internal/privdrop"
	"github.com/tern-mail/tern/internal/serve"
	"github.com/tern-mail/tern/internal/tlsconf"
	"github.com/urfave/cli/v2"
)

func main() {
	flags := append(serve.Flags(),
		&cli.StringFlag{Name: "conf", EnvVars: []string{"TERN_CONF"}, Usage: "control directory with tls.crt and tls.key"},
		&cli.DurationFlag{Name: "grace", EnvVars: []string{"TERN_GRACE"}},
		&cli.DurationFlag{Name: "drain-idle", EnvVars: []string{"TERN_DRAIN_IDLE"}},
	)
	command.Main(&cli.App{Name: "echod", Usage: "line echo server for tests", Flags: flags, Action: run})
}

func run(c *cli.Context) error {
	log := logging.New("echod", os.Stderr, nil)
	o := serve.FromCLI(c, serve.Options{Log: log, Env: os.Environ(), Args: os.Args})
	o.Grace, o.DrainIdle = c.Duration("grace"), c.Duration("drain-idle")
	o.Busy = func(nc net.Conn) { io.WriteString(nc, "-ERR too many connections\r\n") }
	if dir := c.String("conf"); dir != "" {
		cert, err := tlsconf.LoadDir(dir, log)
		switch {
		case err == nil:
			o.TLS = cert.Config()
		case !errors.Is(err, fs.ErrNotExist):
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return serve.Run(ctx, o, func(ctx context.Context, conn *serve.Conn) error { return echo(ctx, conn, o.TLS) })
}

func echo(ctx context.Context, c *serve.Conn, cfg *tls.Config) error {
	r := bufio.NewReaderSize(c, 1024)
	fmt.Fprintf(c, "+OK echod cid=%s remote=%s tls=%v\r\n", c.ID, c.Remote, c.IsTLS())
	for {
		if ctx.Err() != nil {
			_, err := io.WriteString(c, "-ERR shutting down\r\n")
			return err
		}
		line, err := r.ReadSlice('\n')
		if errors.Is(err, io.EOF) && len(line) == 0 {
			return nil
		}
		if err != nil {
			return err
		}
		text := strings.TrimRight(string(line), "\r\n")
		word, arg, _ := strings.Cut(text, " ")
		switch strings.ToUpper(word) {
		case "UID":
			fmt.Fprintf(c, "+OK uid=%d gid=%d\r\n", os.Getuid(), os.Getgid())
		case "LOGIN":
			if err := privdrop.ToUser(arg); err != nil {
				fmt.Fprintf(c, "-ERR %v\r\n", err)
				return err
			}
			io.WriteString(c, "+OK\r\n")
		case "SLEEP":
			ms, _ := strconv.Atoi(arg)
			time.Sleep(time.Duration(ms) * time.Millisecond)
			io.WriteString(c, "+OK slept\r\n")
		case "STARTTLS":
			if cfg == nil || c.IsTLS() {
				io.WriteString(c, "-ERR no TLS\r\n")
				continue
			}
			io.WriteString(c, "+OK begin TLS\r\n")
			if r.Buffered() > 0 {
				return errors.New("client sent data after STARTTLS before the handshake")
			}
			if err := c.StartTLS(cfg); err != nil {
				return err
			}
			r = bufio.NewReaderSize(c, 1024)
		case "TLS":
			st, ok := c.TLSState()
			fmt.Fprintf(c, "+OK tls=%v version=%04x\r\n", ok, st.Version)
		case "QUIT":
			_, err := io.WriteString(c, "+OK bye\r\n")
			return err
		default:
			fmt.Fprintf(c, "+OK %s\r\n", text)
		}
	}
}
