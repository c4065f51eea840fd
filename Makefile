# byokd — build, test and run. `make help` lists the targets.
GO       ?= go
BIN      := bin
FUZZTIME ?= 10s
CMDS     := kpemu

.PHONY: help build test unit lint fuzz bench run clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

build: ## build every command into bin/
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

test: lint unit fuzz ## what CI runs: lint, unit and integration tests, short fuzzing

unit: ## all tests, with the race detector
	$(GO) test -race -count=1 ./...

lint: ## gofmt, go vet and staticcheck must be clean
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

fuzz: ## run every Fuzz target for FUZZTIME (default 10s) each
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' . | sort); do \
	  pkg=./$$(dirname $$f); \
	  for t in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' $$f | sed 's/^func //'); do \
	    echo "fuzz $$pkg $$t $(FUZZTIME)"; \
	    $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

bench: ## benchmarks, each reported against a baseline from the same run
	$(GO) test -run '^$$' -bench . -cpu 1 -benchtime 3s ./kpemu

run: build ## start the local Key Protect emulator for development (see README)
	@mkdir -p .dev
	$(BIN)/kpemu --addr 127.0.0.1:8787 --api-key dev-api-key \
	  --instance-id 00000000-0000-4000-8000-000000000de0 --state .dev/kpemu-state.json

clean: ## remove build output and the dev folder
	rm -rf $(BIN) dist .dev
