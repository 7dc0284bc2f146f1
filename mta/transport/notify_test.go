package transport

import "testing"

func TestNotify(t *testing.T) {
	for _, c := range []struct {
		in  string
		n   Notify
		out string
	}{
		{"NEVER", NotifyNever, "NEVER"},
		{"never", NotifyNever, "NEVER"},
		{"delay,Success", NotifySuccess | NotifyDelay, "SUCCESS,DELAY"},
		{"FAILURE,DELAY,SUCCESS", NotifySuccess | NotifyFailure | NotifyDelay, "SUCCESS,FAILURE,DELAY"},
		{"", 0, ""},
		{"NEVER,SUCCESS", 0, ""},
		{"SUCCESS,SUCCESS", 0, ""},
		{"SUCCESS,", 0, ""},
		{"ALWAYS", 0, ""},
		{"SUCCESS FAILURE", 0, ""},
	} {
		n, err := ParseNotify(c.in)
		if (err == nil) != (c.n != 0) || n != c.n || n.String() != c.out {
			t.Errorf("ParseNotify(%q) = %v (%q), %v; want %v (%q)", c.in, n, n.String(), err, c.n, c.out)
		}
	}
	if Notify(0).String() != "" {
		t.Error("zero is not empty")
	}
}
