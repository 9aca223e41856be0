package inventory

import (
	"bufio"
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"
)

// Local is the inventory of one host: in memory, bounded by entries and by
// bytes (the least recently seen domain goes first), and kept across
// restarts in a file written atomically. A damaged file is set aside and
// logged, never fatal.
//
// While a Local owns its file (serve), other processes (mxguard audit) do
// not write it: they append their results to the journal beside it, which
// the owner applies (Journal, TakeJournal).
type Local struct {
	path       string
	maxDomains int
	maxBytes   int
	log        *slog.Logger

	mu      sync.Mutex
	entries map[string]*list.Element // of *Entry; front: seen most recently
	order   *list.List
	bytes   int
	counts  map[string]int // entries by verdict
	dirty   bool
	lock    *os.File // held while this Local owns path
}

// fileHeader starts an inventory file: its format version.
const fileHeader = `{"mxguard_inventory":1}`

// OpenLocal loads the inventory at path ("" keeps it in memory only). With
// own set it takes the file for itself (serve); otherwise it only reads it.
func OpenLocal(path string, maxDomains, maxBytes int, own bool, log *slog.Logger) (*Local, error) {
	l := &Local{path: path, maxDomains: maxDomains, maxBytes: maxBytes, log: log,
		entries: map[string]*list.Element{}, order: list.New(), counts: map[string]int{}}
	if path == "" {
		return l, nil
	}
	if own {
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return nil, fmt.Errorf("inventory.path: %w", err)
		}
		lock, err := lockFile(path+".lock", false)
		if err != nil {
			return nil, fmt.Errorf("inventory.path %s: %w", path, err)
		}
		l.lock = lock
	}
	l.load()
	return l, nil
}

// ErrOwned is a file another process (a running serve) owns.
var ErrOwned = errors.New("another mxguard (serve) owns the inventory")

func lockFile(path string, wait bool) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, err
	}
	how := syscall.LOCK_EX
	if !wait {
		how |= syscall.LOCK_NB
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrOwned
		}
		return nil, err
	}
	return f, nil
}

// load reads the file; what cannot be read is set aside with a log line.
func (l *Local) load() {
	f, err := os.Open(l.path)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err == nil {
		err = l.read(f)
		f.Close()
	}
	if err == nil {
		return
	}
	aside := fmt.Sprintf("%s.damaged-%s", l.path, time.Now().UTC().Format("20060102T150405Z"))
	l.log.Error("the inventory file is damaged; set aside, starting a fresh inventory", "path", l.path, "aside", aside, "error", err)
	os.Rename(l.path, aside)
	l.entries, l.order, l.bytes, l.counts = map[string]*list.Element{}, list.New(), 0, map[string]int{}
}

