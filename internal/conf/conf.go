// Package conf reads tern's control directory, /etc/tern by default: small
// plain-text files, one item a line, '#' comments, in the manner of
// qmail's /var/qmail/control. Each file is optional; a bad line in any of
// them is an error naming the file and the line, with exit status 78.
package conf

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/tern-mail/tern/internal/auth"
	"github.com/tern-mail/tern/internal/sysexit"
)

// DefaultDir is the control directory when neither --conf nor TERN_CONF
// names one.
const DefaultDir = "/etc/tern"

// LineError is a bad line: "file:line: why".
type LineError = auth.LineError

// Conf is the control directory's contents.
type Conf struct {
	Dir      string
	Hostname string  // this host's name; the system's when the file is absent
	Domains  Domains // domains delivered here
	Users    *auth.Users
	Aliases  Aliases
	Relay    Relay
	Routes   Routes
	TLSCert  string // path of tls.crt when it exists, else ""
	TLSKey   string // path of tls.key when it exists, else ""
}

// UsersPath returns the path of the users file, whether or not it exists.
func (c *Conf) UsersPath() string { return filepath.Join(c.Dir, "users") }

// Loader reads a control directory; Hostname stands in for os.Hostname.
type Loader struct {
	Hostname func() (string, error)
	// RouteAuth reads the credentials that routes name with auth=FILE
	// (Routes.LoadRouteAuth), so that a bad file is an error at start
	// and at every reload. Only tern-queue needs them; a server that
	// reloads after giving up root could not read them.
	RouteAuth bool
}

// Load reads the control directory dir, route credentials included.
func Load(dir string) (*Conf, error) {
	return Loader{Hostname: os.Hostname, RouteAuth: true}.Load(dir)
}

// Load reads the control directory dir: every file present, none required.
func (l Loader) Load(dir string) (*Conf, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, sysexit.Wrap(sysexit.Config, fmt.Errorf("control directory: %w", err))
	}
	if !st.IsDir() {
		return nil, sysexit.New(sysexit.Config, "control directory %s is not a directory", dir)
	}
	c := &Conf{Dir: dir}
	if err := readFile(filepath.Join(dir, "hostname"), func(name string, r io.Reader) (err error) {
		c.Hostname, err = parseHostname(name, r)
		return err
	}); err != nil {
		return nil, err
	}
	if c.Hostname == "" {
		h, err := l.Hostname()
		if err != nil {
			return nil, sysexit.Wrap(sysexit.Config, fmt.Errorf("hostname: none in %s and the system's: %w", filepath.Join(dir, "hostname"), err))
		}
		if c.Hostname, err = normalizeDomain(h); err != nil {
			return nil, sysexit.New(sysexit.Config, "system hostname %q: %v; write one in %s", h, err, filepath.Join(dir, "hostname"))
		}
	}
	steps := []struct {
		file  string
		parse func(string, io.Reader) error
	}{
		{"domains", func(n string, r io.Reader) (err error) { c.Domains, err = ParseDomains(n, r); return }},
		{"users", func(n string, r io.Reader) (err error) { c.Users, err = auth.ParseUsers(n, r); return }},
		{"aliases", func(n string, r io.Reader) (err error) { c.Aliases, err = ParseAliases(n, r); return }},
		{"relay", func(n string, r io.Reader) (err error) { c.Relay, err = ParseRelay(n, r); return }},
		{"routes", func(n string, r io.Reader) (err error) { c.Routes, err = ParseRoutes(n, r); return }},
	}
	for _, s := range steps {
		if err := readFile(filepath.Join(dir, s.file), s.parse); err != nil {
			return nil, err
		}
	}
	if l.RouteAuth {
		if err := c.Routes.LoadRouteAuth(filepath.Join(dir, "routes")); err != nil {
			return nil, err
		}
	}
	crt, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	hasCrt, err := exists(crt)
	if err != nil {
		return nil, err
	}
	hasKey, err := exists(key)
	if err != nil {
		return nil, err
	}
	if hasCrt != hasKey {
		return nil, sysexit.New(sysexit.Config, "%s and %s go together: one is missing", crt, key)
	}
	if hasCrt {
		c.TLSCert, c.TLSKey = crt, key
	}
	return c, nil
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("control file: %w", err)
}

// readFile opens path and hands it to parse; a missing file is skipped.
func readFile(path string, parse func(string, io.Reader) error) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open control file: %w", err)
	}
	defer f.Close()
	if err := parse(path, f); err != nil {
		var le *LineError
		if errors.As(err, &le) && sysexit.Code(err) != sysexit.Config {
			return sysexit.Wrap(sysexit.Config, err)
		}
		return err
	}
	return nil
}

// line is one meaningful line of a control file.
type line struct {
	n    int
	text string // trimmed, comment removed
}

// lines reads the non-blank, non-comment lines of r; a '#' starts a
// comment only at the beginning of a line (after blanks), so '#' can
// appear in a command or a path.
func lines(file string, r io.Reader) ([]line, error) {
	var out []line
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), auth.MaxLine+2)
	n := 0
	for sc.Scan() {
		n++
		t := strings.TrimSpace(sc.Text())
		if t == "" || t[0] == '#' {
			continue
		}
		if len(sc.Text()) > auth.MaxLine {
			return nil, lineErr(file, n, "line longer than %d bytes", auth.MaxLine)
		}
		out = append(out, line{n, t})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, lineErr(file, n+1, "line longer than %d bytes", auth.MaxLine)
		}
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	return out, nil
}

func lineErr(file string, n int, format string, args ...any) error {
	return sysexit.Wrap(sysexit.Config, &LineError{File: file, Line: n, Err: fmt.Errorf(format, args...)})
}

func parseHostname(file string, r io.Reader) (string, error) {
	ls, err := lines(file, r)
	if err != nil {
		return "", err
	}
	if len(ls) == 0 {
		return "", nil
	}
	if len(ls) > 1 {
		return "", lineErr(file, ls[1].n, "one host name only (the first is on line %d)", ls[0].n)
	}
	h, err := normalizeDomain(ls[0].text)
	if err != nil {
		return "", lineErr(file, ls[0].n, "%v", err)
	}
	return h, nil
}
