package main

import "runtime/debug"

// version is set at release builds: go build -ldflags "-X main.version=1.2.3".
var version = ""

// buildVersion is the release version, or else the commit the binary was
// built from.
func buildVersion() string {
	if version != "" {
		return version
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "devel-" + s.Value[:12]
			}
		}
	}
	return "devel"
}
