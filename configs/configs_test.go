package configs

import (
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
)

// The shipped files run mxguard without privileges.
func TestSystemdUnitIsUnprivileged(t *testing.T) {
	unit, err := os.ReadFile("systemd/mxguard.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"User=mxguard", "Group=mxguard", "NoNewPrivileges=yes", "CapabilityBoundingSet=\n",
		"AmbientCapabilities=\n", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit lacks %q", strings.TrimSpace(want))
		}
	}
	if regexp.MustCompile(`(?m)^User=root`).Match(unit) {
		t.Error("the unit runs as root")
	}
}

func TestImageIsUnprivileged(t *testing.T) {
	df, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	users := regexp.MustCompile(`(?m)^USER\s+(\S+)`).FindAllStringSubmatch(string(df), -1)
	if len(users) == 0 || strings.HasPrefix(users[len(users)-1][1], "root") || strings.HasPrefix(users[len(users)-1][1], "0") {
		t.Errorf("the final image runs as %v", users)
	}
}

// By default nothing listens beyond loopback: the milter protocol has no
// authentication, and the metrics name what mail flows.
func TestDefaultsListenOnLoopback(t *testing.T) {
	for _, key := range []string{"listen: inet:", "  listen: "} {
		for _, line := range strings.Split(string(Default), "\n") {
			if !strings.HasPrefix(line, key) {
				continue
			}
			addr := strings.TrimPrefix(strings.TrimSpace(strings.TrimPrefix(line, "  listen:")), "inet:")
			host, _, err := net.SplitHostPort(addr)
			if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
				t.Errorf("default %q is not loopback", line)
			}
		}
	}
}

// The README's quick starts show the snippets the end-to-end tests run.
func TestReadmeShowsTheTestedSnippets(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for name, snippet := range map[string][]byte{"postfix/main.cf": PostfixMainCf, "sendmail/mxguard.mc": SendmailMc} {
		for _, line := range strings.Split(string(snippet), "\n") {
			if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "dnl") {
				continue
			}
			if !strings.Contains(string(readme), line) {
				t.Errorf("README lacks %s's line %q", name, line)
			}
		}
	}
}
