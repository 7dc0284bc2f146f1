package privdrop

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// AsUser runs fn with the file-system identity of uid and gid (no
// supplementary groups but gid), so that every file fn opens, creates or
// links is checked and owned as that user's, while the process stays root
// for the next user. It is how a server that serves many accounts at once
// (tern-lmtpd as root) touches a mailbox without root's rights and without
// a process per account.
//
// Linux keeps the file-system ids (setfsuid(2), setfsgid(2)) and the
// groups per thread, and x/sys/unix makes these calls on the calling
// thread alone (unlike syscall.Setuid, which changes every thread). So fn
// runs in a goroutine locked to its thread: the Go runtime never runs
// another goroutine there, and never clones a new thread from a locked
// one. Leaving root's fs ids clears the thread's file capabilities
// (CAP_DAC_OVERRIDE, CAP_FOWNER...; capabilities(7)), so root's bypass of
// permissions is gone too. Programs fn starts inherit the thread's ids;
// give them a Credential all the same.
//
// When the ids cannot be set, fn does not run; when they cannot be put
// back, the thread is left locked and ends with the goroutine, so no other
// goroutine ever runs with them. uid and gid 0 are refused, as in To.
func AsUser(uid, gid int, fn func() error) error {
	if uid <= 0 || gid <= 0 {
		return fmt.Errorf("act as uid %d gid %d: refusing root or a negative id", uid, gid)
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		groups, err := unix.Getgroups()
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("act as uid %d: getgroups: %w", uid, err)
			return
		}
		if err := setFS(uid, gid, []int{gid}); err != nil {
			// Half set, perhaps: this thread must not be reused.
			done <- err
			return
		}
		ferr := fn()
		if err := setFS(0, 0, groups); err != nil {
			done <- err
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// setFS sets the calling thread's groups, fs gid and fs uid, in that order
// (groups and gid need root's fs id), and checks that each took: setfsuid
// and setfsgid report no failure, only the id before, so asking again
// with -1 (never valid) returns the id in force.
func setFS(uid, gid int, groups []int) error {
	if err := unix.Setgroups(groups); err != nil {
		return fmt.Errorf("act as uid %d: setgroups: %w", uid, err)
	}
	unix.SetfsgidRetGid(gid)
	if now, _ := unix.SetfsgidRetGid(-1); now != gid {
		return fmt.Errorf("act as gid %d: setfsgid left fs gid %d", gid, now)
	}
	unix.SetfsuidRetUid(uid)
	if now, _ := unix.SetfsuidRetUid(-1); now != uid {
		return fmt.Errorf("act as uid %d: setfsuid left fs uid %d", uid, now)
	}
	return nil
}
