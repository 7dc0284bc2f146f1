package enqueue

import (
	"fmt"
	"strings"

	"github.com/tern-mail/tern/internal/sysexit"
)

// Mode says under which name the program runs: sendmail(8) and mailq(1)
// are the same binary as tern-enqueue, told apart by argv[0] as Postfix,
// qmail and nullmailer do it.
type Mode int

// Names the program answers to.
const (
	ModeEnqueue  Mode = iota // tern-enqueue
	ModeSendmail             // sendmail
	ModeMailq                // mailq
)

// ModeOf picks the mode from argv[0]'s base name.
func ModeOf(argv0 string) Mode {
	base := argv0
	if i := strings.LastIndexByte(base, '/'); i >= 0 {
		base = base[i+1:]
	}
	switch base {
	case "sendmail":
		return ModeSendmail
	case "mailq":
		return ModeMailq
	}
	return ModeEnqueue
}

// sendmail options that take an argument and that tern has no use for:
// they are accepted so that scripts keep working, with a note.
var ignoredWithArg = map[byte]string{
	'B': "body type", 'C': "configuration file", 'h': "hop count", 'L': "syslog label",
	'N': "DSN notify", 'O': "option", 'R': "DSN return", 'V': "envelope ID", 'X': "log file",
}

// SendmailArgs turns a sendmail(8) command line into tern-enqueue's, the
// way scripts, cron and mail user agents write it: -t, -i, -oi, -f ADDR and
// -fADDR (and -r, its old name), -F NAME, -v, -bm (the default), -bp (list
// the queue), -q (flush it; an interval is ignored), -bi (newaliases: tern
// reads aliases directly), -oem and the other -oe modes, -odb, -odi and
// -odq (delivery always goes through the queue), and any other -o option
// or option with an argument, ignored with a note on stderr. A line with
// only "." ends the message unless -i or -oi is given, as in sendmail.
// For mailq, the result is the listing. --help, which sendmail does not
// know, asks for tern-enqueue's help under the name it was called by.
func SendmailArgs(mode Mode, args []string) (out, notes []string, err error) {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "--help" {
			return []string{"--help"}, nil, nil
		}
	}
	if mode == ModeMailq {
		for _, a := range args {
			if a != "-v" && a != "-Ac" {
				notes = append(notes, fmt.Sprintf("option %s ignored", a))
			}
		}
		return []string{"--list"}, notes, nil
	}
	dots := true
	var rcpts []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rcpts = append(rcpts, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			rcpts = append(rcpts, a)
			continue
		}
		// value returns an option's argument, attached or the next word.
		value := func() (string, error) {
			if len(a) > 2 {
				return a[2:], nil
			}
			if i+1 >= len(args) {
				return "", sysexit.New(sysexit.Usage, "option %s needs an argument", a)
			}
			i++
			return args[i], nil
		}
		switch c := a[1]; c {
		case 't', 'v':
			if len(a) != 2 {
				return nil, nil, sysexit.New(sysexit.Usage, "unknown option %s", a)
			}
			out = append(out, a)
		case 'i':
			if len(a) != 2 {
				return nil, nil, sysexit.New(sysexit.Usage, "unknown option %s", a)
			}
			dots = false
		case 'f', 'r':
			v, err := value()
			if err != nil {
				return nil, nil, err
			}
			out = append(out, "-f", v)
		case 'F':
			v, err := value()
			if err != nil {
				return nil, nil, err
			}
			out = append(out, "-F", v)
		case 'b':
			switch a {
			case "-bm":
			case "-bp":
				return []string{"--list"}, notes, nil
			case "-bi":
				notes = append(notes, "-bi: nothing to do, tern reads the aliases file as it is")
				return []string{"--noop"}, notes, nil
			default:
				return nil, nil, sysexit.New(sysexit.Usage, "mode %s is not supported (only -bm, -bp and -bi)", a)
			}
		case 'q':
			if len(a) > 2 {
				notes = append(notes, fmt.Sprintf("%s: the interval is ignored; tern-queue runs on its own schedule", a))
			}
			return []string{"--flush"}, notes, nil
		case 'o':
			switch {
			case a == "-oi":
				dots = false
			case a == "-o":
				// "-o X": an option in the next word
				if _, err := value(); err != nil {
					return nil, nil, err
				}
				notes = append(notes, "option -o "+args[i]+" ignored")
			case strings.HasPrefix(a, "-oe"), a == "-odb", a == "-odi", a == "-odq", a == "-om", a == "-oem":
				// Errors are always mailed back, and delivery always goes
				// through the queue, so these are what tern does anyway.
			default:
				notes = append(notes, fmt.Sprintf("option %s ignored", a))
			}
		default:
			if what, ok := ignoredWithArg[c]; ok {
				if _, err := value(); err != nil {
					return nil, nil, err
				}
				notes = append(notes, fmt.Sprintf("option -%c (%s) ignored", c, what))
				continue
			}
			return nil, nil, sysexit.New(sysexit.Usage, "unknown option %s", a)
		}
	}
	if dots {
		out = append(out, "--dot")
	}
	out = append(out, "--")
	return append(out, rcpts...), notes, nil
}
