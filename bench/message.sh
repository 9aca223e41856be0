#!/bin/sh
# The message checks through Postfix: mxguard with checks.message off and on, signed mail of 10 KB, 100 KB, 1 MB; needs root and postfix.
# Flags go to mxbench: sh bench/message.sh -h lists them.
cd "$(dirname "$0")/.." && exec go run ./bench/mxbench message "$@"
