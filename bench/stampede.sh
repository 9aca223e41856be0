#!/bin/sh
# Stampede: 500 concurrent transactions for one uncached domain; queries per (name, type), probes per address.
# Flags go to mxbench: sh bench/stampede.sh -h lists them.
cd "$(dirname "$0")/.." && exec go run ./bench/mxbench stampede "$@"
