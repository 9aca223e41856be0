package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// completionShells are the shells `mxguard completion` writes for.
var completionShells = []string{"bash", "zsh"}

// runCompletion is `mxguard completion bash|zsh`: a completion script for
// the commands and flags of this binary.
func runCompletion(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		return usageError(stderr, errors.New("completion takes the shell: bash or zsh"))
	}
	switch args[0] {
	case "bash":
		fmt.Fprint(stdout, bashCompletion(commandList()))
	case "zsh":
		fmt.Fprint(stdout, zshCompletion(commandList()))
	default:
		return usageError(stderr, fmt.Errorf("completion: no script for %q, only for bash or zsh", args[0]))
	}
	return exitPass
}

// bashCompletion needs only bash itself, not the bash-completion package.
func bashCompletion(cmds []command) string {
	var b strings.Builder
	names := make([]string, len(cmds))
	for i, c := range cmds {
		names[i] = c.name
	}
	fmt.Fprintf(&b, `# bash completion for mxguard; written by mxguard completion bash.
_mxguard() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
	COMPREPLY=()
	if ((COMP_CWORD == 1)); then
		COMPREPLY=($(compgen -W %q -- "$cur"))
		return
	fi
	local words
	case ${COMP_WORDS[1]} in
`, strings.Join(names, " "))
	for _, c := range cmds {
		var words, files, values []string
		c.flags.VisitAll(func(f *flag.Flag) {
			words = append(words, "--"+f.Name)
			switch {
			case takesPath(f):
				files = append(files, "-"+f.Name, "--"+f.Name)
			case flagArg(f) != "":
				values = append(values, "-"+f.Name, "--"+f.Name)
			}
		})
		words = append(words, c.arguments...)
		fmt.Fprintf(&b, "\t%s)\n\t\twords=%q\n", c.name, strings.Join(words, " "))
		if len(files) > 0 || len(values) > 0 {
			b.WriteString("\t\tcase $prev in\n")
			if len(files) > 0 {
				fmt.Fprintf(&b, "\t\t%s)\n\t\t\tcompopt -o filenames 2>/dev/null\n\t\t\tCOMPREPLY=($(compgen -f -- \"$cur\"))\n\t\t\treturn\n\t\t\t;;\n", strings.Join(files, " | "))
			}
			if len(values) > 0 {
				fmt.Fprintf(&b, "\t\t%s) return ;; # a value, not a flag\n", strings.Join(values, " | "))
			}
			b.WriteString("\t\tesac\n")
		}
		b.WriteString("\t\t;;\n")
	}
	b.WriteString(`	*) return ;;
	esac
	COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -F _mxguard mxguard
`)
	return b.String()
}

// zshQuote is s in single quotes.
func zshQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// zshDesc escapes what _arguments reads specially in a description.
var zshDesc = strings.NewReplacer(`[`, `\[`, `]`, `\]`, `:`, `\:`)

func zshCompletion(cmds []command) string {
	var b strings.Builder
	b.WriteString("#compdef mxguard\n# zsh completion for mxguard; written by mxguard completion zsh.\n\n_mxguard() {\n\tlocal -a commands\n\tcommands=(\n")
	for _, c := range cmds {
		fmt.Fprintf(&b, "\t\t%s\n", zshQuote(c.name+":"+strings.ReplaceAll(c.summary, ":", `\:`)))
	}
	b.WriteString("\t)\n\tif ((CURRENT == 2)); then\n\t\t_describe -t commands 'mxguard command' commands\n\t\treturn\n\tfi\n")
	b.WriteString("\tlocal cmd=$words[2]\n\tshift words\n\t((CURRENT--))\n\tcurcontext=\"${curcontext%:*}-$cmd:\"\n\tcase $cmd in\n")
	for _, c := range cmds {
		var specs []string
		c.flags.VisitAll(func(f *flag.Flag) {
			_, text := flag.UnquoteUsage(f)
			spec := "--" + f.Name + "[" + zshDesc.Replace(text) + "]"
			if _, list := f.Value.(*listFlag); list {
				spec = "*" + spec
			}
			if a := flagArg(f); a != "" {
				action := " "
				if takesPath(f) {
					action = "_files"
				}
				spec += ":" + strings.ReplaceAll(a, ":", `\:`) + ":" + action
			}
			specs = append(specs, zshQuote(spec))
		})
		switch {
		case c.name == "check":
			specs = append(specs, zshQuote("*:domain or address: "))
		case len(c.arguments) > 0:
			specs = append(specs, zshQuote("1:"+c.name+":("+strings.Join(c.arguments, " ")+")"))
		}
		if len(specs) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\t%s)\n\t\t_arguments \\\n\t\t\t%s\n\t\t;;\n", c.name, strings.Join(specs, " \\\n\t\t\t"))
	}
	b.WriteString("\tesac\n}\n\n_mxguard \"$@\"\n")
	return b.String()
}
