#!/bin/sh
# Warm-cache milter throughput: mxguard against a no-op go-milter, same client, same run.
# Flags go to mxbench: sh bench/milter.sh -h lists them.
cd "$(dirname "$0")/.." && exec go run ./bench/mxbench milter "$@"
