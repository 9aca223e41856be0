package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/mxguard/mxguard/policy"
)

// runMessageCheck is `mxguard check --message`: the message checks of a
// saved message (one a receiver bounced, say) on its envelope sender's
// report, then the domain checks of its author domain when that differs.
// Output and exit status are those of a domain check.
func runMessageCheck(ctx context.Context, engine *policy.Engine, base policy.Request, o checkOptions, stdin io.Reader, out *printer, stderr io.Writer) int {
	in := stdin
	if o.message != "-" {
		f, err := os.Open(o.message)
		if err != nil {
			return usageError(stderr, err)
		}
		defer f.Close()
		in = f
	}
	m := engine.NewMessage()
	_, err := io.Copy(m, in)
	m.Close()
	if err != nil {
		fmt.Fprintf(stderr, "mxguard check: reading the message: %v\n", err)
		return exitUsage
	}
	author := singleAddress(m.Header("From"))
	req := base
	req.Sender = o.mailFrom
	if !o.set["mail-from"] {
		req.Sender = singleAddress(m.Header("Return-Path"))
		if req.Sender == "" {
			req.Sender = author
		}
	}
	if req.Sender == "" && !o.set["mail-from"] {
		return usageError(stderr, fmt.Errorf("%s has neither Return-Path nor one From address: give the envelope sender with --mail-from", o.message))
	}
	envelope := engine.Evaluate(ctx, req)
	code := out.print(engine, engine.EvaluateMessage(ctx, envelope, req, m))
	if a := policy.ParseSender(author); author != "" && a.Domain != envelope.Domain {
		authorReq := base
		authorReq.Sender = author
		code = worse(code, out.print(engine, engine.Evaluate(ctx, authorReq)))
	}
	return code
}

// singleAddress is the one address of a header field ("<>" for an empty
// Return-Path), or "" when there is not exactly one.
func singleAddress(values []string) string {
	if len(values) != 1 {
		return ""
	}
	if strings.TrimSpace(values[0]) == "<>" {
		return "<>"
	}
	list, err := policy.ParseAddressList(values[0])
	if err != nil || len(list) != 1 {
		return ""
	}
	return list[0].Address
}
