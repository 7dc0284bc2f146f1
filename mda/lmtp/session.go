package lmtp

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"

	"github.com/emersion/go-smtp"
	"github.com/tern-mail/tern/internal/address"
	"github.com/tern-mail/tern/internal/auth"
	"github.com/tern-mail/tern/internal/conf"
)

// session is one LMTP conversation's state: go-smtp's Session, and its
// LMTPSession for the answers per recipient.
type session struct {
	srv  *Server
	conf *conf.Conf
	euid int
	id   string
	log  *slog.Logger

	sender  string  // MAIL FROM, "<>" for the null sender
	rcpts   []*rcpt // in RCPT order, repeats included
	targets int     // accounts to deliver to, in all
}

// rcpt is one accepted RCPT TO: the address as the client wrote it and
// the accounts it leads to (one, or an alias's several).
type rcpt struct {
	addr    string
	targets []target
}

// target is one delivery: an account, and the address it is delivered
// for (written as Delivered-To and checked for loops).
type target struct {
	acct   *auth.Account
	addr   string
	detail string
}

var _ smtp.LMTPSession = (*session)(nil)

func (s *session) Reset() {
	s.sender, s.rcpts, s.targets = "", nil, 0
}

func (s *session) Logout() error { return nil }

// Mail starts a transaction. RFC 1870 §6.1: a declared SIZE over the
// limit is refused now rather than after the data.
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if opts != nil && opts.Size > s.srv.maxSize() {
		return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
			Message: fmt.Sprintf("message size %d exceeds the limit of %d bytes", opts.Size, s.srv.maxSize())}
	}
	s.sender = from
	if from == "" {
		s.sender = address.NullSender
	}
	return nil
}

// Rcpt resolves a recipient now, so that an unknown user or an account
// this server may not serve is answered at RCPT (RFC 2033 §4.2) and the
// client never sends the message for nobody.
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	targets, err := s.resolve(to)
	if err != nil {
		s.log.Info("refused", "to", to, "status", statusOf(err), "err", err)
		return err
	}
	if s.targets+len(targets) > maxTargets {
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3},
			Message: fmt.Sprintf("too many recipients: at most %d accounts a message, send the rest in another", maxTargets)}
	}
	s.targets += len(targets)
	s.rcpts = append(s.rcpts, &rcpt{addr: to, targets: targets})
	return nil
}

// maxAliasDepth bounds the aliases followed from one recipient.
const maxAliasDepth = 8

// resolve finds the accounts a recipient address leads to: itself when
// it is an account, else an alias's targets followed to accounts. An
// alias that leads anywhere else (a command, a path, another host) is not
// LMTP's to deliver: the MTA in front must expand it.
func (s *session) resolve(addr string) ([]target, error) {
	if _, err := address.Check(addr); err != nil {
		return nil, &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "bad recipient address: " + err.Error()}
	}
	r, err := s.conf.LookupUser(addr)
	switch {
	case errors.Is(err, conf.ErrNoUser):
		return nil, errNoUser
	case errors.Is(err, conf.ErrNotLocal):
		_, domain := address.Split(addr)
		return nil, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 2},
			Message: fmt.Sprintf("domain %s is not delivered here (it is not in %s/domains)", domain, s.conf.Dir)}
	case err != nil:
		return nil, tempError("look up the recipient", err)
	case r.Account != nil:
		if err := s.mayServe(r.Account); err != nil {
			return nil, err
		}
		return []target{{acct: r.Account, addr: addr, detail: r.Detail}}, nil
	}
	var out []target
	seen := map[*conf.Alias]bool{}
	var walk func(r *conf.Recipient, depth int) error
	walk = func(r *conf.Recipient, depth int) error {
		al := r.Alias
		if seen[al] || depth > maxAliasDepth {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 5},
				Message: fmt.Sprintf("alias %s loops or nests deeper than %d: fix %s/aliases", al.Name, maxAliasDepth, s.conf.Dir)}
		}
		seen[al] = true
		defer delete(seen, al)
		for _, t := range al.Targets {
			if t.Kind == conf.TargetCommand || t.Kind == conf.TargetMaildir {
				return notAccounts(al)
			}
			name := t.Value
			if !strings.Contains(name, "@") && r.Domain != "" {
				// A bare name in a domain's alias is that domain's user
				// first, as tern-queue expands it.
				if _, err := s.conf.LookupUser(name + "@" + r.Domain); err == nil {
					name += "@" + r.Domain
				}
			}
			next, err := s.conf.LookupUser(name)
			switch {
			case err != nil:
				return notAccounts(al)
			case next.Alias != nil:
				if err := walk(next, depth+1); err != nil {
					return err
				}
			default:
				if err := s.mayServe(next.Account); err != nil {
					return err
				}
				if len(out) >= maxTargets {
					return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "alias leads to too many accounts"}
				}
				out = append(out, target{acct: next.Account, addr: name, detail: next.Detail})
			}
		}
		return nil
	}
	if err := walk(r, 0); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errNoUser
	}
	return out, nil
}

