// Command mxguard is a milter for Postfix and Sendmail that checks the DNS
// hygiene of sender domains and sending hosts before mail leaves a relay.
//
//	mxguard serve    [--config FILE]           run the milter
//	mxguard check    [flags] DOMAIN|ADDRESS... audit domains from the command line
//	mxguard audit    [flags]                   re-check the domain inventory
//	mxguard validate [--config FILE]           check a configuration file
//	mxguard sandbox  --spec FILE               serve a test sandbox (DNS, MX hosts) for integration tests
//	mxguard completion bash|zsh                print a shell completion script
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// Exit codes (README, mxguard check): 0 pass, 1 flag/hold, 2 defer/reject, 3 temperror only,
// 64 usage or configuration error (sysexits EX_USAGE).
const (
	exitPass      = 0
	exitFlag      = 1
	exitDefer     = 2
	exitTempError = 3
	exitUsage     = 64
)

const usage = `mxguard checks, before mail leaves a relay, that each sender domain's MX
hosts accept SMTP on port 25 and that the sending host's PTR, forward-confirmed
reverse DNS and HELO name agree.

Usage:
  mxguard serve [--config FILE]             run the milter (see mxguard serve -h)
  mxguard validate [--config FILE]          check a configuration file, warn about risky settings
  mxguard check [flags] DOMAIN|ADDRESS...   audit domains (see mxguard check -h)
  mxguard check [flags] --file FILE         audit one domain or address per line ("-": stdin)
  mxguard audit [flags]                     re-check the domain inventory, say what changed (see mxguard audit -h)
  mxguard sandbox --spec FILE               serve a DNS zone and MX hosts on loopback for tests (docs/SANDBOX.md)
  mxguard completion bash|zsh               print the shell completion script for bash or zsh
  mxguard version                           print the version of this binary
  mxguard help                              print this text
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "serve" {
		return runServe(args[1:], stderr) // logs are slog's, quoted as it quotes them
	}
	// What the other commands print is ASCII, whatever a message quotes.
	stdout, stderr = asciiWriter{stdout}, asciiWriter{stderr}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "validate":
		return runValidate(args[1:], stdout, stderr)
	case "check":
		return runCheck(args[1:], stdin, stdout, stderr)
	case "audit":
		return runAudit(args[1:], stdin, stdout, stderr)
	case "sandbox":
		return runSandbox(args[1:], stdout, stderr)
	case "completion":
		return runCompletion(args[1:], stdout, stderr)
	case "man":
		return runMan(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "mxguard %s\n", buildVersion())
		return exitPass
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitPass
	}
	fmt.Fprintf(stderr, "mxguard: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

// parseInterspersed parses flags that may come before, between or after
// the positional arguments ("mxguard check example.com --json").
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		if args[0] == "--" {
			return append(positional, args[1:]...), nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

// usageError reports a usage error the way flag does, and returns 64.
func usageError(stderr io.Writer, err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitPass
	}
	fmt.Fprintf(stderr, "mxguard: %v\n", err)
	return exitUsage
}

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return fmt.Sprint(*l) }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }
