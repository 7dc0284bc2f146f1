package runner

import (
	"testing"

	"github.com/emersion/go-smtp"
)

// TestLMTPResult: each LMTP reply becomes the recipient's result by its
// class (RFC 5321 §4.2.1), with the server's enhanced code when it agrees
// with the class.
func TestLMTPResult(t *testing.T) {
	for _, c := range []struct {
		code      int
		enh       smtp.EnhancedCode
		text      string
		status    string
		temporary bool
		answer    string
	}{
		{250, smtp.EnhancedCode{2, 1, 5}, "<bob@example.org> delivered", "2.1.5", false, "250 2.1.5 <bob@example.org> delivered"},
		{452, smtp.EnhancedCode{4, 2, 2}, "mailbox is full", "4.2.2", true, "452 4.2.2 mailbox is full"},
		{550, smtp.EnhancedCode{5, 1, 1}, "no such user", "5.1.1", false, "550 5.1.1 no such user"},
		{554, smtp.NoEnhancedCode, "loop", "5.0.0", false, "554 5.0.0 loop"},
		{451, smtp.EnhancedCode{5, 1, 1}, "class disagrees", "4.0.0", true, "451 4.0.0 class disagrees"},
		{354, smtp.NoEnhancedCode, "odd", "4.3.0", true, "354 3.0.0 odd"},
	} {
		r := lmtpResult(c.code, c.enh, c.text)
		if r.Status != c.status || r.Temporary != c.temporary || r.Answer != c.answer || r.Reply != c.code || r.DiagType != "smtp" {
			t.Errorf("lmtpResult(%d, %v, %q) = %+v; want %s temporary=%v %q", c.code, c.enh, c.text, r, c.status, c.temporary, c.answer)
		}
		if r.Delivered() != (c.code/100 == 2) {
			t.Errorf("%d: Delivered() = %v", c.code, r.Delivered())
		}
	}
}
