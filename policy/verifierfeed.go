package policy

import (
	"errors"
	"io"
	"sync"
)

// maxBehind bounds what a message may have written ahead of its verifier.
// A verifier that is hashing holds the writer back at that point; one
// waiting for a key lookup does not: the front end's MTA sends the body
// without waiting (SMFIP_NR_BODY), and a slow DNS answer must not hold up
// the session.
const maxBehind = 1 << 20

// errBehind ends a verification that fell too far behind the message.
var errBehind = errors.New("the DKIM verifier fell behind the message (slow key lookups): not verified")

// verifierFeed hands a message's octets to its verifier's goroutine. Unlike
// io.Pipe, Write does not wait for the reader to take them: it queues up
// to maxBehind octets; beyond that it waits while the verifier hashes, and
// ends the feed with errBehind while the verifier waits for DNS.
type verifierFeed struct {
	mu     sync.Mutex
	ready  sync.Cond // signalled when octets are queued or taken, a lookup ends, or the feed closes
	queued [][]byte
	size   int
	// lookups counts the verifier's key lookups under way.
	lookups int
	err     error // set once the feed is closed: io.EOF or why
}

func newVerifierFeed() *verifierFeed {
	f := &verifierFeed{}
	f.ready.L = &f.mu
	return f
}

// Write queues a copy of p; it reports whether the feed is still open.
func (f *verifierFeed) Write(p []byte) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.err == nil && f.size > 0 && f.size+len(p) > maxBehind {
		if f.lookups > 0 {
			f.closeLocked(errBehind)
			break
		}
		f.ready.Wait()
	}
	if f.err != nil {
		return false
	}
	f.queued = append(f.queued, append([]byte(nil), p...))
	f.size += len(p)
	f.ready.Broadcast()
	return true
}

// lookingUp tells the feed that the verifier starts (true) or ends a key
// lookup.
func (f *verifierFeed) lookingUp(started bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if started {
		f.lookups++
	} else {
		f.lookups--
	}
	f.ready.Broadcast()
}

// Close ends the feed: the reader gets what is queued, then err (io.EOF
// for the end of the message).
func (f *verifierFeed) Close(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closeLocked(err)
}

func (f *verifierFeed) closeLocked(err error) {
	if f.err == nil {
		f.err = err
		if err != io.EOF {
			f.queued, f.size = nil, 0 // an error ends the verification at once
		}
		f.ready.Broadcast()
	}
}

// Read is the verifier's side.
func (f *verifierFeed) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.queued) == 0 && f.err == nil {
		f.ready.Wait()
	}
	if len(f.queued) == 0 {
		return 0, f.err
	}
	n := copy(p, f.queued[0])
	if n == len(f.queued[0]) {
		f.queued[0] = nil
		f.queued = f.queued[1:]
	} else {
		f.queued[0] = f.queued[0][n:]
	}
	f.size -= n
	f.ready.Broadcast()
	return n, nil
}

// failed is why the feed ended early, or nil.
func (f *verifierFeed) failed() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == io.EOF {
		return nil
	}
	return f.err
}
