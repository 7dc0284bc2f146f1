// Package privdrop gives up root for good: a server started as root becomes
// the account it serves before it touches a mailbox, and never goes back.
//
// Since Go 1.16, syscall.Setuid and friends apply to every thread of the
// process on Linux (they are carried out with the "all threads" system-call
// dance), so one call here changes the whole program, goroutines included.
package privdrop

import (
	"fmt"
	"os/user"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// To makes the process run as uid and gid with no supplementary groups
// other than gid. It refuses uid 0 and gid 0 as targets (a server must
// never serve a mailbox as root), and it checks afterwards that the change
// took and cannot be undone; any failure is an error the caller must treat
// as fatal (fail closed: close the connection, exit).
//
// Run by a process that is not root, To succeeds only if the process is
// already uid and gid (nothing to drop), so the same code path works for a
// server run under an unprivileged account.
func To(uid, gid int) error {
	if uid <= 0 || gid <= 0 {
		return fmt.Errorf("drop privileges to uid %d gid %d: refusing to run as root or with a negative id", uid, gid)
	}
	if syscall.Geteuid() != 0 {
		if syscall.Getuid() == uid && syscall.Geteuid() == uid && syscall.Getgid() == gid && syscall.Getegid() == gid {
			return nil
		}
		return fmt.Errorf("drop privileges to uid %d gid %d: running as uid %d, not root: cannot change user", uid, gid, syscall.Geteuid())
	}
	// The order matters: groups and gid first, while still root; after
	// Setuid they can no longer be changed.
	if err := syscall.Setgroups([]int{gid}); err != nil {
		return fmt.Errorf("drop privileges: setgroups %d: %w", gid, err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("drop privileges: setgid %d: %w", gid, err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("drop privileges: setuid %d: %w", uid, err)
	}
	return verify(uid, gid)
}

// verify checks real, effective and saved ids and that root cannot be
// regained; Setuid as root sets all three, so a failure here means the
// kernel or libc did something unexpected and the process must not go on.
func verify(uid, gid int) error {
	ruid, euid, suid := unix.Getresuid()
	rgid, egid, sgid := unix.Getresgid()
	if ruid != uid || euid != uid || suid != uid || rgid != gid || egid != gid || sgid != gid {
		return fmt.Errorf("drop privileges to uid %d gid %d: ids are now uid %d/%d/%d gid %d/%d/%d", uid, gid, ruid, euid, suid, rgid, egid, sgid)
	}
	if err := syscall.Setuid(0); err == nil {
		return fmt.Errorf("drop privileges to uid %d: root could be regained", uid)
	}
	groups, err := syscall.Getgroups()
	if err != nil {
		return fmt.Errorf("drop privileges: getgroups: %w", err)
	}
	for _, g := range groups {
		if g != gid {
			return fmt.Errorf("drop privileges to gid %d: supplementary group %d remains", gid, g)
		}
	}
	return nil
}

// Lookup returns the uid and gid of the system account name (from the
// password database, as getpwnam(3) would).
func Lookup(name string) (uid, gid int, err error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, fmt.Errorf("look up user %s: %w", name, err)
	}
	uid, err = strconv.Atoi(u.Uid)
	if err != nil {
		return 0, 0, fmt.Errorf("look up user %s: uid %q: %w", name, u.Uid, err)
	}
	gid, err = strconv.Atoi(u.Gid)
	if err != nil {
		return 0, 0, fmt.Errorf("look up user %s: gid %q: %w", name, u.Gid, err)
	}
	return uid, gid, nil
}

// ToUser drops to the system account name, as --user asks.
func ToUser(name string) error {
	uid, gid, err := Lookup(name)
	if err != nil {
		return err
	}
	if err := To(uid, gid); err != nil {
		return fmt.Errorf("user %s: %w", name, err)
	}
	return nil
}
