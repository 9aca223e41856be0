#!/bin/sh
# Cold path: 5 MX hosts, 4 silent; decision time against the greeting timeout, and decision_timeout.
# Flags go to mxbench: sh bench/cold.sh -h lists them.
cd "$(dirname "$0")/.." && exec go run ./bench/mxbench cold "$@"