var errNoUser = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user here"}

func notAccounts(al *conf.Alias) error {
	return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
		Message: fmt.Sprintf("alias %s leads to a command, a path or another host, which LMTP does not deliver to: let the MTA in front expand it", al.Name)}
}

// mayServe says whether this process may deliver for acct: as root, any
// account but root's (a mailbox is never written as root, qmail-lspawn's
// rule); as another user, only accounts of that uid (the "vmail" set-up)
// and those without a uid of their own.
func (s *session) mayServe(acct *auth.Account) error {
	if s.euid == 0 {
		if acct.UID <= 0 {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 5},
				Message: fmt.Sprintf("account %s has no uid of its own, and mail is not delivered as root: give it one in the users file", acct.Name)}
		}
		return nil
	}
	if acct.UID >= 0 && acct.UID != s.euid {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
			Message: fmt.Sprintf("account %s belongs to uid %d and this server runs as uid %d: run it as root or as that user", acct.Name, acct.UID, s.euid)}
	}
	return nil
}

// Data is plain SMTP's DATA, which go-smtp calls only outside LMTP.
func (s *session) Data(io.Reader) error {
	return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "this is an LMTP server"}
}

// LMTPData takes the message and answers each recipient once its copy is
// durable (RFC 2033 §4.2), in RCPT order as go-smtp writes them.
func (s *session) LMTPData(r io.Reader, status smtp.StatusCollector) error {
	sp, err := spool(r, s.srv.maxSize(), s.srv.tempDir())
	if err != nil {
		s.log.Info("refused", "from", s.sender, "rcpts", len(s.rcpts), "status", statusOf(err), "err", err)
		return err
	}
	defer sp.Close()
	// Recipients written alike share one delivery (RFC 2033 §4.2 still
	// wants an answer for each).
	type job struct {
		t     target
		rcpts []int // indexes into s.rcpts of whom it serves
		err   error
	}
	var jobs []*job
	byKey := map[string]*job{}
	for i, rc := range s.rcpts {
		for _, t := range rc.targets {
			key := t.acct.Name + "\x00" + strings.ToLower(t.addr)
			j := byKey[key]
			if j == nil {
				j = &job{t: t}
				byKey[key] = j
				jobs = append(jobs, j)
			}
			j.rcpts = append(j.rcpts, i)
		}
	}
	// What each RCPT still waits for; its answer goes out when the last
	// of its deliveries is done.
	var mu sync.Mutex
	left := make([]int, len(s.rcpts))
	results := make([][]error, len(s.rcpts))
	for i, rc := range s.rcpts {
		left[i] = len(rc.targets)
	}
	finish := func(j *job) {
		mu.Lock()
		defer mu.Unlock()
		for _, i := range j.rcpts {
			results[i] = append(results[i], j.err)
			if left[i]--; left[i] == 0 {
				status.SetStatus(s.rcpts[i].addr, s.answer(s.rcpts[i], results[i]))
			}
		}
	}
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for _, j := range jobs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := s.deliver(sp, j.t); err != nil {
				j.err = s.reply(err)
			}
			finish(j)
		}()
	}
	wg.Wait()
	return nil
}

// answer is one recipient's reply from the results of its deliveries: an
// alias is answered 250 when every account got the message; a temporary
// failure of any makes the client retry it (the others may then get the
// message twice: at least once, never lost); otherwise the first
// permanent failure.
func (s *session) answer(rc *rcpt, errs []error) error {
	var temp, perm error
	delivered := 0
	for _, err := range errs {
		if err == nil {
			delivered++
			continue
		}
		if isTemporary(err) && temp == nil {
			temp = err
		} else if perm == nil {
			perm = err
		}
	}
	switch {
	case temp != nil:
		return temp
	case perm != nil && delivered == 0:
		return perm
	case perm != nil:
		// Part of an alias refused for good: the other accounts have it;
		// a retry would duplicate it for them and fail again for this one.
		s.log.Warn("alias partly delivered", "to", rc.addr, "err", perm)
	}
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "delivered cid=" + s.id}
}
