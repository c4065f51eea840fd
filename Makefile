# SPDX-License-Identifier: Apache-2.0
# byokd — build, test and run. `make help` lists the targets.
GO       ?= go
BIN      := bin
FUZZTIME ?= 10s
ROWS     ?= 1000000
CMDS     := byokd byokd-dev byokctl kpemu
BUF      := $(GO) tool -modfile=tools/buf/go.mod buf

.PHONY: wiredtiger systemd-rootfs help build build-s390x plugin package check-units test-packages test-s390x chaos crash load soak stress-wiredtiger test unit lint generate check-generate fuzz bench bench-wiredtiger run clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

build: ## build every command into bin/
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

build-s390x: ## cross-build every command for linux/s390x into bin/s390x/
	@mkdir -p $(BIN)/s390x
	CGO_ENABLED=0 GOOS=linux GOARCH=s390x $(GO) build -trimpath -o $(BIN)/s390x/ $(addprefix ./cmd/,$(CMDS))

# The packages whose tests run under qemu-user: not crypto/secmem (qemu-user
# neither applies madvise flags nor re-executes s390x binaries without
# binfmt), nor those that start byokd as a process.
S390X_PKGS := ./crypto/block ./crypto/datakey ./crypto/seal ./crypto/seal/cpacf ./crypto/seal/tpm ./agent/lock ./agent/config \
	./agent/wdek ./agent/keyprotect ./agent/server ./kpemu

test-s390x: ## unit tests for GOARCH=s390x under qemu-s390x-static (big-endian)
	GOARCH=s390x $(GO) test -count=1 -exec qemu-s390x-static $(S390X_PKGS)

package: ## .deb and .rpm for amd64 and s390x into dist/ (version from git)
	scripts/package

check-units: ## systemd-analyze verify and security (exposure at most 1.5) of the units
	scripts/check-units

test-packages: ## lint, inspect, install, upgrade, remove and purge the packages (root; changes this machine)
	scripts/test-packages

plugin: ## the WiredTiger encryptor: bin/libbyokd-wiredtiger.so
	@mkdir -p $(BIN)
	$(GO) build -trimpath -buildmode=c-shared -o $(BIN)/libbyokd-wiredtiger.so ./plugin/wiredtiger

# WiredTiger 11.2 and 11.3 from ../shared/wiredtiger, built once per input
# (scripts/wiredtiger caches them) before the tests that use them, so that a
# cold build is not timed as a test.
WT_LINES := 11.2 11.3

wiredtiger: ## build (or find in the cache) the WiredTiger lines the plugin's tests run against
	@for l in $(WT_LINES); do scripts/wiredtiger $$l >/dev/null || exit 1; done

test: lint unit test-s390x fuzz check-units test-packages ## what CI runs: lint, tests, short fuzzing, units, packages

systemd-rootfs: ## build (or find in the cache) the root file system of the systemd container the systest suite boots
	@scripts/systemd-rootfs >/dev/null

unit: wiredtiger systemd-rootfs ## all tests, with the race detector (systest/ boots a real systemd in a container)
	$(GO) test -race -count=1 -timeout 30m ./...

lint: check-generate ## gofmt, go vet, staticcheck and buf lint must be clean; generated code current
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

generate: ## regenerate the protobuf code (buf and the plugins are pinned Go tools)
	$(BUF) lint
	$(BUF) generate

check-generate: generate ## fail when the committed generated code is stale
	@git diff --exit-code -- proto/ || { echo "generated code is stale: run make generate and commit"; exit 1; }

fuzz: ## run every Fuzz target for FUZZTIME (default 10s) each
	FUZZTIME=$(FUZZTIME) GO=$(GO) scripts/fuzz

chaos: ## the chaos test, long form: 30 s per phase (CI runs 4 s)
	CHAOS_SECONDS=30 $(GO) test -count=1 -run '^TestChaos$$' -v ./e2e

crash: ## kill -9 during provisioning and rewrap, long form: 200 runs each (CI runs 20)
	CRASH_RUNS=200 $(GO) test -count=1 -timeout 60m -run '^TestKillDuring' -v ./e2e

load: ## 64 clients, 1,000,000 GetDataKey calls: p50, p99, errors (CI runs 100,000)
	LOAD_CALLS=1000000 $(GO) test -count=1 -timeout 30m -run '^TestLoad$$' -v ./e2e

stress-wiredtiger: ## WiredTiger 11.3's test/format with the byokd encryptor, long form: 10 runs and 10 abort/recovery runs (CI runs 1 each)
	FORMAT_RUNS=10 $(GO) test -count=1 -timeout 60m -run '^TestWiredTigerFormat$$' -v ./e2e

soak: ## 10 minutes of load: goroutines and RSS must stay flat (CI runs 20 s)
	SOAK_SECONDS=600 $(GO) test -count=1 -timeout 30m -run '^TestSoak$$' -v ./e2e

# ROWS, BENCH_DISABLES and FLEET_NODES pass through the environment;
# internal/cmd/benchreport -h lists its flags.
bench: ## every benchmark against a baseline from the same run, rewrites docs/BENCHMARKS.md (BENCH_QUICK=1: smoke into bin/)
	GO=$(GO) $(GO) run ./internal/cmd/benchreport

bench-wiredtiger: plugin ## 1,000,000 rows of 100 bytes: none, release, strict; writes docs/BENCHMARKS.md's table
	ROWS=$(ROWS) scripts/bench-wiredtiger

run: build ## bin/byokd-dev: byokd with an in-process Key Protect emulator and the memory sealer, everything in .dev/
	$(BIN)/byokd-dev --dev-dir .dev

clean: ## remove build output and the dev folder
	rm -rf $(BIN) dist .dev
