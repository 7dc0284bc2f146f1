// Package lmtp is tern's LMTP server (RFC 2033): local delivery for a
// stream of messages over one connection, with an answer per recipient
// after DATA, for Postfix (mailbox_transport, virtual_transport), Exim,
// and tern-queue's deliverer per account.
//
// Why it is built this way: the protocol is go-smtp's, in LMTP mode; what
// a recipient is and how a message is stored are tern-deliver's (package
// mda: Return-Path, Delivered-To and its loop check, ~/.forward, the
// Maildir). A message is spooled once and delivered to its recipients at
// the same time, each file written and fsynced on its own, and the new/
// directory of each folder flushed once for every delivery that reached
// it meanwhile (internal/groupsync), in this connection or another:
// recipients and connections that arrive together share flushes, and no
// recipient is answered 250 before its own entry is durable. Served as
// root, each delivery runs with the account's file-system ids on a thread
// of its own (privdrop.AsUser), so no mailbox is touched as root and no
// process is spent per account.
package lmtp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/tern-mail/tern/internal/conf"
	"github.com/tern-mail/tern/internal/groupsync"
	"github.com/tern-mail/tern/internal/serve"
)

// Defaults.
const (
	// DefaultMaxSize is the largest message taken: tern-deliver's limit.
	DefaultMaxSize = 100 << 20
	// DefaultMaxRecipients bounds RCPT commands a transaction; RFC 5321
	// §4.5.3.1.8 asks for at least 100.
	DefaultMaxRecipients = 1000
	// Idle is how long the server waits for its client: RFC 2033 §5
	// follows RFC 5321 §4.5.3.2's timeouts.
	Idle = 5 * time.Minute
	// maxLine bounds a command line (RFC 5321 §4.5.3.1.4 asks 512; a
	// long address with parameters fits in 2000).
	maxLine = 2000
	// maxTargets bounds the accounts a transaction delivers to, aliases
	// expanded.
	maxTargets = 1000
	// parallel bounds the deliveries of one message that run at once.
	parallel = 8
)

// Server is what every LMTP conversation of one process shares.
type Server struct {
	// Conf returns the control directory as it is now (a conf.Watcher's
	// Current): users, aliases, domains, hostname.
	Conf func() *conf.Conf
	// MaxSize and MaxRecipients: zero means the defaults.
	MaxSize       int64
	MaxRecipients int
	// QuotaHard answers an over-quota recipient 552 5.2.2 instead of
	// 452 4.2.2.
	QuotaHard bool
	// Enqueue is tern-enqueue's path, for the addresses of ~/.forward.
	Enqueue string
	// Env is the environment ~/.forward's commands start from (PATH,
	// TERN_QUEUE, TERN_CONF...); the account's HOME, USER and the
	// envelope are added.
	Env []string
	// Euid is this process's effective uid: as root every delivery runs
	// as its account, otherwise only accounts of this uid are served. -1
	// asks os.Geteuid at the start of each conversation (after the
	// serving layer has given up root for --user).
	Euid int
	// TempDir holds messages too large to spool in memory; "" means
	// os.TempDir.
	TempDir string

	flushes sync.Map // directory -> *groupsync.Group

	flushHook func(dir string) // called inside each flush; tests slow flushes down with it
}

func (s *Server) maxSize() int64 {
	if s.MaxSize > 0 {
		return s.MaxSize
	}
	return DefaultMaxSize
}

func (s *Server) maxRecipients() int {
	if s.MaxRecipients > 0 {
		return s.MaxRecipients
	}
	return DefaultMaxRecipients
}

// flush makes durable the directory entries linked into dir before it was
// called, sharing one fsync with every delivery into dir that waits at
// the same time.
func (s *Server) flush(dir string, sync func() error) error {
	g, _ := s.flushes.LoadOrStore(dir, new(groupsync.Group))
	return g.(*groupsync.Group).Do(func() error {
		if s.flushHook != nil {
			s.flushHook(dir)
		}
		return sync()
	})
}

// Serve holds one LMTP conversation on c and returns when it is over:
// the client said QUIT or went away, or the connection's timeouts cut it.
// id names the connection in replies and log lines. The caller closes c.
func (s *Server) Serve(ctx context.Context, c net.Conn, id string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cf := s.Conf()
	euid := s.Euid
	if euid < 0 {
		euid = os.Geteuid()
	}
	conn := &watchedConn{Conn: c, closed: make(chan struct{})}
	be := smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &session{srv: s, conf: cf, euid: euid, id: id, log: log}, nil
	})
	srv := smtp.NewServer(be)
	srv.LMTP = true
	srv.Domain = cf.Hostname
	// go-smtp refuses a message of exactly MaxMessageBytes (DESIGN.md):
	// it gets one more, and the spool enforces the limit itself.
	srv.MaxMessageBytes = s.maxSize() + 1
	srv.MaxRecipients = s.maxRecipients()
	srv.MaxLineLength = maxLine
	srv.EnableSMTPUTF8 = true
	// Timeouts are per read, in serve.Conn: the engine's are not renewed
	// during DATA.
	srv.ReadTimeout, srv.WriteTimeout = 0, 0
	srv.ErrorLog = logAdapter{log}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(serve.Listener(conn)) }()
	var err error
	select {
	case <-conn.closed:
	case err = <-done:
	}
	srv.Close()
	if errors.Is(err, smtp.ErrServerClosed) {
		err = nil
	}
	return err
}

// watchedConn tells when go-smtp closes the connection: the end of the
// conversation.
type watchedConn struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *watchedConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil // the caller of Serve closes the connection itself
}

type logAdapter struct{ log *slog.Logger }

func (l logAdapter) Printf(format string, v ...any) {
	l.log.Warn("lmtp engine: " + strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (l logAdapter) Println(v ...any) {
	l.log.Warn("lmtp engine: " + strings.TrimSpace(fmt.Sprintln(v...)))
}

func (s *Server) tempDir() string {
	if s.TempDir != "" {
		return s.TempDir
	}
	return os.TempDir()
}
