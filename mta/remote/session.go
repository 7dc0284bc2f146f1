package remote

import (
	"context"
	"errors"
	"io"
	"strconv"
	"strings"

	"github.com/tern-mail/tern/mta/smtpclient"
	"github.com/tern-mail/tern/mta/transport"
)

// session runs the message's transactions on c for the recipients still
// pending. It reports the failure that left recipients pending for the
// next host, if any, and stale when c was an idle connection found dead
// before anything was sent, so the caller opens a new one.
func (d *delivery) session(ctx context.Context, c *conn, reused bool) (res transport.Result, failed, stale bool) {
	stop := context.AfterFunc(ctx, c.cl.Abort)
	healthy, res, failed, stale := d.transactions(c, reused)
	if !stop() || c.closing {
		healthy = false
	}
	if healthy {
		d.t.put(c)
	} else {
		c.cl.Close()
	}
	return res, failed, stale
}

// needsUTF8 reports an address that only SMTPUTF8 can carry
// (RFC 6531 §3.2): a non-ASCII local part; routing has made the domain
// A-labels already.
func needsUTF8(addr string) bool {
	for i := 0; i < len(addr); i++ {
		if addr[i] >= 0x80 {
			return true
		}
	}
	return false
}

func (d *delivery) transactions(c *conn, reused bool) (healthy bool, _ transport.Result, failed, stale bool) {
	ext := c.cl.Extensions()
	m := d.m
	result := func(status string, temporary bool, answer string) transport.Result {
		return transport.Result{Status: status, Temporary: temporary, Answer: answer, RemoteMTA: c.relay, TLS: c.tls}
	}
	// What this host must offer for this message, checked before anything
	// is sent.
	if m.RequireTLS && !(c.verified && ext.RequireTLS) {
		// RFC 8689 §4.2.1: only a verified TLS connection to a next hop
		// that offers REQUIRETLS may carry the message; another host may
		// do better, and if none does the message fails (§5: 5.7.30).
		why := "host " + c.relay + " does not offer REQUIRETLS"
		if !c.verified {
			why = "no verified TLS with host " + c.relay
		}
		r := result("5.7.30", false, "REQUIRETLS: "+why)
		d.leave(r)
		return true, r, true, false
	}
	if ext.Size > 0 && m.Size > ext.Size {
		// RFC 1870 §6.1: a message the server declared too big is not sent.
		d.decidePending(result("5.3.4", false, "message of "+strconv.FormatInt(m.Size, 10)+
			" octets is larger than the "+strconv.FormatInt(ext.Size, 10)+" host "+c.relay+" accepts"))
		return true, transport.Result{}, false, false
	}
	utf8 := m.SMTPUTF8 || needsUTF8(m.Sender)
	if !ext.SMTPUTF8 {
		if needsUTF8(m.Sender) {
			d.decidePending(result("5.6.7", false, "sender <"+m.Sender+"> needs SMTPUTF8, which host "+c.relay+" does not offer"))
			return true, transport.Result{}, false, false
		}
		for _, i := range append([]int(nil), d.pending...) {
			if needsUTF8(d.rcpts[i].Addr) {
				d.decide(i, result("5.6.7", false, "recipient <"+d.rcpts[i].Addr+"> needs SMTPUTF8, which host "+c.relay+" does not offer"))
			}
		}
	} else {
		for _, i := range d.pending {
			utf8 = utf8 || needsUTF8(d.rcpts[i].Addr)
		}
	}
	sevenBit := m.EightBit && !ext.EightBitMIME
	if sevenBit && len(d.pending) > 0 {
		if r, ok := d.checkSevenBit(c); !ok {
			d.decidePending(r)
			return true, transport.Result{}, false, false
		}
	}
	var mailParams []string
	if ext.SizeOffered {
		mailParams = append(mailParams, "SIZE="+strconv.FormatInt(m.Size, 10))
	}
	if m.EightBit && ext.EightBitMIME {
		mailParams = append(mailParams, "BODY=8BITMIME") // RFC 6152 §2
	}
	if utf8 && ext.SMTPUTF8 {
		mailParams = append(mailParams, "SMTPUTF8") // RFC 6531 §3.4
	}
	if ext.DSN { // RFC 3461 §4.3, §4.4
		if m.Ret != "" {
			mailParams = append(mailParams, "RET="+m.Ret)
		}
		if m.EnvID != "" {
			mailParams = append(mailParams, "ENVID="+smtpclient.XText(m.EnvID))
		}
	}
	if m.RequireTLS {
		mailParams = append(mailParams, "REQUIRETLS") // RFC 8689 §3
	}

	queue := append([]int(nil), d.pending...)
	reset := reused
	// Each round is one transaction of at most maxRcptsPerTransaction
	// recipients; a round ends either with recipients delivered or
	// refused, or with fewer left to try, so the loop ends.
	perTx := maxRcptsPerTransaction
	if ext.RcptMax > 0 {
		perTx = min(perTx, ext.RcptMax) // RFC 9422 §4.2: fewer, not a 452 each
	}
	for len(queue) > 0 {
		todo, rest := queue[:min(len(queue), perTx)], queue[min(len(queue), perTx):]
		// With PIPELINING, DATA goes in the group too: a message costs two
		// round trips, not three.
		tx := smtpclient.Transaction{Reset: reset, From: m.Sender, FromParams: mailParams, Rcpts: make([]smtpclient.Rcpt, len(todo)), Data: ext.Pipelining}
		for k, i := range todo {
			tx.Rcpts[k] = smtpclient.Rcpt{Addr: d.rcpts[i].Addr, Params: rcptParams(ext, d.rcpts[i])}
		}
		reps, err := c.cl.Envelope(&tx)
		if err != nil {
			if reused && errors.Is(err, smtpclient.ErrResetFailed) {
				return false, transport.Result{}, false, true
			}
			r := result("4.4.2", true, "conversation with "+c.relay+" broke: "+err.Error())
			d.leaveSome(todo, r)
			return false, r, true, false
		}
		reused, reset = false, false
		d.reachedMail = true
		c.note(reps.Mail)
		for _, r := range reps.Rcpts {
			c.note(r)
		}
		c.note(reps.Data)
		if reps.Mail.Code != 250 {
			if !d.endEmptyData(c, reps) {
				r := result("4.4.2", true, "conversation with "+c.relay+" broke after DATA")
				d.leaveSome(todo, r)
				return false, r, true, false
			}
			r := replyResult(reps.Mail, c.relay, c.tls)
			if r.Temporary {
				// Another host may take it now (Postfix does the same).
				d.leaveSome(todo, r)
				return true, r, true, false
			}
			d.decideSome(todo, r)
			return true, transport.Result{}, false, false
		}
		var accepted, again []int
		var softest transport.Result
		for k, i := range todo {
			rr := reps.Rcpts[k]
			r := replyResult(rr, c.relay, c.tls)
			switch {
			case rr.Code/100 == 2:
				accepted = append(accepted, i)
			case rr.Code == 452:
				// RFC 5321 §4.5.3.1.10: too many recipients; they go in a
				// further transaction.
				d.res[i] = r
				again = append(again, i)
			case rr.Code >= 500:
				d.decide(i, r)
			default:
				d.res[i] = r // stays pending: the next host may take it
				softest = r
			}
		}
		if len(accepted) == 0 {
			// The transaction is open with no one to send to; it is reset
			// before the connection is used again, which it always is.
			// Recipients turned away with 452 wait for the next host: this
			// one took no one.
			reset = true
			if !d.endEmptyData(c, reps) {
				r := result("4.4.2", true, "conversation with "+c.relay+" broke after DATA")
				d.leaveSome(append(again, rest...), r)
				return false, r, true, false
			}
			if len(rest) > 0 {
				queue = rest
				continue
			}
			if len(again) > 0 {
				softest = d.res[again[0]]
			}
			return true, softest, softest.Status != "", false
		}
		var pipelined *smtpclient.Reply
		if tx.Data {
			pipelined = &reps.Data
		}
		rep, err := d.data(c, sevenBit, pipelined)
		c.sent++
		var re *smtpclient.ReplyError
		if errors.As(err, &re) {
			c.note(re.Reply)
		}
		var be *smtpclient.BodyError
		switch {
		case errors.As(err, &be):
			// Our fault, not the host's: another host would fare no better.
			d.decideSome(accepted, result("4.3.0", true, "reading the queued message: "+be.Err.Error()))
			return false, transport.Result{}, false, false
		case errors.As(err, &re):
			// A refused DATA may leave the transaction open.
			reset = true
			r := replyResult(re.Reply, c.relay, c.tls)
			if r.Temporary {
				d.leaveSome(accepted, r)
				return true, r, true, false
			}
			// RFC 5321 §4.2.5 / §3.3: a refusal of the text is every
			// accepted recipient's.
			d.decideSome(accepted, r)
		case err != nil:
			// A connection dropped during DATA: the next host gets them.
			r := result("4.4.2", true, "conversation with "+c.relay+" broke during DATA: "+err.Error())
			d.leaveSome(accepted, r)
			return false, r, true, false
		default:
			r := replyResult(rep, c.relay, c.tls)
			// RFC 3461 §4.2: a next hop without DSN ends what we can
			// promise; a NOTIFY=SUCCESS sender is told "relayed".
			r.Relayed = !ext.DSN
			d.decideSome(accepted, r)
		}
		queue = append(again, rest...)
	}
	return true, transport.Result{}, false, false
}

