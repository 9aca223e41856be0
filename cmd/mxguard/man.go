package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"unicode"

	"go.yaml.in/yaml/v3"

	"github.com/mxguard/mxguard/configs"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/policy"
)

// The manual pages are written from what the binary knows (the usage text,
// the flag sets, the default configuration and its comments, the check
// catalogue), so they cannot say other than the program does. docs/man
// holds them as written; `go generate` rewrites them and a test compares.
//
//go:generate sh -c "go run . man 8 >../../docs/man/mxguard.8 && go run . man 5 >../../docs/man/mxguard.yaml.5"

// manDate is the date the pages carry (mdoc's .Dd): the last time their
// wording changed.
const manDate = "December 2, 2026"

// runMan is `mxguard man 8|5`, not listed in the usage: it prints
// mxguard(8) or mxguard.yaml(5) in mdoc(7).
func runMan(args []string, stdout, stderr io.Writer) int {
	var page string
	var err error
	switch strings.Join(args, " ") {
	case "8":
		page = manCommands()
	case "5":
		page, err = manConfig(configs.Default)
	default:
		err = errors.New("man takes 8 (mxguard) or 5 (mxguard.yaml)")
	}
	if err != nil {
		return usageError(stderr, err)
	}
	fmt.Fprint(stdout, page)
	return exitPass
}

