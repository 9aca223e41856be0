package policy

import "time"

// Observer is told about the engine's network work, for metrics. Its
// methods are called from many goroutines and must not block.
type Observer interface {
	// DNSQuery reports one query attempt: outcome is "noerror", "nxdomain",
	// "servfail", "refused", "timeout", "bad-response", "network-error"...
	DNSQuery(qtype uint16, outcome string, took time.Duration)
	// Probe reports one port-25 probe that was dialled (or refused by policy).
	Probe(outcome Outcome, took time.Duration)
	// CacheLookup reports a hit or miss in the "dns" or "probe" cache, or
	// of a decision in the remembered reports ("report", warm.go).
	CacheLookup(cache string, hit bool)
}

type nopObserver struct{}

func (nopObserver) DNSQuery(uint16, string, time.Duration) {}
func (nopObserver) Probe(Outcome, time.Duration)           {}
func (nopObserver) CacheLookup(string, bool)               {}