// maxRcptsPerTransaction bounds the recipients of one transaction: the
// 100 every server must take (RFC 5321 §4.5.3.1.8), and a pipelined group
// whose replies fit the socket buffers, so that neither side blocks
// writing while the other does (RFC 2920 §3.2).
const maxRcptsPerTransaction = 100

// checkSevenBit makes sure, once per delivery, that the message can be
// made 7-bit, before a transaction starts, so that no host is left with a
// transaction cut off in DATA.
func (d *delivery) checkSevenBit(c *conn) (transport.Result, bool) {
	if !d.sevenBitChecked {
		d.sevenBitChecked = true
		f, err := d.m.Open()
		if err == nil {
			err = smtpclient.To7Bit(io.Discard, f)
			f.Close()
		}
		d.sevenBitErr = err
	}
	err := d.sevenBitErr
	var ce *smtpclient.ConversionError
	switch {
	case err == nil:
		return transport.Result{}, true
	case errors.As(err, &ce):
		status := "5.6.3" // RFC 3463: conversion required but not supported
		if d.m.SMTPUTF8 && errors.Is(err, smtpclient.ErrHeader8Bit) {
			status = "5.6.7" // RFC 6531 §3.5 / RFC 5248: non-ASCII address or header
		}
		return transport.Result{Status: status, Answer: "host " + c.relay + " does not offer 8BITMIME and the message cannot be " + err.Error(), RemoteMTA: c.relay, TLS: c.tls}, false
	}
	return transport.Result{Status: "4.3.0", Temporary: true, Answer: "reading the queued message: " + err.Error(), RemoteMTA: c.relay, TLS: c.tls}, false
}

