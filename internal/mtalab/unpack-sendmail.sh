#!/bin/sh
# Unpacks Debian's Sendmail into ROOT (default /opt/mxguard-sendmail) for
# the Sendmail lab. sendmail-bin conflicts with postfix as an installed
# package, so it is unpacked (dpkg -x), never installed; nothing outside
# ROOT changes.
set -eu
root=${1:-/opt/mxguard-sendmail}
if [ -x "$root/usr/libexec/sendmail/sendmail" ]; then
	exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp" # apt's download sandbox user writes there
cd "$tmp"
pkgs="sendmail-bin sendmail-cf sendmail-base m4 libwrap0"
apt-get download $pkgs || { apt-get update && apt-get download $pkgs; }
mkdir -p "$root"
for deb in *.deb; do
	dpkg -x "$deb" "$root"
done
echo "Sendmail unpacked in $root"
