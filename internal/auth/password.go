package auth

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tern-mail/tern/internal/sysexit"
	"golang.org/x/sys/unix"
)

// ReadPassword reads a new password. On a terminal it prompts on out and
// turns echo off, and with confirm asks twice and compares; otherwise it
// reads one line from in, so scripts can pipe a password in. The line
// ending (LF or CRLF) is not part of the password; an empty password is
// refused.
func ReadPassword(in io.Reader, out io.Writer, confirm bool) (string, error) {
	f, isFile := in.(*os.File)
	if isFile && isTerminal(f) {
		pw, err := readNoEcho(f, out, "Password: ")
		if err != nil {
			return "", err
		}
		if confirm {
			again, err := readNoEcho(f, out, "Again: ")
			if err != nil {
				return "", err
			}
			if again != pw {
				return "", sysexit.New(sysexit.DataErr, "the passwords differ")
			}
		}
		return checkNew(pw)
	}
	line, err := bufio.NewReaderSize(in, 4096).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		if errors.Is(err, io.EOF) {
			return "", sysexit.New(sysexit.DataErr, "no password on standard input")
		}
		return "", fmt.Errorf("read password: %w", err)
	}
	return checkNew(strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r"))
}

func checkNew(pw string) (string, error) {
	if pw == "" {
		return "", sysexit.New(sysexit.DataErr, "empty password")
	}
	if len(pw) > maxPassword {
		return "", sysexit.New(sysexit.DataErr, "password longer than %d bytes", maxPassword)
	}
	return pw, nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// readNoEcho reads a line from the terminal f with echo off, restoring
// the terminal's settings however it ends.
func readNoEcho(f *os.File, out io.Writer, prompt string) (string, error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return "", fmt.Errorf("read terminal settings: %w", err)
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ISIG
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return "", fmt.Errorf("turn terminal echo off: %w", err)
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	fmt.Fprint(out, prompt)
	var b []byte
	var c [1]byte
	for len(b) <= maxPassword {
		n, err := f.Read(c[:])
		if n == 0 || err != nil {
			fmt.Fprintln(out)
			if errors.Is(err, io.EOF) || n == 0 {
				return "", sysexit.New(sysexit.DataErr, "no password given")
			}
			return "", fmt.Errorf("read password: %w", err)
		}
		if c[0] == '\n' || c[0] == '\r' {
			break
		}
		b = append(b, c[0])
	}
	fmt.Fprintln(out)
	return string(b), nil
}