// data sends the text, made 7-bit when asked: after DATA, or after the
// reply to the DATA pipelined with the envelope when there was one.
func (d *delivery) data(c *conn, sevenBit bool, pipelined *smtpclient.Reply) (smtpclient.Reply, error) {
	send := c.cl.Data
	if pipelined != nil {
		if pipelined.Code != 354 {
			return *pipelined, &smtpclient.ReplyError{Command: "DATA", Reply: *pipelined}
		}
		send = c.cl.Text
	}
	f, err := d.m.Open()
	if err != nil {
		c.cl.Close()
		return smtpclient.Reply{}, &smtpclient.BodyError{Err: err}
	}
	defer f.Close()
	if sevenBit {
		return send(func(w io.Writer) error { return smtpclient.To7Bit(w, f) })
	}
	bp := d.t.buffers.Get().(*[]byte)
	defer d.t.buffers.Put(bp)
	return send(smtpclient.Copy(f, *bp))
}

// endEmptyData closes a pipelined DATA that a server accepted though no
// recipient was taken (RFC 2920 §3.1: the client then sends the text or
// an empty one): an empty text, whose reply means nothing. It reports
// whether the connection is still good.
func (d *delivery) endEmptyData(c *conn, reps smtpclient.EnvelopeReplies) bool {
	if reps.Data.Code != 354 {
		return true
	}
	r, err := c.cl.Text(func(io.Writer) error { return nil })
	var re *smtpclient.ReplyError
	if err != nil && !errors.As(err, &re) {
		return false
	}
	c.note(r)
	return true
}

