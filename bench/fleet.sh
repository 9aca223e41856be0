#!/bin/sh
# Fleet cache: 3 mxguards sharing one Redis against 3 without, the same 1,000 domains; needs redis-server.
# Flags go to mxbench: sh bench/fleet.sh -h lists them.
cd "$(dirname "$0")/.." && exec go run ./bench/mxbench fleet "$@"
