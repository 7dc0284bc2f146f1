package sysexit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"testing"
)

func TestCode(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, OK},
		{"plain", errors.New("x"), TempFail},
		{"classified", New(DataErr, "bad"), DataErr},
		{"wrapped classified", fmt.Errorf("deliver: %w", New(NoUser, "who")), NoUser},
		{"outermost wins", New(Usage, "u: %w", New(DataErr, "d")), Usage},
		{"enospc", &os.PathError{Op: "write", Path: "f", Err: syscall.ENOSPC}, TempFail},
		{"eacces", &os.PathError{Op: "open", Path: "f", Err: syscall.EACCES}, NoPerm},
		{"erofs", &os.PathError{Op: "open", Path: "f", Err: syscall.EROFS}, CantCreate},
		{"fs permission", fs.ErrPermission, NoPerm},
	} {
		if got := Code(tc.err); got != tc.want {
			t.Errorf("%s: Code(%v) = %d, want %d", tc.name, tc.err, got, tc.want)
		}
	}
	if Wrap(DataErr, nil) != nil {
		t.Error("Wrap(nil) is not nil")
	}
	if !Temporary(errors.New("unknown")) {
		t.Error("an unclassified error is not temporary")
	}
}
