#!/bin/sh
# Batch audit: mxguard check --file over 10k sandbox domains with --concurrency 256.
# Flags go to mxbench: sh bench/batch.sh -h lists them.
cd "$(dirname "$0")/.." && exec go run ./bench/mxbench batch "$@"
