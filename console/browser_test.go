package console

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium finds Debian's headless browser.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	err := errors.New("no Chromium here (apt-get install chromium)")
	if os.Getenv("CI") != "" {
		t.Fatalf("%v; CI must provide it (.ci/run)", err)
	}
	t.Skip(err)
	return ""
}

// The support desk's round, in a real headless Chromium: sign in, find
// the failing domain, read its fix, check it again once the customer
// fixed it and see it pass, check any domain, sign out and be refused.
// A screenshot of each page is saved in the test's directory (and in
// MXGUARD_SCREENSHOTS, when set, for the README).
func TestConsoleInABrowser(t *testing.T) {
	exe := chromium(t)
	r := newRig(t, Options{}, 100)
	shots := t.TempDir()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe),
		chromedp.NoSandbox, // CI runs as root
		chromedp.WindowSize(1100, 760), chromedp.UserDataDir(t.TempDir()))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute) // a backstop: each step takes milliseconds
	defer cancelTimeout()
	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	read := func(what string, sel string) string {
		t.Helper()
		text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return text
	}
	location := func() string {
		t.Helper()
		loc, err := chromedp.Run(ctx, chromedp.Location())
		if err != nil {
			t.Fatal(err)
		}
		return loc
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		for _, dir := range []string{shots, os.Getenv("MXGUARD_SCREENSHOTS")} {
			if dir != "" {
				if err := os.WriteFile(filepath.Join(dir, "console-"+name+".png"), png, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	var text string
	id := func(s string) chromedp.CSS { return chromedp.CSS("#" + s) }

	run("open the console", chromedp.Navigate(r.url+"/"), chromedp.WaitVisible(id("token")))
	if loc := location(); !strings.HasSuffix(loc, "/login") {
		t.Errorf("signed out, the console opens at %s", loc)
	}
	shot("login")
	run("a wrong token", chromedp.SendKeys(id("token"), "wrong"), chromedp.Click(id("signin")), chromedp.WaitVisible(id("login-error")))
	if text = read("the error", "#login-error"); !strings.Contains(text, "not the token") {
		t.Errorf("after a wrong token: %q", text)
	}
	run("sign in", chromedp.SetValue(id("token"), token), chromedp.Click(id("signin")), chromedp.WaitVisible(id("domains")))
	if text = read("the overview", "#domains"); !strings.Contains(text, "broken.test") || !strings.Contains(text, "mx.targets fail") {
		t.Errorf("the overview does not show the failing domain:\n%s", text)
	}
	shot("overview")

	run("open the failing domain", chromedp.Click(chromedp.CSS(`a[href="/domain/broken.test"]`)), chromedp.WaitVisible(id("report")))
	if text = read("the report", "#report"); !strings.Contains(text, "Fix:") || !strings.Contains(text, "mx.targets") {
		t.Errorf("the domain page shows no fix:\n%s", text)
	}
	if text = read("the reply", "#reply"); !strings.HasPrefix(text, "451 4.") {
		t.Errorf("the MTA's reply: %q", text)
	}
	shot("domain")

	// The customer publishes the address; the old answer lives 1 s in the
	// cache, so the desk checks again until the fix shows.
	r.sb.Zone.A("mx.broken.test", "127.0.1.1")
	deadline := time.Now().Add(30 * time.Second)
	for {
		// The page after the POST has a #verdict too: wait for the
		// navigation the click makes, then read the new page.
		if resp, err := chromedp.RunResponse(ctx, chromedp.Click(id("check-again"))); err != nil || resp.Status != 200 {
			t.Fatalf("check again: %v", err)
		}
		run("the page after check again", chromedp.WaitVisible(id("verdict")))
		if text = read("the verdict", "#verdict"); text == "pass" || time.Now().After(deadline) {
			break
		}
		run("wait for the cached answer to expire", chromedp.Sleep(250*time.Millisecond))
	}
	if text != "pass" {
		t.Fatalf("after the fix, check again says %q", text)
	}
	if text = read("the inventory's verdict", "#inventory-verdict"); text != "pass" {
		t.Errorf("the inventory still says %q after the check", text)
	}
	if text = read("the history", "#history"); !strings.Contains(text, "defer") || !strings.Contains(text, "pass") {
		t.Errorf("the history does not show defer then pass:\n%s", text)
	}
	shot("fixed")

	run("check any domain", chromedp.Navigate(r.url+"/check"), chromedp.WaitVisible(id("check-domain")),
		chromedp.SendKeys(id("check-domain"), "refused.test"), chromedp.Click(id("check-submit")), chromedp.WaitVisible(id("verdict")))
	if text = read("its verdict", "#verdict"); text != "defer" {
		t.Errorf("refused.test checked from the form: %q", text)
	}
	shot("check")

	run("a phone", chromedp.EmulateViewport(390, 844), chromedp.Navigate(r.url+"/"), chromedp.WaitVisible(id("domains")))
	width, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
	if err != nil || width > 390 {
		t.Errorf("on a 390 px phone the page is %d px wide (%v)", width, err)
	}
	shot("phone")

	run("sign out", chromedp.Click(id("logout")), chromedp.WaitVisible(id("signin")),
		chromedp.Navigate(r.url+"/"), chromedp.WaitVisible(id("signin")))
	if loc := location(); !strings.HasSuffix(loc, "/login") {
		t.Errorf("signed out, the console still opens at %s", loc)
	}
}
