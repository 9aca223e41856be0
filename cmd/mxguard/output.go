package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/mxguard/mxguard/policy"
)

// writeHuman prints a report as a table: check, status, host, IP, detail,
// then the reply an MTA would give and what the owner should fix.
func writeHuman(w io.Writer, r *policy.Report) {
	subject := r.Domain
	if r.Null {
		subject = "<> (null sender)"
	}
	fmt.Fprintf(w, "%s: %s", subject, strings.ToUpper(r.Verdict().String()))
	if r.ClientIP.IsValid() {
		fmt.Fprintf(w, "  client %s", r.ClientIP)
	}
	fmt.Fprintf(w, "  (%d ms)\n", r.Elapsed.Milliseconds())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  CHECK\tSTATUS\tHOST\tIP\tDETAIL")
	for _, c := range r.Checks {
		ip := ""
		if c.IP.IsValid() {
			ip = c.IP.String()
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", c.ID, c.Status, dash(c.Host), dash(ip), c.Detail)
	}
	tw.Flush()
	if reply, ok := r.Reply(); ok {
		fmt.Fprintf(w, "  MTA reply: %s\n", reply)
	} else if r.Verdict() != policy.Pass {
		fmt.Fprintf(w, "  header: %s\n", r.HeaderValue())
	}
	var fixes []string
	for _, c := range r.Checks {
		if fix := c.Fix(); fix != "" {
			fixes = append(fixes, fmt.Sprintf("  - %s (%s): %s", c.ID, c.Status, fix))
		}
	}
	if len(fixes) > 0 {
		fmt.Fprintln(w, "  What to fix:")
		fmt.Fprintln(w, strings.Join(fixes, "\n"))
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
