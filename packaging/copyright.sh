#!/bin/sh
# Writes the package's machine-readable copyright file (DEP-5,
# https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/) to
# stdout, with the vendored code's licences read from their LICENSE files
# so that the two cannot differ.
set -eu
cd "$(dirname "$0")/.."

# A licence file as a DEP-5 field's continuation lines: without the blank
# lines around it, indented, an empty line as " .".
text() {
	sed -e '/[^[:space:]]/,$!d' "$1" | sed -e ':a' -e '/^[[:space:]]*$/{$d;N;ba' -e '}' |
		sed -e 's/[[:space:]]*$//' -e 's/^$/./' -e 's/^/ /'
}

cat <<'END'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: mxguard
Source: https://github.com/mxguard/mxguard

Files: *
Copyright: mxguard developers
License: Apache-2.0

Files: third_party/go-milter/*
Copyright: 2017 Bozhin Zafirov
Comment: github.com/emersion/go-milter, patched (third_party/go-milter/PATCHES.md).
License: BSD-2-clause
END
text third_party/go-milter/LICENSE
cat <<'END'

Files: third_party/spf/*
Copyright: 2016 Alberto Bertogli
Comment: blitiri.com.ar/go/spf, patched (third_party/spf/PATCHES.md).
License: Expat
END
text third_party/spf/LICENSE
cat <<'END'

Files: third_party/go-msgauth/*
Copyright: 2017 emersion
Comment: github.com/emersion/go-msgauth, patched (third_party/go-msgauth/PATCHES.md).
License: Expat
END
text third_party/go-msgauth/LICENSE

# The Go modules linked into /usr/bin/mxguard, and their licences. Each
# module's licence is named here, read from its LICENSE file: a module
# this table does not know stops the build until someone has read it.
licence() {
	case $1 in
	github.com/prometheus/* | github.com/redis/rueidis) echo Apache-2.0 ;;
	github.com/hashicorp/golang-lru/v2) echo MPL-2.0 ;;
	go.yaml.in/yaml/v3) echo "Expat and Apache-2.0" ;;
	github.com/miekg/dns | github.com/munnerz/goautoneg | golang.org/x/* | google.golang.org/protobuf) echo BSD-3-clause ;;
	github.com/beorn7/perks | github.com/cespare/xxhash/v2 | github.com/emersion/* | \
		github.com/mitchellh/colorstring | github.com/rivo/uniseg | github.com/schollz/progressbar/v3) echo Expat ;;
	*) return 1 ;;
	esac
}
main=$(go list -m)
go list -deps -f '{{with .Module}}{{if not .Replace}}{{.Path}} {{.Version}} {{.Dir}}{{end}}{{end}}' ./cmd/mxguard |
	sort -u | while read -r path version dir; do
	[ "$path" != "$main" ] || continue
	name=$(licence "$path") || { echo "copyright.sh: what licence has $path? Read $dir and add it" >&2; exit 1; }
	file=$(find "$dir" -maxdepth 1 -iname 'licen[cs]e*' | head -1)
	[ -n "$file" ] || { echo "copyright.sh: $path has no LICENSE file" >&2; exit 1; }
	holder=$(grep -m1 -h '^[[:space:]]*Copyright ' "$file" | grep -v 'yyyy' | sed -e 's/^[[:space:]]*Copyright //' -e 's/^([cC]) //' -e 's/[[:space:]]*$//') || true
	echo
	echo "Files: $path/*"
	echo "Copyright: ${holder:-the authors of $path}"
	echo "Comment: The Go module $path $version, linked into /usr/bin/mxguard."
	if [ -f "$dir/NOTICE" ]; then
		echo " Its NOTICE:"
		text "$dir/NOTICE"
	fi
	echo "License: $name"
	case $name in
	Apache-2.0 | MPL-2.0) ;; # the standalone paragraphs below
	*) text "$file" ;;
	esac
done
goroot=$(go env GOROOT)
cat <<END

Files: go/*
Copyright: 2009 The Go Authors
Comment: The Go standard library and runtime ($(go env GOVERSION)), linked into /usr/bin/mxguard.
License: BSD-3-clause
END
text "$goroot/LICENSE"

cat <<'END'

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License");
 you may not use this file except in compliance with the License.
 You may obtain a copy of the License at
 .
     http://www.apache.org/licenses/LICENSE-2.0
 .
 Unless required by applicable law or agreed to in writing, software
 distributed under the License is distributed on an "AS IS" BASIS,
 WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
 See the License for the specific language governing permissions and
 limitations under the License.
 .
 On Debian systems, the complete text of the Apache License, Version 2.0
 can be found in "/usr/share/common-licenses/Apache-2.0".

License: MPL-2.0
 On Debian systems, the complete text of the Mozilla Public License,
 Version 2.0 can be found in "/usr/share/common-licenses/MPL-2.0".
END
