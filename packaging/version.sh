#!/bin/sh
# The package version: the release tag, or for an untagged commit
# 0.0~gitDATE.COMMIT (a Debian version must begin with a digit).
set -e
if v=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
	echo "${v#v}" | sed 's/-/+/; s/-/./g'
else
	echo "0.0~git$(git log -1 --format=%cd --date=format:%Y%m%d).$(git rev-parse --short=12 HEAD)"
fi
