package policy

import (
	"io"
	"net"
	"slices"
	"sync"
)

// maxBehind bounds what a message may have written ahead of its verifier:
// the front end's MTA sends the body without waiting (SMFIP_NR_BODY), and
// while the verifier waits for a key record (at most one lookup's budget)
// the session goes on reading up to this much.
const maxBehind = 1 << 20

// verifierFeed hands a message's octets to its verifier's goroutine. Unlike
// io.Pipe, Write does not wait for the reader to take them: it queues up
// to maxBehind octets, and waits for room only beyond that.
type verifierFeed struct {
	mu     sync.Mutex
	ready  sync.Cond // signalled when octets are queued or taken, or the feed closes
	queued [][]byte
	size   int
	err    error // set once the feed is closed: io.EOF or why
}

func newVerifierFeed() *verifierFeed {
	f := &verifierFeed{}
	f.ready.L = &f.mu
	return f
}

// Write queues a copy of p, unless the feed is closed.
func (f *verifierFeed) Write(p []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.err == nil && f.size > 0 && f.size+len(p) > maxBehind {
		f.ready.Wait()
	}
	if f.err != nil {
		return
	}
	f.queued = append(f.queued, append([]byte(nil), p...))
	f.size += len(p)
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

// Len is how many octets are queued.
func (f *verifierFeed) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.size
}

// contents returns a reader of what is queued, leaving it queued, and the
// error the feed was closed with (nil while it is open).
func (f *verifierFeed) contents() (io.Reader, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	queued := net.Buffers(slices.Clone(f.queued))
	return &queued, f.err
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
