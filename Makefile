# mock-kind — the two commands a user needs are `make sandbox` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# The real Kubernetes binaries: KUBE_BIN_DIR if set, else built once from Debian's source
# package and cached (see e2e/scripts/kube-bins.sh).
KUBE_BINS = KUBE_BIN_DIR="$$(bash e2e/scripts/kube-bins.sh)"

# A clean build's target/ takes about 2.5 GB (test binaries carry line tables of our crates only)
# and a first Kubernetes build about 1.5 GB more; say so up front rather than as a linker crash.
DISK_CHECK = avail=$$(df -Pk . | awk 'NR==2 {print $$4}'); \
	if [ "$${avail:-0}" -lt 4194304 ]; then \
	  echo "warning: $$((avail / 1024)) MB free under $$(pwd); a clean build and test needs about 4 GB" >&2; \
	fi

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_.-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: kube-bins
kube-bins: ## Provide the Kubernetes control-plane binaries (cached; prints their directory)
	@bash e2e/scripts/kube-bins.sh

.PHONY: build
build: ## Build every service (release)
	$(CARGO) build --release --workspace --bins

.PHONY: test
test: ## Unit, integration and end-to-end tests on a real local control plane
	@$(DISK_CHECK)
	@dir=$$(bash e2e/scripts/kube-bins.sh); echo "kube binaries: $$dir"; \
	$(CARGO) build --workspace --bins; \
	KUBE_BIN_DIR="$$dir" $(CARGO) test --workspace --no-fail-fast

# cargo-deny, pinned; installed from crates.io on first use, so a machine with only the Rust
# toolchain can lint.
CARGO_DENY_VERSION := 0.20.2

.PHONY: lint
lint: cargo-deny ## cargo fmt --check, clippy with warnings as errors, cargo deny (licenses, bans, sources; offline)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) deny --offline --locked check --hide-inclusion-graph bans licenses sources

.PHONY: cargo-deny
cargo-deny: ## Install the pinned cargo-deny if it is missing or another version
	@if ! $(CARGO) deny --version 2>/dev/null | grep -qx 'cargo-deny $(CARGO_DENY_VERSION)'; then \
	  echo "installing cargo-deny $(CARGO_DENY_VERSION)"; \
	  $(CARGO) install --locked cargo-deny@$(CARGO_DENY_VERSION); \
	fi

.PHONY: bench
bench: ## Benchmarks: print the numbers behind the README's table
	@dir=$$(bash e2e/scripts/kube-bins.sh); \
	for b in "scheduler extender" "webhook admission" "webhook limit" "serving handshakes" "hollow-node scale"; do \
	  set -- $$b; echo "== $$1 / $$2"; \
	  KUBE_BIN_DIR="$$dir" $(CARGO) bench -p $$1 --bench $$2; \
	done

.PHONY: sandbox
sandbox: ## The whole system on a real local control plane (no Docker; PLACEMENT=extender|affinity); Ctrl-C stops it
	@dir=$$(bash e2e/scripts/kube-bins.sh); \
	$(CARGO) build --release -p scheduler -p webhook -p hollow-node -p e2e --bins; \
	KUBE_BIN_DIR="$$dir" ./target/release/mock-kind-sandbox $(if $(PLACEMENT),--placement $(PLACEMENT)) $(SANDBOX_ARGS)

-include deploy/deploy.mk
