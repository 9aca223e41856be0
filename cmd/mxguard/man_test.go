package main

import (
	"bytes"
	"flag"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/mxguard/mxguard/configs"
)

// manPages are the committed pages and the arguments of `mxguard man`
// that write them.
var manPages = map[string]string{"8": "../../docs/man/mxguard.8", "5": "../../docs/man/mxguard.yaml.5"}

// requireTool fails under CI, and skips elsewhere, without a program.
func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed (apt-get install %s); CI must provide it (.ci/run)", name, pkg)
		}
		t.Skipf("%s is not installed (apt-get install %s)", name, pkg)
	}
	return p
}

func TestManPagesAreGenerated(t *testing.T) {
	for section, path := range manPages {
		var out, errOut bytes.Buffer
		if code := runMan([]string{section}, &out, &errOut); code != exitPass {
			t.Fatalf("mxguard man %s: exit %d: %s", section, code, errOut.String())
		}
		committed, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(committed, out.Bytes()) {
			t.Errorf("%s is not what mxguard man %s writes: run go generate ./cmd/mxguard", path, section)
		}
	}
}

// mandoc's lint finds what groff and man(1) would render wrongly; its
// style remarks (such as pages not installed here) are not failures.
func TestManPagesLint(t *testing.T) {
	mandoc := requireTool(t, "mandoc", "mandoc")
	for _, path := range manPages {
		out, err := exec.Command(mandoc, "-Tlint", "-W", "warning", path).CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("mandoc -Tlint %s: %v\n%s", path, err, out)
		}
	}
}

// The page lists every key of the documented default configuration, and
// only those: read here from the file and the page, not from the generator.
func TestManConfigKeysAreTheFileKeys(t *testing.T) {
	var doc map[string]any
	if err := yaml.Unmarshal(configs.Default, &doc); err != nil {
		t.Fatal(err)
	}
	fileKeys := map[string]bool{}
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			fileKeys[prefix+k] = true
			if sub, ok := v.(map[string]any); ok {
				walk(prefix+k+".", sub)
			}
		}
	}
	walk("", doc)

	page, err := os.ReadFile(manPages["5"])
	if err != nil {
		t.Fatal(err)
	}
	pageKeys := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\.(?:Ss|It Cm) (\S+)$`).FindAllStringSubmatch(string(page), -1) {
		pageKeys[m[1]] = true
	}
	for _, k := range slices.Sorted(maps.Keys(fileKeys)) {
		if !pageKeys[k] {
			t.Errorf("configs/mxguard.yaml has %s, mxguard.yaml(5) does not", k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(pageKeys)) {
		if !fileKeys[k] {
			t.Errorf("mxguard.yaml(5) has %s, configs/mxguard.yaml does not", k)
		}
	}
	if len(fileKeys) < 100 {
		t.Errorf("only %d keys in configs/mxguard.yaml", len(fileKeys))
	}
}

// Every command of the usage text is one that mxguard runs, and every
// flag set is in the usage text.
func TestCommandListIsWhatRuns(t *testing.T) {
	listed := map[string]bool{}
	for _, c := range commandList() {
		listed[c.name] = true
		var out, errOut bytes.Buffer
		run([]string{c.name, "-h"}, strings.NewReader(""), &out, &errOut)
		if strings.Contains(errOut.String(), "unknown command") {
			t.Errorf("the usage lists %s, mxguard does not run it", c.name)
		}
	}
	for name := range flagSets {
		if !listed[name] {
			t.Errorf("the usage does not list %s", name)
		}
	}
}

func TestManPageNamesEveryFlag(t *testing.T) {
	page := manCommands()
	for _, c := range commandList() {
		if !strings.Contains(page, "\n.Ss "+c.name+"\n") {
			t.Errorf("mxguard(8) has no section for %s", c.name)
		}
		c.flags.VisitAll(func(f *flag.Flag) {
			if !strings.Contains(page, "\n.It Fl -"+f.Name) {
				t.Errorf("mxguard(8) does not describe %s --%s", c.name, f.Name)
			}
		})
	}
}

func TestCompletionBash(t *testing.T) {
	bash := requireTool(t, "bash", "bash")
	var script, errOut bytes.Buffer
	if code := runCompletion([]string{"bash"}, &script, &errOut); code != exitPass {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "mxguard.bash")
	writeFile(t, file, script.String())
	if out, err := exec.Command(bash, "-n", file).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	writeFile(t, filepath.Join(dir, "mxguard.yaml"), "")
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"mxguard", "ch"}, "check"},
		{[]string{"mxguard", "co"}, "completion"},
		{[]string{"mxguard", "check", "--con"}, "--concurrency --config"},
		{[]string{"mxguard", "audit", "--c"}, "--concurrency --config --csv"},
		{[]string{"mxguard", "sandbox", "--sp"}, "--spec"},
		{[]string{"mxguard", "completion", ""}, "bash zsh"},
		{[]string{"mxguard", "check", "--config", filepath.Join(dir, "mxguard.y")}, filepath.Join(dir, "mxguard.yaml")},
		{[]string{"mxguard", "check", "--resolver", "--"}, ""},
		{[]string{"mxguard", "version", "--"}, ""},
	} {
		words := make([]string, len(tc.words))
		for i, w := range tc.words {
			words[i] = "'" + w + "'"
		}
		prog := ". " + file + "; COMP_WORDS=(" + strings.Join(words, " ") + "); COMP_CWORD=" +
			string(rune('0'+len(words)-1)) + `; _mxguard; echo "${COMPREPLY[*]}"`
		out, err := exec.Command(bash, "--norc", "-c", prog).CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v\n%s", tc.words, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != tc.want {
			t.Errorf("completing %q: %q, want %q", tc.words, got, tc.want)
		}
	}
}

func TestCompletionZsh(t *testing.T) {
	zsh := requireTool(t, "zsh", "zsh")
	var script, errOut bytes.Buffer
	if code := runCompletion([]string{"zsh"}, &script, &errOut); code != exitPass {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	file := filepath.Join(t.TempDir(), "_mxguard")
	writeFile(t, file, script.String())
	if out, err := exec.Command(zsh, "-n", file).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v\n%s", err, out)
	}
	for _, c := range commandList() {
		if !strings.Contains(script.String(), "\t\t'"+c.name+":") {
			t.Errorf("the zsh completion does not offer %s", c.name)
		}
		c.flags.VisitAll(func(f *flag.Flag) {
			if !strings.Contains(script.String(), "--"+f.Name+"[") {
				t.Errorf("the zsh completion does not offer %s --%s", c.name, f.Name)
			}
		})
	}
}

func TestCompletionUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"fish"}, {"bash", "zsh"}} {
		var out, errOut bytes.Buffer
		if code := runCompletion(args, &out, &errOut); code != exitUsage || out.Len() > 0 {
			t.Errorf("completion %q: exit %d, output %q; want 64 and nothing", args, code, out.String())
		}
	}
}

func TestManUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"1"}, {"8", "5"}} {
		var out, errOut bytes.Buffer
		if code := runMan(args, &out, &errOut); code != exitUsage || out.Len() > 0 {
			t.Errorf("man %q: exit %d, output %q; want 64 and nothing", args, code, out.String())
		}
	}
}
