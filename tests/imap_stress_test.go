package tests

import (
	"bufio"
	"fmt"
	"math/rand"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// stressDuration is how long TestIMAPManyPrograms runs; TERN_IMAP_STRESS
// (a Go duration) lengthens it, to a minute for the proof.
func stressDuration(t *testing.T) time.Duration {
	if s := os.Getenv("TERN_IMAP_STRESS"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("TERN_IMAP_STRESS=%q: %v", s, err)
		}
		return d
	}
	if testing.Short() {
		return 3 * time.Second
	}
	return 15 * time.Second
}

// deliverAsAccount runs tern-deliver as the account (nobody under
// root), as tern-queue would, so the servers can read what it wrote.
func deliverAsAccount(r *Root, a *popAccount, msg string) error {
	cmd := r.Cmd("tern-deliver", "-f", "x@example.org", "-r", "bob@example.net", a.maildir)
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	cmd.Stdin = strings.NewReader(msg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("tern-deliver: %v: %s", err, out)
	}
	return nil
}

// TestIMAPManyPrograms: two tern-imapd processes, tern-pop3d and a
// stream of tern-deliver deliveries work on one Maildir while a client
// idles. At the end every UID is unique and the same as when first
// seen, every delivered message is there once unless it was expunged,
// and the idling client's count of messages is the mailbox's.
func TestIMAPManyPrograms(t *testing.T) {
	r := NewRoot(t)
	a := newPOPAccount(t, r)
	_, addr1 := startIMAP(t, r)
	_, addr2 := startIMAP(t, r)
	_, pop := startPOP3(t, r)
	duration := stressDuration(t)

	// The idler keeps the count of messages the server tells it of.
	var mu sync.Mutex
	count := uint32(0)
	idler, err := imapclient.DialInsecure(addr1, &imapclient.Options{
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Mailbox: func(d *imapclient.UnilateralDataMailbox) {
				if d.NumMessages != nil {
					mu.Lock()
					count = *d.NumMessages
					mu.Unlock()
				}
			},
			Expunge: func(uint32) {
				mu.Lock()
				count--
				mu.Unlock()
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer idler.Close()
	if err := idler.Login(a.user, a.pass).Wait(); err != nil {
		t.Fatal(err)
	}
	sel, err := idler.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	count = sel.NumMessages
	mu.Unlock()
	idle, err := idler.Idle()
	if err != nil {
		t.Fatal(err)
	}

	stop := time.Now().Add(duration)
	var wg sync.WaitGroup
	var delivered, expunged sync.Map // Message-ID: true
	errs := make(chan error, 16)

	// Deliveries, as fast as tern-deliver goes, at most 2000.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 2000 && time.Now().Before(stop); i++ {
			id := fmt.Sprintf("<stress-%d@example.org>", i)
			if err := deliverAsAccount(r, a, fmt.Sprintf("From: x@example.org\nSubject: stress %d\nMessage-ID: %s\n\nbody %d\n", i, id, i)); err != nil {
				errs <- err
				return
			}
			delivered.Store(id, true)
		}
	}()

	// The second tern-imapd flags and expunges, and records each UID
	// the first time it sees it.
	uidOf := map[string]imap.UID{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := imapclient.DialInsecure(addr2, nil)
		if err != nil {
			errs <- err
			return
		}
		defer c.Close()
		if err := c.Login(a.user, a.pass).Wait(); err != nil {
			errs <- err
			return
		}
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			errs <- err
			return
		}
		rng := rand.New(rand.NewSource(1))
		for round := 0; round < 10000 && time.Now().Before(stop); round++ {
			if err := c.Noop().Wait(); err != nil {
				errs <- err
				return
			}
			msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Envelope: true}).Collect()
			if err != nil {
				if strings.Contains(err.Error(), "No matching messages") || strings.Contains(err.Error(), "empty") {
					continue
				}
				errs <- fmt.Errorf("fetch: %w", err)
				return
			}
			for _, m := range msgs {
				if m.Envelope == nil || m.Envelope.MessageID == "" {
					continue // the account's first three have none
				}
				id := "<" + m.Envelope.MessageID + ">"
				if old, ok := uidOf[id]; ok && old != m.UID {
					errs <- fmt.Errorf("%s had UID %d, now %d", id, old, m.UID)
					return
				}
				uidOf[id] = m.UID
			}
			if len(msgs) == 0 {
				continue
			}
			victim := msgs[rng.Intn(len(msgs))]
			flag := imap.FlagFlagged
			if rng.Intn(3) == 0 {
				flag = imap.FlagDeleted
			}
			if err := c.Store(imap.UIDSetNum(victim.UID), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{flag}, Silent: true}, nil).Close(); err != nil {
				errs <- fmt.Errorf("store: %w", err)
				return
			}
			if flag == imap.FlagDeleted && victim.Envelope != nil {
				if err := c.UIDExpunge(imap.UIDSetNum(victim.UID)).Close(); err != nil {
					errs <- fmt.Errorf("expunge: %w", err)
					return
				}
				expunged.Store("<"+victim.Envelope.MessageID+">", true)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	// tern-pop3d logs in and lists, moving new mail to cur/.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 1000 && time.Now().Before(stop); i++ {
			if err := pop3Listing(pop, a.user, a.pass); err != nil {
				errs <- fmt.Errorf("pop3: %w", err)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// What is there now, through a fresh session.
	c, err := imapclient.DialInsecure(addr2, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(a.user, a.pass).Wait(); err != nil {
		t.Fatal(err)
	}
	sel, err = c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Envelope: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	seenID := map[string]int{}
	seenUID := map[imap.UID]bool{}
	for _, m := range msgs {
		id := "<" + m.Envelope.MessageID + ">"
		if m.Envelope.MessageID == "" {
			id = fmt.Sprintf("uid %d", m.UID)
		}
		seenID[id]++
		if seenUID[m.UID] {
			t.Errorf("UID %d twice", m.UID)
		}
		seenUID[m.UID] = true
		if old, ok := uidOf[id]; ok && old != m.UID {
			t.Errorf("%s had UID %d, now %d", id, old, m.UID)
		}
	}
	n := 0
	delivered.Range(func(k, _ any) bool {
		n++
		id := k.(string)
		_, gone := expunged.Load(id)
		switch {
		case gone && seenID[id] > 0:
			t.Errorf("%s expunged and still there", id)
		case !gone && seenID[id] != 1:
			t.Errorf("%s delivered, there %d times", id, seenID[id])
		}
		return true
	})
	if n < 10 {
		t.Errorf("only %d deliveries in %v", n, duration)
	}
	// The idler hears of the last changes within a few seconds.
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		got := count
		mu.Unlock()
		if got == sel.NumMessages {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the idling client counts %d messages, the mailbox has %d", got, sel.NumMessages)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%v: %d delivered, %d in the mailbox at the end, %d UIDs seen", duration, n, len(msgs), len(uidOf))
}

// pop3Listing logs in to tern-pop3d, lists the unique ids and quits.
func pop3Listing(addr, user, pass string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	expect := func() (string, error) {
		l, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		if !strings.HasPrefix(l, "+OK") {
			return "", fmt.Errorf("%q", l)
		}
		return l, nil
	}
	if _, err := expect(); err != nil {
		return err
	}
	for _, cmd := range []string{"USER " + user, "PASS " + pass} {
		fmt.Fprintf(c, "%s\r\n", cmd)
		if _, err := expect(); err != nil {
			return fmt.Errorf("%s: %w", strings.Fields(cmd)[0], err)
		}
	}
	fmt.Fprintf(c, "UIDL\r\n")
	if _, err := expect(); err != nil {
		return err
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if l == ".\r\n" {
			break
		}
	}
	fmt.Fprintf(c, "QUIT\r\n")
	_, err = expect()
	return err
}
