# The README's commands, and the benchmarks.
.PHONY: run test bench

run:
	go run ./cmd/mxguard serve

test:
	go test -race ./...

# Every benchmark side by side, one table (the Postfix one needs root and
# Debian's postfix package). See docs/BENCHMARKS.md.
bench:
	go test -run '^$$' -bench . -benchmem ./policy ./milter
	go run ./bench/mxbench all
