package mda

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/tern-mail/tern/internal/address"
	"github.com/tern-mail/tern/internal/sysexit"
)

// MaxForwardRules bounds the entries of a .forward file.
const MaxForwardRules = 100

// RuleKind says what one line of ~/.forward asks for.
type RuleKind int

// Kinds of .forward rule.
const (
	RulePipe    RuleKind = iota // "|command": the message on the command's stdin
	RuleMaildir                 // "/path/to/Maildir/" or "~/Maildir/.Folder/"
	RuleSelf                    // "\user": the account's own Maildir, no further forwarding
	RuleAddress                 // an address: re-injected, envelope sender kept
)

// Rule is one entry of ~/.forward.
type Rule struct {
	Kind  RuleKind
	Value string // the command, path or address
	Line  int
}

// ParseForward reads a .forward file in the syntax sendmail and Postfix
// share (aliases(5) targets, one or more a line): "|command" (quoted when
// it has commas: "|/usr/bin/filter -a, b"), a path to a Maildir ending in
// "/" ("~/" is the home), "\user" for the account's own Maildir, and mail
// addresses separated by commas. "#" starts a comment line.
func ParseForward(r io.Reader) ([]Rule, error) {
	var rules []Rule
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if strings.HasPrefix(line, `"|`) {
			if !strings.HasSuffix(line, `"`) || len(line) < 4 {
				return nil, fmt.Errorf("line %d: unterminated quoted command", n)
			}
			rules = append(rules, Rule{Kind: RulePipe, Value: line[2 : len(line)-1], Line: n})
		} else if strings.HasPrefix(line, "|") {
			rules = append(rules, Rule{Kind: RulePipe, Value: strings.TrimSpace(line[1:]), Line: n})
		} else {
			for _, item := range strings.Split(line, ",") {
				item = strings.Trim(strings.TrimSpace(item), `"`)
				if item == "" {
					continue
				}
				rule, err := parseItem(item)
				if err != nil {
					return nil, fmt.Errorf("line %d: %w", n, err)
				}
				rule.Line = n
				rules = append(rules, rule)
			}
		}
		if len(rules) > MaxForwardRules {
			return nil, fmt.Errorf("more than %d entries", MaxForwardRules)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, r := range rules {
		if r.Kind == RulePipe && r.Value == "" {
			return nil, fmt.Errorf("line %d: empty command", r.Line)
		}
	}
	return rules, nil
}

func parseItem(item string) (Rule, error) {
	switch {
	case strings.HasPrefix(item, `\`):
		return Rule{Kind: RuleSelf, Value: item[1:]}, nil
	case strings.HasPrefix(item, "/"), strings.HasPrefix(item, "~/"), strings.HasPrefix(item, "./"):
		if !strings.HasSuffix(item, "/") {
			return Rule{}, fmt.Errorf("%q: only Maildirs (a path ending in /) are delivered to, not mbox files", item)
		}
		return Rule{Kind: RuleMaildir, Value: item}, nil
	}
	a, err := address.Check(item)
	if err != nil {
		return Rule{}, err
	}
	return Rule{Kind: RuleAddress, Value: a}, nil
}

// Forward is how tern-deliver carries out ~/.forward.
type Forward struct {
	Enqueue string   // tern-enqueue's path, for addresses
	Env     []string // the environment of commands and of tern-enqueue
	Stderr  io.Writer
	// Credential, when set, is whom commands and tern-enqueue run as: the
	// account, when the caller is root (tern-lmtpd).
	Credential *syscall.Credential
}

// DeliverForward delivers as ~/.forward says, or to the Maildir when the
// account has none (or an empty one). The rules are followed in order and
// the first failure stops them with its status: 75 makes the whole
// delivery retried, rules that had succeeded included (at least once, as
// qmail-local does with .qmail).
func DeliverForward(msg io.Reader, d Delivery, f Forward) error {
	rules, err := ReadForward(d.Home)
	if err != nil {
		return err
	}
	if len(rules) == 0 {
		_, err := Deliver(msg, d)
		return err
	}
	return FollowForward(msg, d, f, rules)
}

// ReadForward returns the rules of home/.forward: none when home is ""
// or the file is missing or empty. A file that cannot be obeyed is an
// error with status 75 (see readForward).
func ReadForward(home string) ([]Rule, error) {
	if home == "" {
		return nil, nil
	}
	return readForward(filepath.Join(home, ".forward"))
}

// FollowForward delivers as rules, read by ReadForward from d.Home, say
// (see DeliverForward). Every delivery into a Maildir it makes is flushed
// before it returns, whatever d.Unsynced says.
func FollowForward(msg io.Reader, d Delivery, f Forward, rules []Rule) error {
	path := filepath.Join(d.Home, ".forward")
	d.Unsynced = false
	if d.MaxSize > 0 {
		msg = &limitReader{r: msg, left: d.MaxSize}
	}
	raw, err := spool(msg)
	if err != nil {
		return classify(err, path, d)
	}
	defer raw.Close()
	for i := 0; i < len(rules); i++ {
		rule := rules[i]
		var err error
		switch rule.Kind {
		case RuleSelf:
			_, err = Deliver(raw.reader(), d)
		case RuleMaildir:
			d2 := d
			d2.Maildir, d2.Folder = expandHome(rule.Value, d.Home), ""
			_, err = Deliver(raw.reader(), d2)
		case RulePipe:
			err = f.pipe(raw, d, rule)
		case RuleAddress:
			// Consecutive addresses go in one injection.
			addrs := []string{rule.Value}
			for i+1 < len(rules) && rules[i+1].Kind == RuleAddress {
				i++
				addrs = append(addrs, rules[i].Value)
			}
			err = f.forward(raw, d, addrs)
		}
		if err != nil {
			return fmt.Errorf("%s line %d: %w", path, rule.Line, err)
		}
	}
	return nil
}

// readForward reads and checks ~/.forward: a file others could write is
// not obeyed (the mail would go wherever they liked), nor is a broken one;
// both keep the mail in the queue (75) until the owner fixes it.
func readForward(path string) ([]Rule, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, sysexit.New(sysexit.TempFail, "open %s: %v (#4.3.0)", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, sysexit.New(sysexit.TempFail, "stat %s: %v (#4.3.0)", path, err)
	}
	if st.Mode().Perm()&0o022 != 0 {
		return nil, sysexit.New(sysexit.TempFail, "%s is writable by others: refusing to obey it; chmod go-w it (#4.7.0)", path)
	}
	rules, err := ParseForward(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, sysexit.New(sysexit.TempFail, "%s: %v; fix it, and the mail waiting in the queue is delivered (#4.3.5)", path, err)
	}
	return rules, nil
}

func expandHome(p, home string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		return filepath.Join(home, rest) + "/"
	}
	if !filepath.IsAbs(p) {
		return filepath.Join(home, p) + "/"
	}
	return p
}

// pipe runs a command of .forward through /bin/sh in the home directory,
// with the message as queued on its stdin and the envelope in SENDER and
// RECIPIENT. Its status 0 is done, 75 is try again later, anything else a
// bounce.
//
// Neither Return-Path nor Delivered-To is added, unlike qmail-local: the
// usual command is a filter that ends by running tern-deliver, which adds
// both, and would take a Delivered-To for the same recipient for a loop.
// The loop check against the Delivered-To lines already in the message is
// made here.
func (f Forward) pipe(raw *spooled, d Delivery, rule Rule) error {
	if _, err := Prepare(raw.reader(), Envelope{Recipient: d.Recipient}); err != nil {
		return classify(err, rule.Value, d)
	}
	body, err := Prepare(raw.reader(), Envelope{})
	if err != nil {
		return classify(err, rule.Value, d)
	}
	cmd := exec.Command("/bin/sh", "-c", rule.Value)
	cmd.Dir = d.Home
	cmd.Env = f.Env
	if f.Credential != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: f.Credential}
	}
	cmd.Stdin = body
	cmd.Stdout, cmd.Stderr = f.Stderr, f.Stderr
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exit):
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return sysexit.New(sysexit.TempFail, "command %q killed by signal %s (#4.3.0)", rule.Value, ws.Signal())
		}
		if exit.ExitCode() == sysexit.TempFail {
			return sysexit.New(sysexit.TempFail, "command %q exited 75: try again later (#4.3.0)", rule.Value)
		}
		return sysexit.Wrap(sysexit.Unavailable, fmt.Errorf("command %q %w (#5.3.0)", rule.Value, &CommandExit{Status: exit.ExitCode()}))
	}
	return sysexit.New(sysexit.TempFail, "run %q: %v (#4.3.0)", rule.Value, err)
}

// CommandExit is a ~/.forward command's exit status, kept in the error so
// that a caller can say what failed without naming the command (tern-lmtpd
// puts it in its reply; the command stays in the log).
type CommandExit struct{ Status int }

func (c *CommandExit) Error() string { return fmt.Sprintf("exited %d", c.Status) }

// forward re-injects the message with tern-enqueue for other addresses,
// keeping the envelope sender (so bounces go to the author, RFC 5321
// §3.9.1) and adding Delivered-To, which stops a forwarding loop.
func (f Forward) forward(raw *spooled, d Delivery, addrs []string) error {
	body, err := Prepare(raw.reader(), Envelope{Recipient: d.Recipient})
	if err != nil {
		return classify(err, addrs[0], d)
	}
	args := []string{}
	if d.Sender != "" {
		args = append(args, "-f", d.Sender)
	}
	args = append(args, "--")
	cmd := exec.Command(f.Enqueue, append(args, addrs...)...)
	cmd.Env = f.Env
	if f.Credential != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: f.Credential}
	}
	cmd.Stdin = body
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &out
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exit) && exit.ExitCode() != sysexit.TempFail && exit.ExitCode() > 0:
		return sysexit.New(sysexit.Unavailable, "forward to %s refused: %s (#5.3.0)", strings.Join(addrs, ", "), strings.TrimSpace(out.String()))
	}
	return sysexit.New(sysexit.TempFail, "forward to %s: %v %s (#4.3.0)", strings.Join(addrs, ", "), err, strings.TrimSpace(out.String()))
}

// spooled is the message kept in an unlinked temporary file, so that each
// .forward entry reads it again from the start while memory stays bounded
// whatever the message's size.
type spooled struct {
	f    *os.File
	size int64
}

func spool(r io.Reader) (*spooled, error) {
	f, err := os.CreateTemp("", "tern-forward-")
	if err != nil {
		return nil, fmt.Errorf("spool message: %w", err)
	}
	os.Remove(f.Name())
	n, err := io.Copy(f, r)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("spool message: %w", err)
	}
	return &spooled{f: f, size: n}, nil
}

func (s *spooled) reader() io.Reader { return io.NewSectionReader(s.f, 0, s.size) }

func (s *spooled) Close() error { return s.f.Close() }
