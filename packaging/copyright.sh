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
END
