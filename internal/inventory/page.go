package inventory

import (
	"container/heap"
	"encoding/base64"
	"errors"
	"sort"
	"strconv"
	"strings"
)

// Lists are newest change first, then by domain, descending (as Redis
// orders the members of one score in reverse); a cursor is the place of
// the last entry of a page in that order, opaque to clients.
type cursor struct {
	changed int64 // Unix nanoseconds
	domain  string
	set     bool
}

func (c cursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.changed, 10) + " " + c.domain))
}

// ErrCursor is a cursor that no page handed out.
var ErrCursor = errors.New("malformed cursor")

func parseCursor(s string) (cursor, error) {
	if s == "" {
		return cursor{}, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, ErrCursor
	}
	n, domain, ok := strings.Cut(string(b), " ")
	changed, err := strconv.ParseInt(n, 10, 64)
	if !ok || err != nil || domain == "" {
		return cursor{}, ErrCursor
	}
	return cursor{changed: changed, domain: domain, set: true}, nil
}

func cursorOf(e *Entry) cursor {
	return cursor{changed: e.Changed.UnixNano(), domain: e.Domain, set: true}
}

// before reports whether e comes after the cursor in list order.
func (c cursor) before(e *Entry) bool {
	if !c.set {
		return true
	}
	if ch := e.Changed.UnixNano(); ch != c.changed {
		return ch < c.changed
	}
	return e.Domain < c.domain
}

// listOrder reports whether a comes before b in lists.
func listOrder(a, b *Entry) bool {
	if !a.Changed.Equal(b.Changed) {
		return a.Changed.After(b.Changed)
	}
	return a.Domain > b.Domain
}

// paginate picks the first limit entries in list order (all when limit is
// 0) and the cursor of the next page: a bounded heap, so that a page of a
// million entries costs a pass, not a sort.
func paginate(entries []*Entry, limit int) ([]*Entry, string, error) {
	if limit <= 0 || len(entries) <= limit {
		sort.Slice(entries, func(i, j int) bool { return listOrder(entries[i], entries[j]) })
		return entries, "", nil
	}
	h := &lastFirst{}
	for _, e := range entries {
		if h.Len() < limit {
			heap.Push(h, e)
		} else if listOrder(e, (*h)[0]) {
			(*h)[0] = e
			heap.Fix(h, 0)
		}
	}
	page := []*Entry(*h)
	sort.Slice(page, func(i, j int) bool { return listOrder(page[i], page[j]) })
	return page, cursorOf(page[len(page)-1]).String(), nil
}

// lastFirst is a heap whose top is the entry that comes last in lists.
type lastFirst []*Entry

func (h lastFirst) Len() int           { return len(h) }
func (h lastFirst) Less(i, j int) bool { return listOrder(h[j], h[i]) }
func (h lastFirst) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *lastFirst) Push(x any)        { *h = append(*h, x.(*Entry)) }
func (h *lastFirst) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
