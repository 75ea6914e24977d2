# Switchboard developer targets. `make verify` changes nothing; `make fix` rewrites.
CARGO ?= cargo
# Runs the tests with nextest when it is installed, else with cargo test.
TEST_RUNNER := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo nextest || echo test)

.PHONY: run test verify fix fmt clippy doc bench bench-core bench-raft bench-check

## Starts a local cluster with NATS and a demo (the node arrives with the replication issue).
run:
	@echo "switchboard: the node and 'make run' arrive with the replication and API issues;"
	@echo "today the deterministic core is built and tested: try 'make test' and 'make bench-core'."
	@exit 1

## Runs every test of the workspace.
test:
# Benchmarks are not tests: `bench-check` compiles and runs them once, optimised.
ifeq ($(TEST_RUNNER),nextest)
	$(CARGO) nextest run --workspace --lib --bins --tests --examples --no-fail-fast
	$(CARGO) test --workspace --doc
else
	$(CARGO) test --workspace --lib --bins --tests --examples --no-fail-fast
	$(CARGO) test --workspace --doc
endif

## Everything CI checks, without changing any file.
verify: fmt clippy doc test bench-check

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

## Benchmarks keep compiling and run once each, quickly.
bench-check:
	$(CARGO) bench --workspace -- --test

## Rewrites formatting and applies clippy's machine-applicable fixes.
fix:
	$(CARGO) fmt --all
	$(CARGO) clippy --workspace --all-targets --fix --allow-dirty --allow-staged -- -D warnings

## Full criterion benchmarks (minutes).
bench:
	$(CARGO) bench -p switchboard-core --bench apply

## One line per configuration: core apply throughput.
bench-core:
	$(CARGO) run --release -p switchboard-core --example bench_core

## One line per configuration: Raft commit throughput and latency on a 3-node loopback cluster.
bench-raft:
	$(CARGO) bench -p switchboard-raft --bench commit
