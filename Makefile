# The README's commands, and the benchmarks.
.PHONY: run test bench deb test-deb

VERSION ?= $(shell sh packaging/version.sh)
# The Debian revision: the package is built from the project's own tree.
RELEASE ?= 1
MAINTAINER ?= mxguard developers <mxguard@localhost>
GOARCH ?= $(shell go env GOARCH)

run:
	go run ./cmd/mxguard serve

test:
	go test -race ./...

# Every benchmark side by side, one table (the Postfix one needs root and
# Debian's postfix package). See docs/BENCHMARKS.md.
bench:
	go test -run '^$$' -bench . -benchmem ./policy ./milter
	go run ./bench/mxbench all

# The Debian package, in dist/ (nfpm, pinned in packaging/go.mod).
deb:
	mkdir -p dist && rm -f dist/mxguard_*.deb
	CGO_ENABLED=0 GOARCH=$(GOARCH) go build -trimpath -ldflags="-s -w -X main.version=$(VERSION)" -o dist/mxguard ./cmd/mxguard
	# The packaged configuration is the default with only Postfix (the MTA
	# the package suggests first) allowed to hold milter and policy sessions.
	sed 's/^  allow_users: \[\]$$/  allow_users: [postfix]/' configs/mxguard.yaml >dist/mxguard.yaml
	test "$$(grep -c '^  allow_users: \[postfix\]$$' dist/mxguard.yaml)" = 2
	# Debian Policy 12.5, 12.7: the copyright file (DEP-5) and the changelog;
	# 12.1: manual pages. gzip -9n: no name, no time stamp, the same bytes on
	# every build.
	CGO_ENABLED=0 GOARCH=$(GOARCH) sh packaging/copyright.sh >dist/copyright
	sh packaging/changelog.sh "$(VERSION)-$(RELEASE)" "$(MAINTAINER)" | gzip -9n >dist/changelog.Debian.gz
	gzip -9n <docs/man/mxguard.8 >dist/mxguard.8.gz
	gzip -9n <docs/man/mxguard.yaml.5 >dist/mxguard.yaml.5.gz
	go run ./cmd/mxguard completion bash >dist/mxguard.bash
	go run ./cmd/mxguard completion zsh >dist/_mxguard
	VERSION=$(VERSION) RELEASE=$(RELEASE) MAINTAINER="$(MAINTAINER)" GOARCH=$(GOARCH) \
		go tool -modfile=packaging/go.mod nfpm package \
		--config packaging/nfpm.yaml --packager deb --target dist/

# Installs the package on this machine (root), checks it, purges it.
test-deb: deb
	sh packaging/test-deb.sh
