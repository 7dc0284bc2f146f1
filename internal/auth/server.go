package auth

import "log/slog"

// ForServer is the authenticator a server uses: the checkpassword program
// prog when it is set, otherwise the users file at usersFile (read again
// when it changes); every failure is slowed by a Throttle of its own.
func ForServer(prog, usersFile string, log *slog.Logger) Authenticator {
	var a Authenticator
	if prog != "" {
		a = &Checkpassword{Prog: prog}
	} else {
		a = &UsersFile{Path: usersFile, Log: log}
	}
	return Throttled{Authenticator: a, Throttle: NewThrottle()}
}
