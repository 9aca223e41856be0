#!/bin/sh
# Memory: RSS per cached domain at 100k domains; a bounded cache under 1M distinct domains.
# Flags go to mxbench: sh bench/memory.sh -h lists them.
cd "$(dirname "$0")/.." && exec go run ./bench/mxbench memory "$@"
