#!/bin/sh
# Installs the package that `make deb` built on this machine (as root), checks
# it, and removes and purges it again: nothing may be left behind.
set -eu
cd "$(dirname "$0")/.."
fail() { echo "test-deb: $*" >&2; exit 1; }

set -- dist/mxguard_*.deb
[ $# -eq 1 ] && [ -f "$1" ] || fail "want exactly one dist/mxguard_*.deb (make deb), have: $*"
deb=$1
if dpkg -s mxguard >/dev/null 2>&1; then
	fail "mxguard is installed already; this test installs and purges it"
fi
files=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { sub(/^\./, "", $6); print $6 }')

dpkg -i "$deb"
getent passwd mxguard >/dev/null || fail "no system user mxguard"
# The package's version is mxguard's and a Debian revision.
upstream=$(dpkg-deb -f "$deb" Version | sed 's/-[^-]*$//')
[ "$(/usr/bin/mxguard version)" = "mxguard $upstream" ] ||
	fail "mxguard version says $(/usr/bin/mxguard version), the package $(dpkg-deb -f "$deb" Version)"
[ "$(stat -c '%U:%G %a' /etc/mxguard/mxguard.yaml)" = "root:mxguard 640" ] ||
	fail "/etc/mxguard/mxguard.yaml is $(stat -c '%U:%G %a' /etc/mxguard/mxguard.yaml), want root:mxguard 640"
grep -qx /etc/mxguard/mxguard.yaml /var/lib/dpkg/info/mxguard.conffiles || fail "the configuration is not a conffile"
! pgrep -x mxguard >/dev/null || fail "installing started mxguard"
[ "$(grep -c '^  allow_users: \[postfix\]$' /etc/mxguard/mxguard.yaml)" = 2 ] ||
	fail "the packaged configuration does not let only postfix hold milter and policy sessions"
/usr/bin/mxguard validate --config /etc/mxguard/mxguard.yaml
# As the service runs it: the user must be able to read its configuration.
runuser -u mxguard -- /usr/bin/mxguard validate --config /etc/mxguard/mxguard.yaml
# The documentation Debian Policy asks for, and what the binary writes.
doc=/usr/share/doc/mxguard
head -1 $doc/copyright | grep -qx 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/' ||
	fail "$doc/copyright is not machine-readable (DEP-5)"
for l in third_party/go-milter/LICENSE third_party/spf/LICENSE third_party/go-msgauth/LICENSE; do
	grep -qF "$(grep -m1 'Redistribution and use\|Permission is hereby granted' $l)" $doc/copyright ||
		fail "$doc/copyright lacks the licence of $l"
done
grep -q "^Files: third_party/go-milter/\*$" $doc/copyright && grep -q "^Files: third_party/spf/\*$" $doc/copyright &&
	grep -q "^Files: third_party/go-msgauth/\*$" $doc/copyright ||
	fail "$doc/copyright does not name the vendored code"
# Every module the installed binary says it links, as go reads its build
# information; replaced ones are the vendored code above.
for m in $(go version -m /usr/bin/mxguard | awk '$1 == "dep" && $3 != "(devel)" && $4 != "" { print $2 }'); do
	grep -qxF "Files: $m/*" $doc/copyright || fail "$doc/copyright lacks the Go module $m that /usr/bin/mxguard links"
done
for f in postfix/main.cf:postfix-milter.cf postfix/opendkim.cf:postfix-opendkim.cf sendmail/opendkim.mc:sendmail-opendkim.mc opendkim/opendkim.conf:opendkim.conf; do
	cmp -s "configs/${f%%:*}" "$doc/examples/${f#*:}" || fail "$doc/examples/${f#*:} is not configs/${f%%:*}"
done
zcat $doc/changelog.Debian.gz | head -1 | grep -qF "mxguard ($(dpkg-deb -f "$deb" Version))" ||
	fail "$doc/changelog.Debian.gz is not for this version"
zcat /usr/share/man/man8/mxguard.8.gz | cmp -s - docs/man/mxguard.8 || fail "the packaged mxguard(8) is not docs/man/mxguard.8"
zcat /usr/share/man/man5/mxguard.yaml.5.gz | cmp -s - docs/man/mxguard.yaml.5 ||
	fail "the packaged mxguard.yaml(5) is not docs/man/mxguard.yaml.5"
man -w 8 mxguard >/dev/null && man -w 5 mxguard.yaml >/dev/null || fail "man does not find mxguard(8) and mxguard.yaml(5)"
/usr/bin/mxguard completion bash | cmp -s - /usr/share/bash-completion/completions/mxguard ||
	fail "the packaged bash completion is not what mxguard completion bash writes"
/usr/bin/mxguard completion zsh | cmp -s - /usr/share/zsh/vendor-completions/_mxguard ||
	fail "the packaged zsh completion is not what mxguard completion zsh writes"
[ "$(bash --norc -c '. /usr/share/bash-completion/completions/mxguard
	COMP_WORDS=(mxguard val); COMP_CWORD=1; _mxguard; echo "${COMPREPLY[*]}"')" = validate ] ||
	fail "the packaged bash completion does not complete mxguard val to validate"
# verify exits 0 on the directives it ignores; any word from it is a failure.
complaints=$(systemd-analyze verify /usr/lib/systemd/system/mxguard.service 2>&1) ||
	fail "systemd-analyze verify: $complaints"
[ -z "$complaints" ] || fail "systemd-analyze verify: $complaints"

# An upgrade (the same package again) keeps the operator's edits.
echo "# edited by the operator" >>/etc/mxguard/mxguard.yaml
dpkg -i "$deb"
grep -q "edited by the operator" /etc/mxguard/mxguard.yaml || fail "reinstalling overwrote the edited configuration"

dpkg -r mxguard
[ ! -e /usr/bin/mxguard ] || fail "dpkg -r left /usr/bin/mxguard"
[ -e /etc/mxguard/mxguard.yaml ] || fail "dpkg -r removed the configuration (only a purge should)"
dpkg -P mxguard
for f in $files /etc/mxguard /usr/share/doc/mxguard; do
	[ ! -e "$f" ] || fail "dpkg -P left $f"
done
! dpkg -s mxguard >/dev/null 2>&1 || fail "dpkg still knows mxguard after the purge"
echo "test-deb: $deb installs with its documentation, validates, verifies, keeps edits, removes and purges cleanly"
