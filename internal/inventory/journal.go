package inventory

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
)

// The journal is how a process that does not own the inventory file
// (mxguard audit beside a running serve) records its results: sightings
// appended, one JSON object a line, under a lock; the owner applies and
// removes them.

func journalPath(path string) string { return path + ".journal" }

// AppendJournal appends batch to the journal of the inventory at path.
func AppendJournal(path string, batch []Sighting) error {
	lock, err := lockFile(journalPath(path)+".lock", true)
	if err != nil {
		return err
	}
	defer lock.Close()
	f, err := os.OpenFile(journalPath(path), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for _, s := range batch {
		enc.Encode(s)
	}
	err = w.Flush()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// TakeJournal applies the journal's sightings and removes it; it returns
// the verdict changes they made. Lines that do not parse are skipped and
// counted.
func (l *Local) TakeJournal(ctx context.Context) ([]Notice, int, error) {
	if l.path == "" {
		return nil, 0, nil
	}
	lock, err := lockFile(journalPath(l.path)+".lock", true)
	if err != nil {
		return nil, 0, err
	}
	defer lock.Close()
	f, err := os.Open(journalPath(l.path))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	var batch []Sighting
	bad := 0
	in := bufio.NewScanner(f)
	in.Buffer(make([]byte, 64<<10), 1<<20)
	for in.Scan() {
		var s Sighting
		if json.Unmarshal(in.Bytes(), &s) != nil || s.Domain == "" {
			bad++
			continue
		}
		batch = append(batch, s)
	}
	f.Close()
	if err := in.Err(); err != nil {
		bad++
	}
	notices, err := l.Apply(ctx, batch)
	if err == nil {
		err = os.Remove(journalPath(l.path))
	}
	return notices, bad, err
}
