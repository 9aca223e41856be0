#!/bin/sh
# Writes the package's Debian changelog (Debian Policy 4.4) to stdout: one
# entry for the version being built, dated by its commit so that the same
# commit builds the same package. Usage: changelog.sh VERSION MAINTAINER
set -eu
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 VERSION MAINTAINER" >&2; exit 64; }
commit=$(git rev-parse --short=12 HEAD)
date=$(LC_ALL=C date -u -R -d "@$(git log -1 --format=%ct)")
cat <<END
mxguard ($1) unstable; urgency=medium

  * Built from commit $commit; what changed is in the project's history.

 -- $2  $date
END
