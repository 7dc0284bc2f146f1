package conf

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// TargetKind says what an alias target is.
type TargetKind int

// Kinds of alias target.
const (
	TargetLocal   TargetKind = iota // a local user or another alias
	TargetAddress                   // a mail address, local or remote
	TargetCommand                   // "|command": the message on its stdin
	TargetMaildir                   // "/path/to/Maildir/"
)

func (k TargetKind) String() string {
	return [...]string{"local", "address", "command", "maildir"}[k]
}

// Target is one destination of an alias.
type Target struct {
	Kind  TargetKind
	Value string // the user, address, command (without '|') or path
}

func (t Target) String() string {
	if t.Kind == TargetCommand {
		return "|" + t.Value
	}
	return t.Value
}

// Alias is one entry of the aliases file.
type Alias struct {
	Name    string // lower-cased, "name" or "name@domain"
	Targets []Target
	Line    int
}

// Aliases maps a lower-cased name to its entry.
type Aliases map[string]*Alias

// maxAliasEntry bounds one entry with its continuation lines.
const maxAliasEntry = 64 << 10

// ParseAliases reads a file in /etc/aliases syntax (aliases(5)):
// "name: target, target", continued on lines that start with a blank; a
// target with a comma or blank in it is quoted ("|/usr/bin/filter -a, b").
// :include: files and mbox paths are refused with a reason.
func ParseAliases(file string, r io.Reader) (Aliases, error) {
	a := Aliases{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxAliasEntry)
	var cur strings.Builder
	start, n := 0, 0
	flush := func() error {
		if start == 0 {
			return nil
		}
		al, err := parseAlias(cur.String())
		if err != nil {
			return lineErr(file, start, "%v", err)
		}
		al.Line = start
		if prev, dup := a[al.Name]; dup {
			return lineErr(file, start, "alias %s is already on line %d", al.Name, prev.Line)
		}
		a[al.Name] = al
		cur.Reset()
		start = 0
		return nil
	}
	for sc.Scan() {
		n++
		text := sc.Text()
		trimmed := strings.TrimSpace(text)
		if trimmed == "" || trimmed[0] == '#' {
			continue
		}
		if text[0] == ' ' || text[0] == '\t' {
			if start == 0 {
				return nil, lineErr(file, n, "continuation line without an alias before it")
			}
			if cur.Len()+len(text) > maxAliasEntry {
				return nil, lineErr(file, start, "alias longer than %d bytes", maxAliasEntry)
			}
			cur.WriteString(" ")
			cur.WriteString(trimmed)
			continue
		}
		if err := flush(); err != nil {
			return nil, err
		}
		start = n
		cur.WriteString(trimmed)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, lineErr(file, n+1, "line longer than %d bytes", maxAliasEntry)
		}
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return a, nil
}

// parseAlias parses one whole entry, continuation lines joined.
func parseAlias(s string) (*Alias, error) {
	name, rest, ok := strings.Cut(s, ":")
	if !ok {
		return nil, errors.New(`want "name: target, target"`)
	}
	name = strings.ToLower(strings.TrimSpace(name))
	if name == "" || strings.ContainsAny(name, " \t\"|/,") {
		return nil, fmt.Errorf("bad alias name %q", name)
	}
	words, err := splitTargets(rest)
	if err != nil {
		return nil, fmt.Errorf("alias %s: %w", name, err)
	}
	if len(words) == 0 {
		return nil, fmt.Errorf("alias %s has no target", name)
	}
	al := &Alias{Name: name}
	for _, w := range words {
		t, err := parseTarget(w)
		if err != nil {
			return nil, fmt.Errorf("alias %s: %w", name, err)
		}
		al.Targets = append(al.Targets, t)
	}
	return al, nil
}

// splitTargets splits on commas outside double quotes; inside quotes a
// backslash escapes the next character.
func splitTargets(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	quoted, wasQuoted := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted && c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case c == '"':
			quoted = !quoted
			wasQuoted = true
		case c == ',' && !quoted:
			if w := strings.TrimSpace(cur.String()); w != "" || wasQuoted {
				out = append(out, w)
			}
			cur.Reset()
			wasQuoted = false
		default:
			cur.WriteByte(c)
		}
	}
	if quoted {
		return nil, errors.New("unterminated quote")
	}
	if w := strings.TrimSpace(cur.String()); w != "" || wasQuoted {
		out = append(out, w)
	}
	return out, nil
}

func parseTarget(w string) (Target, error) {
	switch {
	case w == "":
		return Target{}, errors.New("empty target")
	case strings.ContainsAny(w, "\x00\r\n"):
		return Target{}, errors.New("control character in target")
	case w[0] == '|':
		cmd := strings.TrimSpace(w[1:])
		if cmd == "" {
			return Target{}, errors.New("empty command after '|'")
		}
		return Target{TargetCommand, cmd}, nil
	case strings.HasPrefix(strings.ToLower(w), ":include:"):
		return Target{}, errors.New(":include: files are not supported; list the targets here")
	case w[0] == '/':
		if !strings.HasSuffix(w, "/") {
			return Target{}, fmt.Errorf("%s: mbox files are not supported; end a Maildir path with '/'", w)
		}
		return Target{TargetMaildir, w}, nil
	case strings.ContainsAny(w, " \t"):
		return Target{}, fmt.Errorf("target %q holds a blank: quote a command as \"|command args\"", w)
	case strings.Contains(w, "@"):
		i := strings.LastIndexByte(w, '@')
		if i == 0 || i == len(w)-1 {
			return Target{}, fmt.Errorf("address %q lacks a local part or a domain", w)
		}
		if _, err := normalizeDomain(w[i+1:]); err != nil {
			return Target{}, fmt.Errorf("address %q: %v", w, err)
		}
		return Target{TargetAddress, w}, nil
	}
	return Target{TargetLocal, strings.ToLower(w)}, nil
}
