package transport

import (
	"fmt"
	"strings"
)

// notifyWords are the NOTIFY keywords in the order RFC 3461 §4.1 lists
// them, which is how String writes them.
var notifyWords = [...]struct {
	word string
	bit  Notify
}{
	{"NEVER", NotifyNever},
	{"SUCCESS", NotifySuccess},
	{"FAILURE", NotifyFailure},
	{"DELAY", NotifyDelay},
}

// String writes n as a NOTIFY value (RFC 3461 §4.1): "NEVER", or a comma
// list of SUCCESS, FAILURE and DELAY; "" when the client gave none.
func (n Notify) String() string {
	var words []string
	for _, w := range notifyWords {
		if n&w.bit != 0 {
			words = append(words, w.word)
		}
	}
	return strings.Join(words, ",")
}

// ParseNotify reads a NOTIFY value, in any case: NEVER alone, or one or
// more of SUCCESS, FAILURE and DELAY, each once (RFC 3461 §4.1).
func ParseNotify(s string) (Notify, error) {
	var n Notify
	for _, f := range strings.Split(s, ",") {
		var bit Notify
		for _, w := range notifyWords {
			if strings.EqualFold(f, w.word) {
				bit = w.bit
			}
		}
		switch {
		case bit == 0:
			return 0, fmt.Errorf("NOTIFY %q: %q is not NEVER, SUCCESS, FAILURE or DELAY (RFC 3461 section 4.1)", s, f)
		case n&bit != 0:
			return 0, fmt.Errorf("NOTIFY %q names %s twice", s, f)
		}
		n |= bit
	}
	if n&NotifyNever != 0 && n != NotifyNever {
		return 0, fmt.Errorf("NOTIFY %q: NEVER goes alone (RFC 3461 section 4.1)", s)
	}
	return n, nil
}
