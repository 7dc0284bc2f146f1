package maildir

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// SubscriptionsName is the file at the top of a Maildir that lists the
// subscribed folders (IMAP SUBSCRIBE, RFC 9051 §6.3.7): one UTF-8 folder
// name a line, INBOX as "INBOX".
const SubscriptionsName = "subscriptions"

// maxSubscriptions bounds what is read of the file.
const maxSubscriptions = 1 << 20

// Subscriptions returns the subscribed folder names, sorted. A name may
// name a folder that does not exist (RFC 9051 §6.3.7 allows it). Lines
// that are not valid folder names are skipped.
func (s *Store) Subscriptions() ([]string, error) {
	return retryStale(s.readSubscriptions)
}

func (s *Store) readSubscriptions() ([]string, error) {
	file, err := os.Open(filepath.Join(s.Root, SubscriptionsName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("maildir: read subscriptions: %w", err)
	}
	defer file.Close()
	var names []string
	sc := bufio.NewScanner(io.LimitReader(file, maxSubscriptions))
	for sc.Scan() {
		n := sc.Text()
		if isInbox(n) {
			n = "INBOX"
		} else if ValidateFolderName(n) != nil {
			continue
		}
		names = append(names, n)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("maildir: read subscriptions: %w", err)
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// Subscribe adds a folder name to the subscriptions.
func (s *Store) Subscribe(name string) error {
	return s.editSubscriptions(name, true)
}

// Unsubscribe takes a folder name out of the subscriptions; a name not
// there is no error.
func (s *Store) Unsubscribe(name string) error {
	return s.editSubscriptions(name, false)
}

// editSubscriptions changes the file under a lock of its own (the same
// link(2) lock as the UID list's), replacing it whole.
func (s *Store) editSubscriptions(name string, add bool) error {
	if isInbox(name) {
		name = "INBOX"
	} else if err := ValidateFolderName(name); err != nil {
		return err
	}
	p := filepath.Join(s.Root, SubscriptionsName)
	lk, err := s.lockFile(p + ".lock")
	if err != nil {
		return err
	}
	defer lk.unlock()
	names, err := s.Subscriptions()
	if err != nil {
		return err
	}
	has := slices.Contains(names, name)
	switch {
	case add && !has:
		names = append(names, name)
		slices.Sort(names)
	case !add && has:
		names = slices.DeleteFunc(names, func(n string) bool { return n == name })
	default:
		return nil
	}
	var b strings.Builder
	for _, n := range names {
		b.WriteString(n)
		b.WriteByte('\n')
	}
	return writeFileAtomic(p, []byte(b.String()))
}
