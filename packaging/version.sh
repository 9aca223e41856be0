#!/bin/sh
# The package version from the nearest release tag vX.Y.Z[-PRE]:
#   on the tag          X.Y.Z        (or X.Y.Z~PRE: a pre-release sorts before its release)
#   N commits after it  X.Y.Z+N.gCOMMIT
#   no tag at all       0.0~gitDATE.COMMIT (a Debian version must begin with a digit)
set -e
if tag=$(git describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null); then
	v=$(echo "${tag#v}" | sed 's/-/~/')
	n=$(git rev-list --count "$tag..HEAD")
	[ "$n" -eq 0 ] || v="$v+$n.g$(git rev-parse --short=12 HEAD)"
	echo "$v"
else
	echo "0.0~git$(git log -1 --format=%cd --date=format:%Y%m%d).$(git rev-parse --short=12 HEAD)"
fi