func (l *Local) read(r io.Reader) error {
	in := bufio.NewReader(r)
	header, err := in.ReadString('\n')
	if err != nil || header != fileHeader+"\n" {
		return fmt.Errorf("not an mxguard inventory (first line %q)", clip(header))
	}
	var entries []*Entry
	for n := 2; ; n++ {
		line, err := in.ReadBytes('\n')
		if errors.Is(err, io.EOF) && len(line) == 0 {
			break
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		var e Entry
		if err := json.Unmarshal(line, &e); err != nil || e.Domain == "" {
			return fmt.Errorf("line %d: %v", n, err)
		}
		entries = append(entries, &e)
	}
	// Least recently seen first, so that the most recent end up in front.
	sort.Slice(entries, func(i, j int) bool { return entries[i].LastSeen.Before(entries[j].LastSeen) })
	for _, e := range entries {
		l.put(e)
	}
	return nil
}

func clip(s string) string { return s[:min(len(s), 40)] }

// put stores e (replacing its domain's entry) as seen most recently, and
// drops the least recently seen beyond the bounds. The lock is held.
func (l *Local) put(e *Entry) {
	if el, ok := l.entries[e.Domain]; ok {
		l.forget(el)
	}
	l.entries[e.Domain] = l.order.PushFront(e)
	l.bytes += size(e)
	l.counts[e.Verdict]++
	for l.order.Len() > l.maxDomains || l.bytes > l.maxBytes && l.order.Len() > 1 {
		l.forget(l.order.Back())
	}
}

func (l *Local) forget(el *list.Element) {
	e := l.order.Remove(el).(*Entry)
	delete(l.entries, e.Domain)
	l.bytes -= size(e)
	if l.counts[e.Verdict]--; l.counts[e.Verdict] == 0 {
		delete(l.counts, e.Verdict)
	}
}

// size estimates what an entry holds in memory.
func size(e *Entry) int {
	n := 160 + len(e.Domain) + len(e.Verdict) + len(e.AuditVerdict)
	for _, f := range e.Findings {
		n += 48 + len(f.ID) + len(f.Status) + len(f.Detail) + len(f.Fix)
	}
	for _, c := range e.Changes {
		n += 64 + len(c.From) + len(c.To) + 48*len(c.Findings) // findings shared with e.Findings or an older entry
	}
	return n
}

// Apply records a batch and returns the verdict changes it made.
func (l *Local) Apply(_ context.Context, batch []Sighting) ([]Notice, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var notices []Notice
	for _, s := range batch {
		var old *Entry
		if el, ok := l.entries[s.Domain]; ok {
			old = el.Value.(*Entry)
		}
		e, ch := apply(old, s)
		if old != nil && s.Messages == 0 { // an audit: it does not make the domain recently seen
			l.replace(l.entries[s.Domain], e)
		} else {
			l.put(e)
		}
		if ch != nil {
			notices = append(notices, Notice{Domain: s.Domain, Change: *ch})
		}
	}
	l.dirty = l.dirty || len(batch) > 0
	return notices, nil
}

// replace swaps an entry in place, keeping its place in the order.
func (l *Local) replace(el *list.Element, e *Entry) {
	old := el.Value.(*Entry)
	l.bytes += size(e) - size(old)
	if l.counts[old.Verdict]--; l.counts[old.Verdict] == 0 {
		delete(l.counts, old.Verdict)
	}
	l.counts[e.Verdict]++
	el.Value = e
}

// Get returns the entry of domain; nil when it was never seen.
func (l *Local) Get(_ context.Context, domain string) (*Entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if el, ok := l.entries[domain]; ok {
		return el.Value.(*Entry), nil
	}
	return nil, nil
}

// List returns the entries q selects, newest change first, and the cursor
// of the next page ("" after the last).
func (l *Local) List(_ context.Context, q Query) ([]*Entry, string, error) {
	after, err := parseCursor(q.Cursor)
	if err != nil {
		return nil, "", err
	}
	l.mu.Lock()
	var page []*Entry
	for el := l.order.Front(); el != nil; el = el.Next() {
		if e := el.Value.(*Entry); q.matches(e) && after.before(e) {
			page = append(page, e)
		}
	}
	l.mu.Unlock()
	return paginate(page, q.Limit)
}

// Domains calls fn for every domain seen since the given time.
func (l *Local) Domains(_ context.Context, since time.Time, fn func(domain string) error) error {
	l.mu.Lock()
	var domains []string
	for el := l.order.Front(); el != nil; el = el.Next() {
		if e := el.Value.(*Entry); !e.LastSeen.Before(since) {
			domains = append(domains, e.Domain)
		}
	}
	l.mu.Unlock()
	for _, d := range domains {
		if err := fn(d); err != nil {
			return err
		}
	}
	return nil
}

// Counts returns the number of domains by verdict ("" for those whose
// verdict is not known yet).
func (l *Local) Counts(context.Context) (map[string]int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.counts))
	for v, n := range l.counts {
		out[v] = n
	}
	return out, nil
}

// CheckCounts returns the number of domains with a non-pass finding of
// each check.
func (l *Local) CheckCounts(_ context.Context, checks []string) (map[string]int, error) {
	out := make(map[string]int, len(checks))
	for _, c := range checks {
		out[c] = 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for el := l.order.Front(); el != nil; el = el.Next() {
		for _, f := range el.Value.(*Entry).Findings {
			if n, ok := out[f.ID]; ok {
				out[f.ID] = n + 1
			}
		}
	}
	return out, nil
}

// Save writes the inventory to its file if it changed: to a new file
// beside it, synced, then renamed over it.
func (l *Local) Save() error {
	if l.path == "" {
		return nil
	}
	l.mu.Lock()
	if !l.dirty {
		l.mu.Unlock()
		return nil
	}
	entries := make([]*Entry, 0, l.order.Len())
	for el := l.order.Front(); el != nil; el = el.Next() {
		entries = append(entries, el.Value.(*Entry)) // entries are never changed in place
	}
	l.dirty = false
	l.mu.Unlock()
	if err := writeFile(l.path, entries); err != nil {
		l.mu.Lock()
		l.dirty = true
		l.mu.Unlock()
		return err
	}
	return nil
}

func writeFile(path string, entries []*Entry) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".new-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, nothing is there
	w := bufio.NewWriterSize(tmp, 256<<10)
	w.WriteString(fileHeader + "\n")
	enc := json.NewEncoder(w)
	for _, e := range entries {
		if err := enc.Encode(e); err != nil {
			tmp.Close()
			return err
		}
	}
	err = w.Flush()
	if err == nil {
		err = tmp.Chmod(0o640)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	return err
}

// Close saves the inventory and releases its file.
func (l *Local) Close() error {
	err := l.Save()
	if l.lock != nil {
		l.lock.Close()
	}
	return err
}
