#!/bin/sh
# Audit: mxguard audit --file over 100k sandbox domains on 1000 MX addresses, DNS +20ms.
# Flags go to mxbench: sh bench/audit.sh -h lists them.
cd "$(dirname "$0")/.." && exec go run ./bench/mxbench audit "$@"
