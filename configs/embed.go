// Package configs holds the documented default configuration, embedded in
// the mxguard binary: `mxguard serve` without --config runs with it.
package configs

import _ "embed"

// Default is configs/mxguard.yaml.
//
//go:embed mxguard.yaml
var Default []byte

// ActionsBegin and ActionsEnd enclose the lines of Default's policy.actions,
// one per check in report order, which its test writes from the checks'
// own default actions (policy.Catalogue).
const (
	ActionsBegin = "    # One line per check, in report order: go test ./configs -run DefaultActions -update\n"
	ActionsEnd   = "    # End of the checks.\n"
)

// PostfixMainCf is configs/postfix/main.cf, the milter settings for Postfix.
//
//go:embed postfix/main.cf
var PostfixMainCf []byte

// PostfixPolicyCf is configs/postfix/policy-service.cf, the policy service
// settings for Postfix.
//
//go:embed postfix/policy-service.cf
var PostfixPolicyCf []byte

// SendmailMc is configs/sendmail/mxguard.mc, the milter settings for Sendmail.
//
//go:embed sendmail/mxguard.mc
var SendmailMc []byte

// PostfixOpenDKIMCf is configs/postfix/opendkim.cf: OpenDKIM, then mxguard.
//
//go:embed postfix/opendkim.cf
var PostfixOpenDKIMCf []byte

// OpenDKIMConf is configs/opendkim/opendkim.conf: the signer's settings
// for a relay that runs mxguard after it.
//
//go:embed opendkim/opendkim.conf
var OpenDKIMConf []byte

// SendmailOpenDKIMMc is configs/sendmail/opendkim.mc: OpenDKIM's filter,
// included before mxguard's.
//
//go:embed sendmail/opendkim.mc
var SendmailOpenDKIMMc []byte