// rcptParams are RFC 3461 §4.1 and §4.2's NOTIFY and ORCPT, for a host
// that offers DSN.
func rcptParams(ext smtpclient.Extensions, rc transport.Recipient) []string {
	if !ext.DSN {
		return nil
	}
	var p []string
	if rc.Notify != 0 {
		p = append(p, "NOTIFY="+notifyValue(rc.Notify))
	}
	if rc.ORcpt != "" {
		if typ, addr, ok := cutORcpt(rc.ORcpt); ok {
			if strings.EqualFold(typ, "utf-8") {
				p = append(p, "ORCPT="+typ+";"+smtpclient.UTF8AddrXText(addr, ext.SMTPUTF8))
			} else {
				p = append(p, "ORCPT="+typ+";"+smtpclient.XText(addr))
			}
		}
	}
	return p
}

func cutORcpt(s string) (typ, addr string, ok bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == ';' {
			return s[:i], s[i+1:], i > 0
		}
	}
	return "", "", false
}

func notifyValue(n transport.Notify) string {
	if n&transport.NotifyNever != 0 {
		return "NEVER"
	}
	var b []byte
	for _, kw := range []struct {
		bit  transport.Notify
		word string
	}{{transport.NotifySuccess, "SUCCESS"}, {transport.NotifyFailure, "FAILURE"}, {transport.NotifyDelay, "DELAY"}} {
		if n&kw.bit != 0 {
			if len(b) > 0 {
				b = append(b, ',')
			}
			b = append(b, kw.word...)
		}
	}
	return string(b)
}

// leaveSome records r for the recipients idx, who stay pending.
func (d *delivery) leaveSome(idx []int, r transport.Result) {
	for _, i := range idx {
		d.res[i] = r
	}
}

// decideSome gives the recipients idx their final result r.
func (d *delivery) decideSome(idx []int, r transport.Result) {
	for _, i := range idx {
		d.decide(i, r)
	}
}

// logResult writes the line administrators grep for, one per recipient
// and attempt, in Postfix's shape.
func (t *Transport) logResult(d *delivery, rc transport.Recipient, r transport.Result) {
	word := "bounced"
	switch {
	case r.Delivered():
		word = "sent"
	case r.Temporary:
		word = "deferred"
	}
	relay, tlsv := r.RemoteMTA, r.TLS
	if relay == "" {
		relay = "none"
	}
	if tlsv == "" {
		tlsv = "none"
	}
	delay := t.o.Now().Sub(d.start).Seconds()
	t.o.Log.Info("smtp", "qid", d.m.ID, "to", "<"+rc.Addr+">", "relay", relay,
		"delay", strconv.FormatFloat(delay, 'f', 2, 64), "tls", tlsv, "dsn", r.Status, "status", word, "answer", r.Answer)
}

// note marks a connection the server is closing: after a 421 (RFC 5321
// §3.8) it is not kept for another message.
func (c *conn) note(r smtpclient.Reply) {
	if r.Code == 421 {
		c.closing = true
	}
}