// roffText escapes s for a roff text line: backslashes are escapes, and a
// line that starts with a dot or quote would be a request.
func roffText(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// roffArg is s as one quoted macro argument, never parsed as a macro.
func roffArg(s string) string {
	return `"` + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\e`), `"`, `\(dq`) + `"`
}

// paragraphs writes prose as mdoc text: paragraphs split at empty lines,
// each sentence on a line of its own (mdoc(7): a sentence ends at a line's
// end), indented lines as literal displays.
func paragraphs(b *strings.Builder, text string) {
	var prose, literal []string
	flush := func() {
		if len(prose) > 0 {
			for _, s := range sentences(strings.Join(prose, " ")) {
				for _, l := range wrap(s) {
					b.WriteString(roffText(l) + "\n")
				}
			}
			prose = nil
		}
		if len(literal) > 0 {
			b.WriteString(".Bd -literal -offset indent\n")
			for _, l := range literal {
				b.WriteString(roffText(l) + "\n")
			}
			b.WriteString(".Ed\n")
			literal = nil
		}
	}
	// A paragraph break before prose; a display makes its own.
	pp := false
	for line := range strings.SplitSeq(strings.TrimSpace(text), "\n") {
		switch {
		case strings.TrimSpace(line) == "":
			flush()
			pp = true
			continue
		case strings.HasPrefix(line, " "):
			if len(prose) > 0 {
				flush()
			}
			literal = append(literal, strings.TrimSpace(line))
		default:
			if len(literal) > 0 {
				flush()
			}
			if pp && len(prose) == 0 {
				b.WriteString(".Pp\n")
			}
			prose = append(prose, strings.TrimSpace(line))
		}
		pp = false
	}
	flush()
}

// sentences splits prose after each full stop, question or exclamation
// mark that a capitalised word follows.
func sentences(s string) []string {
	words := strings.Fields(s)
	var out []string
	start := 0
	for i, w := range words {
		next := i + 1
		if next < len(words) && strings.ContainsAny(w[len(w)-1:], ".?!") &&
			unicode.IsUpper([]rune(words[next])[0]) {
			out = append(out, strings.Join(words[start:next], " "))
			start = next
		}
	}
	return append(out, strings.Join(words[start:], " "))
}

// wrap breaks a sentence into lines of at most 80 bytes where it can.
func wrap(s string) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > 79 {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return append(lines, line)
}

// manFlags writes a flag set as a tagged list.
func manFlags(b *strings.Builder, fs *flag.FlagSet) {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n == 0 {
		return
	}
	b.WriteString(".Bl -tag -width Ds\n")
	fs.VisitAll(func(f *flag.Flag) {
		b.WriteString(".It Fl -" + f.Name)
		if a := flagArg(f); a != "" {
			b.WriteString(" Ar " + a)
		}
		b.WriteString("\n")
		_, text := flag.UnquoteUsage(f)
		if _, list := f.Value.(*listFlag); !list && f.DefValue != "" && f.DefValue != "0" && f.DefValue != "0s" && f.DefValue != "false" {
			text += fmt.Sprintf(" (default: %s)", f.DefValue)
		}
		paragraphs(b, strings.ToUpper(text[:1])+text[1:]+".")
	})
	b.WriteString(".El\n")
}

// helpText is the description in a command's -h text: after its synopsis,
// before "Flags:".
func helpText(help string) string {
	_, text, _ := strings.Cut(help, "\n\n")
	text, _, _ = strings.Cut(text, "\nFlags:")
	return text
}

// manCommands is mxguard(8).
func manCommands() string {
	var b strings.Builder
	intro, _, _ := strings.Cut(usage, "\nUsage:")
	fmt.Fprintf(&b, ".Dd %s\n.Dt MXGUARD 8\n.Os\n.Sh NAME\n.Nm mxguard\n.Nd %s\n", manDate, manSummary)
	b.WriteString(".Sh SYNOPSIS\n")
	for _, c := range commandList() {
		fmt.Fprintf(&b, ".Nm\n.Cm %s\n", c.name)
		if c.name == "completion" {
			b.WriteString(".Cm bash | zsh\n")
			continue
		}
		c.flags.VisitAll(func(f *flag.Flag) {
			b.WriteString(".Op Fl -" + f.Name)
			if a := flagArg(f); a != "" {
				b.WriteString(" Ar " + a)
			}
			b.WriteString("\n")
		})
		if c.name == "check" {
			b.WriteString(".Op Ar domain | address ...\n")
		}
	}
	b.WriteString(".Sh DESCRIPTION\n")
	paragraphs(&b, intro)
	b.WriteString(".Pp\nIts configuration is described in\n.Xr mxguard.yaml 5 .\n")
	b.WriteString("Flags may be given as\n.Fl -name\nor\n.Fl name ,\nand a value after a space or an equals sign.\n")
	b.WriteString(".Sh COMMANDS\n")
	for _, c := range commandList() {
		fmt.Fprintf(&b, ".Ss %s\n.Bd -literal -offset indent\n", c.name)
		for _, s := range c.synopses {
			b.WriteString(roffText(s) + "\n")
		}
		b.WriteString(".Ed\n.Pp\n")
		if c.help != "" {
			paragraphs(&b, helpText(c.help))
		} else {
			paragraphs(&b, strings.ToUpper(c.summary[:1])+c.summary[1:]+".")
		}
		manFlags(&b, c.flags)
	}
	b.WriteString(".Sh CHECKS\nIn report order, with the verdict a failure gets by default (see\n.Cm policy.actions\nin\n.Xr mxguard.yaml 5 ) :\n.Bl -tag -width Ds\n")
	for _, c := range policy.Catalogue() {
		fmt.Fprintf(&b, ".It Cm %s Pq %s\n", c.ID, c.Default)
		paragraphs(&b, "Of the "+c.Subject+": "+checkText(c))
	}
	b.WriteString(".El\n")
	b.WriteString(manSignals)
	b.WriteString(".Sh FILES\n.Bl -tag -width Ds\n")
	for _, f := range manFiles() {
		fmt.Fprintf(&b, ".It Pa %s\n", f[0])
		paragraphs(&b, f[1])
	}
	b.WriteString(".El\n")
	b.WriteString(".Sh EXIT STATUS\n.Bl -tag -width Ds\n")
	for _, e := range []struct {
		code int
		what string
	}{
		{exitPass, "Success; for check and audit, every domain passed."},
		{exitFlag, "check and audit: the worst verdict was flag or hold. serve: it stopped on an error (logged)."},
		{exitDefer, "check and audit: the worst verdict was defer or reject."},
		{exitTempError, "check and audit: only temporary errors, the checks could not finish."},
		{exitUsage, "A usage or configuration error (sysexits EX_USAGE)."},
	} {
		fmt.Fprintf(&b, ".It %d\n", e.code)
		paragraphs(&b, e.what)
	}
	b.WriteString(".El\n")
	b.WriteString(".Sh SEE ALSO\n.Xr systemctl 1 ,\n.Xr mxguard.yaml 5 ,\n.Xr postconf 5\n")
	return b.String()
}

// checkText is what the catalogue says of a check, as sentences.
func checkText(c policy.CheckInfo) string {
	text := c.What + ". It fails when " + c.FailWhen + "."
	if c.WarnWhen != "" {
		text += " It warns when " + c.WarnWhen + "."
	}
	if c.RFC != "" {
		text += " See " + c.RFC + "."
	}
	return text
}

// manSummary is the pages' one-line description, the package's too.
const manSummary = "milter and Postfix policy service for the DNS hygiene of outbound mail"

// manSignals is how the commands take signals (serve.go, and the
// signal.NotifyContext of check, audit and sandbox).
const manSignals = `.Sh SIGNALS
.Bl -tag -width Ds
.It Dv SIGHUP
.Cm serve
reloads its configuration file.
A file with errors is logged and the running configuration stays.
The settings
.Xr mxguard.yaml 5
says take effect on restart, such as the listen addresses, keep their values.
.It Dv SIGTERM , SIGINT
.Cm serve
stops taking new sessions, lets open ones run for up to
.Cm milter.drain_timeout
and exits.
.Cm check
and
.Cm audit
stop checking and exit;
.Cm sandbox
stops its servers, removes the configuration it wrote and exits 0.
.El
`

// manFiles are the files mxguard(8) names: where the package installs
// them, and the inventory's default path.
func manFiles() [][2]string {
	return [][2]string{
		{"/etc/mxguard/mxguard.yaml", "The configuration the packaged service runs with; see mxguard.yaml(5)."},
		{config.Default().Inventory.Path, "The domain inventory (inventory.path)."},
		{"/usr/lib/systemd/system/mxguard.service", "The systemd unit: serve as the user mxguard."},
		{"/usr/share/doc/mxguard/examples", "The Postfix and Sendmail settings for the milter and the policy service."},
	}
}

// confKey is a key of the default configuration with what its comment
// says: a leaf's default value, or "" for a mapping.
type confKey struct {
	path, value, comment string
	// about is the key whose comment covers this one, which has none.
	about string
	depth int
}

// configKeys walks the default configuration in its order.
func configKeys(src []byte) (intro string, keys []confKey, err error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return "", nil, err
	}
	if doc.Kind != yaml.DocumentNode || doc.Content[0].Kind != yaml.MappingNode {
		return "", nil, errors.New("the configuration is not a mapping")
	}
	var walk func(parent string, m *yaml.Node, depth int)
	walk = func(parent string, m *yaml.Node, depth int) {
		about := parent
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, v := m.Content[i], m.Content[i+1]
			head := k.HeadComment
			if head == strings.TrimSpace(configs.ActionsBegin) {
				head = "" // for maintainers: the lines below are generated
			}
			c := confKey{path: k.Value, comment: uncomment(head), depth: depth}
			if parent != "" {
				c.path = parent + "." + k.Value
			}
			if c.comment != "" {
				about = c.path
			} else {
				c.about = about
			}
			if v.Kind == yaml.MappingNode {
				keys = append(keys, c)
				walk(c.path, v, depth+1)
				continue
			}
			c.value = yamlValue(v)
			keys = append(keys, c)
		}
	}
	walk("", doc.Content[0], 0)
	return uncomment(doc.HeadComment), keys, nil
}

// uncomment is a YAML comment's text without the "# ".
func uncomment(c string) string {
	var lines []string
	for l := range strings.SplitSeq(c, "\n") {
		l = strings.TrimPrefix(strings.TrimPrefix(l, "#"), " ")
		lines = append(lines, l)
	}
	return strings.Join(lines, "\n")
}

// yamlValue is a value as the file writes it.
func yamlValue(v *yaml.Node) string {
	switch {
	case v.Kind == yaml.SequenceNode:
		items := make([]string, len(v.Content))
		for i, it := range v.Content {
			items[i] = yamlValue(it)
		}
		return "[" + strings.Join(items, ", ") + "]"
	case v.Style&yaml.DoubleQuotedStyle != 0:
		return fmt.Sprintf("%q", v.Value)
	}
	return v.Value
}

// manConfig is mxguard.yaml(5), from the default configuration src.
func manConfig(src []byte) (string, error) {
	intro, keys, err := configKeys(src)
	if err != nil {
		return "", err
	}
	checks := map[string]policy.CheckInfo{}
	for _, c := range policy.Catalogue() {
		checks["policy.actions."+string(c.ID)] = c
	}
	var b strings.Builder
	fmt.Fprintf(&b, ".Dd %s\n.Dt MXGUARD.YAML 5\n.Os\n.Sh NAME\n.Nm mxguard.yaml\n.Nd configuration of mxguard, the %s\n", manDate, manSummary)
	b.WriteString(".Sh DESCRIPTION\n")
	paragraphs(&b, intro)
	b.WriteString(".Pp\nThe keys, with their default values:\n")
	open := false
	for _, k := range keys {
		if k.depth == 0 {
			if open {
				b.WriteString(".El\n")
			}
			fmt.Fprintf(&b, ".Ss %s\n", k.path)
			if k.value == "" {
				paragraphs(&b, k.comment)
				b.WriteString(".Bl -tag -width Ds\n")
				open = true
				continue
			}
			b.WriteString(".Bl -tag -width Ds\n")
			open = true
		}
		fmt.Fprintf(&b, ".It Cm %s\n", k.path)
		if k.value != "" {
			fmt.Fprintf(&b, "Default:\n.Ql %s .\n", roffArg(k.value))
		}
		c, isCheck := checks[k.path]
		switch {
		case k.comment != "":
			paragraphs(&b, k.comment)
		case isCheck:
			paragraphs(&b, "What a failure of this check does. It is of the "+c.Subject+": "+checkText(c))
			delete(checks, k.path)
		case k.about != "" && !strings.HasPrefix(k.path, k.about+"."):
			// Not when the text just above, its mapping's, covers it.
			fmt.Fprintf(&b, "Described with\n.Cm %s .\n", k.about)
		}
	}
	if open {
		b.WriteString(".El\n")
	}
	if len(checks) > 0 {
		missing := slices.Sorted(maps.Keys(checks))
		return "", fmt.Errorf("the default configuration lacks %s", strings.Join(missing, ", "))
	}
	b.WriteString(".Sh FILES\n.Bl -tag -width Ds\n.It Pa /etc/mxguard/mxguard.yaml\nThe configuration of the packaged service.\n.El\n")
	b.WriteString(".Sh SEE ALSO\n.Xr mxguard 8\n")
	return b.String(), nil
}
