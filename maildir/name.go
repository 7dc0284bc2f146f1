package maildir

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// escapeHost makes a host name safe inside a Maildir file name the way
// Courier and Dovecot do: "/" would be a path separator and ":" starts the
// info part.
func escapeHost(h string) string {
	if !strings.ContainsAny(h, "/:") {
		return h
	}
	h = strings.ReplaceAll(h, "/", `\057`)
	return strings.ReplaceAll(h, ":", `\072`)
}

// splitName splits a file name into its unique part and its flags. Only the
// ":2," info of the maildir spec carries flags; other info is ignored.
func splitName(name string) (unique, flags string) {
	i := strings.IndexByte(name, ':')
	if i < 0 {
		return name, ""
	}
	info := name[i+1:]
	if strings.HasPrefix(info, "2,") {
		flags = info[2:]
	}
	return name[:i], flags
}

// validUnique reports whether a unique name can be indexed: the UID list is
// line and space separated, so names with blanks or control bytes are left
// alone, as are hidden files.
func validUnique(u string) bool {
	if u == "" || u[0] == '.' || len(u) > 1000 {
		return false
	}
	for i := 0; i < len(u); i++ {
		if c := u[i]; c <= ' ' || c == 0x7f || c == '/' {
			return false
		}
	}
	return true
}

// nameSizes returns the S= and W= fields of a unique name, -1 where absent.
func nameSizes(unique string) (size, rfc822 int64) {
	size, rfc822 = -1, -1
	// Field by field without a slice of them: this runs for every
	// message at every login.
	_, rest, _ := strings.Cut(unique, ",")
	for rest != "" {
		var f string
		f, rest, _ = strings.Cut(rest, ",")
		switch {
		case strings.HasPrefix(f, "S="):
			if n, err := strconv.ParseInt(f[2:], 10, 64); err == nil && n >= 0 {
				size = n
			}
		case strings.HasPrefix(f, "W="):
			if n, err := strconv.ParseInt(f[2:], 10, 64); err == nil && n >= 0 {
				rfc822 = n
			}
		}
	}
	return size, rfc822
}

// Flag letters of the maildir spec; keywords use a–z.
const systemFlags = "DFPRST"

// NormalizeFlags checks a string of maildir flag letters (D F P R S T and
// the keyword letters a–z) and returns it sorted in ASCII order without
// duplicates, as the maildir spec asks.
func NormalizeFlags(flags string) (string, error) {
	var seen [128]bool
	for i := 0; i < len(flags); i++ {
		c := flags[i]
		if !(c >= 'a' && c <= 'z') && strings.IndexByte(systemFlags, c) < 0 {
			return "", fmt.Errorf("maildir: bad flag letter %q in %q", c, flags)
		}
		seen[c] = true
	}
	b := make([]byte, 0, len(flags))
	for c := range seen {
		if seen[c] {
			b = append(b, byte(c))
		}
	}
	return string(b), nil
}

// arrival is the sort key for assigning UIDs: the delivery time in the name,
// then pid and delivery counter numerically (so Q9 comes before Q10), then
// the name itself.
type arrival struct {
	sec, usec, pid, q int64
	name              string
}

func parseArrival(unique string) arrival {
	a := arrival{name: unique}
	dot := strings.IndexByte(unique, '.')
	if dot < 0 {
		return a
	}
	a.sec, _ = strconv.ParseInt(unique[:dot], 10, 64)
	mid := unique[dot+1:]
	if j := strings.IndexByte(mid, '.'); j >= 0 {
		mid = mid[:j]
	}
	// mid is like M123456P789Q12 (Dovecot adds V and I fields).
	for len(mid) > 0 {
		letter := mid[0]
		j := 1
		for j < len(mid) && mid[j] >= '0' && mid[j] <= '9' {
			j++
		}
		n, _ := strconv.ParseInt(mid[1:j], 10, 64)
		switch letter {
		case 'M':
			a.usec = n
		case 'P':
			a.pid = n
		case 'Q':
			a.q = n
		}
		mid = mid[j:]
	}
	return a
}

func (a arrival) less(b arrival) bool {
	switch {
	case a.sec != b.sec:
		return a.sec < b.sec
	case a.usec != b.usec:
		return a.usec < b.usec
	case a.pid != b.pid:
		return a.pid < b.pid
	case a.q != b.q:
		return a.q < b.q
	}
	return a.name < b.name
}

// sortByArrival sorts a slice of keys rather than looking keys up in a
// map: a first login to 100,000 messages sorts them all.
func sortByArrival(uniques []string) {
	keys := make([]arrival, len(uniques))
	for i, u := range uniques {
		keys[i] = parseArrival(u)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].less(keys[j]) })
	for i := range keys {
		uniques[i] = keys[i].name
	}
}
