// Package sysexit holds the exit statuses of sysexits.h that every tern
// program uses, and the one place where an error becomes a status.
//
// The status is what the caller acts on: 75 makes qmail, Postfix, procmail
// and tern-queue keep the message and try again, anything else in 64..78
// bounces it. So an error nobody classified is reported as temporary: losing
// mail to an unforeseen error is worse than retrying it.
package sysexit

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"
)

// Exit statuses from sysexits.h.
const (
	OK          = 0
	Usage       = 64 // EX_USAGE: the command was used wrongly
	DataErr     = 65 // EX_DATAERR: the input data was wrong
	NoInput     = 66 // EX_NOINPUT: an input file did not exist
	NoUser      = 67 // EX_NOUSER: addressee unknown
	NoHost      = 68 // EX_NOHOST: host name unknown
	Unavailable = 69 // EX_UNAVAILABLE: service unavailable
	Software    = 70 // EX_SOFTWARE: internal software error
	OSErr       = 71 // EX_OSERR: system error
	CantCreate  = 73 // EX_CANTCREAT: cannot create output
	IOErr       = 74 // EX_IOERR: input/output error
	TempFail    = 75 // EX_TEMPFAIL: temporary failure, try again later
	Protocol    = 76 // EX_PROTOCOL: remote error in protocol
	NoPerm      = 77 // EX_NOPERM: permission denied
	Config      = 78 // EX_CONFIG: configuration error
)

// Error is an error that knows its exit status.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// New returns an error with the given status and a formatted message;
// %w wraps as in fmt.Errorf.
func New(code int, format string, args ...any) error {
	return &Error{Code: code, Err: fmt.Errorf(format, args...)}
}

// Wrap gives err the status code; nil stays nil.
func Wrap(code int, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: code, Err: err}
}

// Code returns the exit status for err: 0 for nil, the status of the
// outermost *Error in the chain, else one derived from a system error
// number, else TempFail.
func Code(err error) int {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return FromErrno(errno)
	}
	if errors.Is(err, fs.ErrPermission) {
		return NoPerm
	}
	return TempFail
}

// FromErrno maps a system error to a status. Resource shortages and I/O
// errors are temporary (the disk may be freed, the NFS server may come
// back); refused permission and a read-only file system are not, because
// retrying cannot help until an administrator acts.
func FromErrno(errno syscall.Errno) int {
	switch errno {
	case syscall.EACCES, syscall.EPERM:
		return NoPerm
	case syscall.EROFS:
		return CantCreate
	case syscall.ENOENT, syscall.ENOTDIR:
		return CantCreate
	default:
		// ENOSPC, EDQUOT, EIO, EMFILE, ENFILE, ENOMEM, EAGAIN, EINTR,
		// ESTALE, ETIMEDOUT and everything unforeseen.
		return TempFail
	}
}

// Temporary reports whether err's status asks the caller to retry.
func Temporary(err error) bool { return Code(err) == TempFail }
