package mda

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/tern-mail/tern/internal/sysexit"
)

func prepare(t *testing.T, msg string, env Envelope) (string, error) {
	t.Helper()
	r, err := Prepare(strings.NewReader(msg), env)
	if err != nil {
		return "", err
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), nil
}

func TestPrepare(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  string
		env  Envelope
		want string
	}{
		{"plain", "Subject: hi\n\nbody\n", Envelope{"a@b.example", "u@here.example"},
			"Return-Path: <a@b.example>\nDelivered-To: u@here.example\nSubject: hi\n\nbody\n"},
		{"nothing known", "Subject: hi\n\nbody\n", Envelope{}, "Subject: hi\n\nbody\n"},
		{"null sender", "Subject: hi\n\nbody\n", Envelope{Sender: "<>"}, "Return-Path: <>\nSubject: hi\n\nbody\n"},
		{"mbox From line", "From a@b Mon Jan  1 00:00:00 2024\nSubject: hi\n\nFrom me\n", Envelope{Sender: "a@b"},
			"Return-Path: <a@b>\nSubject: hi\n\nFrom me\n"},
		{"old Return-Path replaced", "Return-Path: <old@x>\nSubject: hi\nReturn-Path:\n <folded@x>\n\nReturn-Path: body\n", Envelope{Sender: "new@x"},
			"Return-Path: <new@x>\nSubject: hi\n\nReturn-Path: body\n"},
		{"only Return-Path first", "Return-Path: <old@x>\nSubject: hi\n\nb\n", Envelope{Sender: "new@x"},
			"Return-Path: <new@x>\nSubject: hi\n\nb\n"},
		{"old Return-Path kept when sender unknown", "Return-Path: <old@x>\n\nb\n", Envelope{Recipient: "u@h"},
			"Delivered-To: u@h\nReturn-Path: <old@x>\n\nb\n"},
		{"other Delivered-To", "Delivered-To: other@h\n\nb\n", Envelope{Recipient: "u@h"},
			"Delivered-To: u@h\nDelivered-To: other@h\n\nb\n"},
		{"Delivered-To in body is no loop", "Subject: x\n\nDelivered-To: u@h\n", Envelope{Recipient: "u@h"},
			"Delivered-To: u@h\nSubject: x\n\nDelivered-To: u@h\n"},
		{"CRLF kept for the store", "Subject: x\r\n\r\nb\r\n", Envelope{Recipient: "u@h"},
			"Delivered-To: u@h\nSubject: x\r\n\r\nb\r\n"},
		{"no header end", "Subject: x", Envelope{Recipient: "u@h"}, "Delivered-To: u@h\nSubject: x"},

		{"newline in sender", "\nb", Envelope{Sender: "a@b\nX-Evil: 1"}, "Return-Path: <a@b X-Evil: 1>\n\nb"},
	} {
		got, err := prepare(t, tc.msg, tc.env)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%s:\ngot  %q\nwant %q", tc.name, got, tc.want)
		}
	}
}

func TestLoop(t *testing.T) {
	for _, msg := range []string{
		"Delivered-To: u@h\n\nb\n",
		"Subject: x\nDELIVERED-TO:   U@H \n\nb\n",
		"Received: x\nDelivered-To:\n <u@h>\n\nb\n",
		"Subject: x\r\nDelivered-To: u@h\r\n\r\nb\r\n",
	} {
		_, err := prepare(t, msg, Envelope{Recipient: "u@h"})
		if !errors.Is(err, ErrLoop) || sysexit.Code(err) != sysexit.DataErr {
			t.Errorf("%q: err %v (status %d), want a loop with status 65", msg, err, sysexit.Code(err))
		}
	}
}

func TestEmpty(t *testing.T) {
	if _, err := prepare(t, "", Envelope{}); sysexit.Code(err) != sysexit.DataErr {
		t.Errorf("empty input: %v, want status 65", err)
	}
}

func TestLongHeaderStreams(t *testing.T) {
	// A header larger than MaxHeader is delivered whole, unchanged.
	long := "X-Long: " + strings.Repeat("a", MaxHeader+100) + "\n\nbody\n"
	got, err := prepare(t, long, Envelope{Recipient: "u@h"})
	if err != nil {
		t.Fatal(err)
	}
	if got != "Delivered-To: u@h\n"+long {
		t.Errorf("long header changed: len %d, want %d", len(got), len(long)+18)
	}
}

func FuzzPrepare(f *testing.F) {
	f.Add("From x\nSubject: a\nDelivered-To: u@h\n\nb\n", "s@x", "u@h")
	f.Add("Return-Path: <a>\r\n\tx\r\n\r\n", "", "")
	f.Fuzz(func(t *testing.T, msg, sender, rcpt string) {
		r, err := Prepare(strings.NewReader(msg), Envelope{Sender: sender, Recipient: rcpt})
		if err != nil {
			if !errors.Is(err, ErrLoop) && msg != "" {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		out, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		// The body (everything after the first blank line) is never changed.
		if i := strings.Index(msg, "\n\n"); i >= 0 && !strings.HasPrefix(msg, "From ") && len(msg) < MaxHeader {
			if !strings.HasSuffix(string(out), msg[i:]) {
				t.Fatalf("body changed: %q -> %q", msg, out)
			}
		}
	})
}
