#!/bin/sh
# Postfix end to end (smtp-source, discard transport): bare, no-op milter, mxguard; needs root and postfix.
# Flags go to mxbench: sh bench/postfix.sh -h lists them.
cd "$(dirname "$0")/.." && exec go run ./bench/mxbench postfix "$@"
