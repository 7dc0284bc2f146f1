// Package logging writes the one-line-per-event log every tern program
// keeps on stderr, in the shape of qmail and s6:
//
//	tern-smtpd: info: accepted qid=17f3a from=<a@b.example> rcpts=2 cid=3f
//
// It is a log/slog handler, so programs log with slog's key/value calls.
// There is no timestamp unless stderr is a terminal: syslog, journald and
// multilog add their own.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Handler is a slog.Handler writing "prog: level: msg key=value ...".
type Handler struct {
	mu     *sync.Mutex
	w      io.Writer
	prog   string
	level  slog.Leveler
	stamp  bool
	prefix string // pre-rendered attributes from WithAttrs
	group  string
}

// New returns a logger for prog writing to w. Timestamps are added when w
// is a terminal.
func New(prog string, w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(NewHandler(prog, w, level))
}

// NewHandler returns the handler behind New.
func NewHandler(prog string, w io.Writer, level slog.Leveler) *Handler {
	if level == nil {
		level = slog.LevelInfo
	}
	return &Handler{mu: new(sync.Mutex), w: w, prog: prog, level: level, stamp: isTerminal(w)}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	if h.stamp && !r.Time.IsZero() {
		b.WriteString(r.Time.Format(time.DateTime))
		b.WriteByte(' ')
	}
	b.WriteString(h.prog)
	b.WriteString(": ")
	b.WriteString(levelWord(r.Level))
	b.WriteString(": ")
	b.WriteString(oneLine(r.Message))
	b.WriteString(h.prefix)
	r.Attrs(func(a slog.Attr) bool {
		writeAttr(&b, h.group, a)
		return true
	})
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	var b strings.Builder
	for _, a := range attrs {
		writeAttr(&b, h.group, a)
	}
	h2 := *h
	h2.prefix += b.String()
	return &h2
}

func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	if h2.group != "" {
		h2.group += "."
	}
	h2.group += name
	return &h2
}

func levelWord(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "error"
	case l >= slog.LevelWarn:
		return "warning"
	case l >= slog.LevelInfo:
		return "info"
	default:
		return "debug"
	}
}

func writeAttr(b *strings.Builder, group string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		g := a.Key
		if group != "" && g != "" {
			g = group + "." + g
		} else if g == "" {
			g = group
		}
		for _, ga := range a.Value.Group() {
			writeAttr(b, g, ga)
		}
		return
	}
	b.WriteByte(' ')
	if group != "" {
		b.WriteString(group)
		b.WriteByte('.')
	}
	b.WriteString(a.Key)
	b.WriteByte('=')
	b.WriteString(quote(a.Value.String()))
}

// quote leaves plain values (addresses in <>, ids, numbers) as they are and
// quotes anything with spaces, quotes, '=' or control characters, so that a
// line always splits back into its fields.
func quote(s string) string {
	if s == "" {
		return `""`
	}
	for _, r := range s {
		if r <= ' ' || r == '"' || r == '=' || r == 0x7f || r == '\\' {
			return strconv.Quote(s)
		}
	}
	return s
}

// oneLine keeps a message on one line whatever a caller passes in.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(s)
}

// Fatalf writes "prog: fatal: msg" to w, for the last words of a program.
func Fatalf(w io.Writer, prog, format string, args ...any) {
	fmt.Fprintf(w, "%s: fatal: %s\n", prog, oneLine(fmt.Sprintf(format, args...)))
}
