package main

import (
	"flag"
	"io"
	"regexp"
	"strings"
)

// command is one of mxguard's commands as its manual page and the shell
// completion describe it: what the usage text says of it, and its flags.
type command struct {
	name      string
	synopses  []string // "mxguard check [flags] --file FILE", from the usage text
	summary   string   // from the usage text
	help      string   // the text of `mxguard NAME -h`, if it has one
	flags     *flag.FlagSet
	arguments []string // words completed after the command
}

// flagSets are the commands' flag sets, built by the functions that parse
// them, and their -h texts.
var flagSets = map[string]struct {
	flags func() *flag.FlagSet
	help  string
}{
	"serve":    {func() *flag.FlagSet { return serveFlagSet(new(string), io.Discard) }, serveUsage},
	"validate": {func() *flag.FlagSet { return validateFlagSet(new(string), io.Discard) }, ""},
	"check":    {func() *flag.FlagSet { return checkFlagSet(new(checkOptions), io.Discard) }, checkUsage},
	"audit":    {func() *flag.FlagSet { return auditFlagSet(new(auditOptions), io.Discard) }, auditUsage},
	"sandbox":  {func() *flag.FlagSet { return sandboxFlagSet(new(sandboxOptions), io.Discard) }, sandboxUsage},
}

// usageLine is a command's line in the usage text: synopsis, then at least
// two spaces, then what it does.
var usageLine = regexp.MustCompile(`^  (mxguard (\S+).*?)\s{2,}(\S.*)$`)

// seeHelp is the usage text's pointer to a command's -h, which the manual
// page replaces with the -h text itself.
var seeHelp = regexp.MustCompile(`\s*\(see mxguard \S+ -h\)`)

// commandList is every command of the usage text, in its order.
func commandList() []command {
	var list []command
	for line := range strings.Lines(usage) {
		m := usageLine.FindStringSubmatch(strings.TrimRight(line, "\n"))
		if m == nil {
			continue
		}
		if n := len(list); n > 0 && list[n-1].name == m[2] {
			list[n-1].synopses = append(list[n-1].synopses, m[1])
			continue
		}
		c := command{name: m[2], synopses: []string{m[1]}, summary: seeHelp.ReplaceAllString(m[3], "")}
		if f, ok := flagSets[c.name]; ok {
			c.flags, c.help = f.flags(), f.help
		} else {
			c.flags = flag.NewFlagSet(c.name, flag.ContinueOnError)
		}
		if c.name == "completion" {
			c.arguments = completionShells
		}
		list = append(list, c)
	}
	return list
}

// flagArg is the name of the value a flag takes ("FILE"), "" for a switch.
func flagArg(f *flag.Flag) string {
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return ""
	}
	name, _ := flag.UnquoteUsage(f)
	return strings.ToUpper(name)
}

// takesPath is whether a flag's value is a file name, completed as one.
func takesPath(f *flag.Flag) bool {
	a := flagArg(f)
	return a == "FILE" || a == "PATH"
}
