package runner

import (
	"strings"
	"time"

	"github.com/tern-mail/tern/internal/sysexit"
)

// ParseNow reads the hidden --now flag: an RFC 3339 time, or "+DURATION"
// from the real time, for tests of delay warnings and bounces. It returns
// the offset to add to the real clock.
func ParseNow(s string, real time.Time) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	if strings.HasPrefix(s, "+") || strings.HasPrefix(s, "-") {
		off, err := time.ParseDuration(s)
		if err != nil {
			return 0, sysexit.New(sysexit.Usage, "--now %q: %v", s, err)
		}
		return off, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return 0, sysexit.New(sysexit.Usage, "--now %q: not an RFC 3339 time nor +DURATION", s)
	}
	return t.Sub(real), nil
}
