package policy

import "context"

// check is one registered check. Each lives in its own check_*.go file.
type check struct {
	id          CheckID
	aboutDomain bool   // about the sender domain (else the sending host)
	fix         string // what to change on warn or fail
	run         func(ctx context.Context, ev *evaluation) Result
}

// checks is the registry, in the order of the SPEC table and of reports.
var checks = []check{
	{DomainSyntax, true, fixDomainSyntax, checkDomainSyntax},
	{MXRecords, true, fixMXRecords, checkMXRecords},
	{MXTargets, true, fixMXTargets, checkMXTargets},
	{MXPort25, true, fixMXPort25, checkMXPort25},
	{MXOutboundIP, true, fixMXOutboundIP, checkMXOutboundIP},
	{HELOSyntax, false, fixHELOSyntax, checkHELOSyntax},
	{ClientPTR, false, fixClientPTR, checkClientPTR},
	{ClientFCrDNS, false, fixClientFCrDNS, checkClientFCrDNS},
	{HELOMatchesPTR, false, fixHELOMatchesPTR, checkHELOMatchesPTR},
}

var checkIndex = func() map[CheckID]int {
	m := make(map[CheckID]int, len(checks))
	for i, c := range checks {
		m[c.id] = i
	}
	return m
}()

func skip(detail string) Result { return Result{Status: StatusSkip, Detail: detail} }

func temperror(err error) Result { return Result{Status: StatusTempError, Detail: err.Error()} }
