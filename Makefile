# Switchboard developer targets. `make verify` changes nothing; `make fix` rewrites.
CARGO ?= cargo
# Runs the tests with nextest when it is installed, else with cargo test.
TEST_COMMAND := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo "nextest run" || echo test)

.PHONY: run test check-deploy verify fix fmt clippy doc fuzz nemesis bench bench-core bench-raft bench-scale bench-e2e bench-check

## Starts nats-server and a local 3-node cluster, and a demo that configures a workspace,
## publishes conversations through NATS and prints the effects from the effects stream.
run:
	SWITCHBOARD_NATS_SERVER="$$(dirname "$$(bash tests/python/setup_env.sh | tail -n 1)")/nats-server" && \
	export SWITCHBOARD_NATS_SERVER && \
	$(CARGO) run --release -p switchboard -- dev --fresh --demo

## Runs every test of the workspace. The Python client test needs grpcio-tools and the NATS
## tests nats-server 2.15: tests/python/setup_env.sh installs both into a venv (once; again
## when requirements.txt changes). The Prometheus test and check-deploy need Debian's
## prometheus package: tests/setup_prometheus.sh installs it (as root or with sudo); the
## replay report test Debian's chromium: tests/setup_chromium.sh installs it.
test:
# Benchmarks are not tests: `bench-check` compiles and runs them once, optimised.
	bash tests/setup_prometheus.sh
	SWITCHBOARD_CHROMIUM="$$(bash tests/setup_chromium.sh | tail -n 1)" && \
	SWITCHBOARD_PYTHON="$$(bash tests/python/setup_env.sh | tail -n 1)" && \
	SWITCHBOARD_NATS_SERVER="$$(dirname "$$SWITCHBOARD_PYTHON")/nats-server" && \
	export SWITCHBOARD_CHROMIUM SWITCHBOARD_PYTHON SWITCHBOARD_NATS_SERVER && \
	$(CARGO) $(TEST_COMMAND) --workspace --lib --bins --tests --examples --no-fail-fast
	$(CARGO) test --workspace --doc
	$(MAKE) check-deploy

## The files of deploy/ with real validators: promtool (check and unit-test the alert rules,
## check every dashboard expression), and deploy/check.sh for the container, Kubernetes,
## systemd, compose and NATS files. Needs Debian's `prometheus` package (promtool).
check-deploy:
	bash deploy/prometheus/check.sh
	bash deploy/grafana/check.sh
	bash deploy/check.sh

## The command-space fuzz, long and seeded: FUZZ_COMMANDS commands (default 10 million) from
## FUZZ_SEED (default: the clock). It prints the seed first and, on failure, a minimal failing
## history; `make test` runs a bounded slice of the same generators.
FUZZ_COMMANDS ?= 10000000
fuzz:
	SWITCHBOARD_FUZZ_COMMANDS=$(FUZZ_COMMANDS) $(if $(FUZZ_SEED),SWITCHBOARD_FUZZ_SEED=$(FUZZ_SEED)) \
	$(CARGO) test --release -p switchboard-core --test command_space -- --ignored --exact fuzz --nocapture

## The nemesis test, long: 3 (NEMESIS_NODES=5: 5) optimised `switchboard node` processes and a
## nats-server under NEMESIS_SECONDS (default 600) of seeded faults (NEMESIS_SEED, default: the
## clock), judged from the effects alone. Prints the verdict line; exits non-zero on any finding.
## `make test` runs a bounded slice (crates/switchboard/tests/nemesis.rs).
NEMESIS_SECONDS ?= 600
NEMESIS_NODES ?= 3
nemesis:
	$(CARGO) build --release -p switchboard -p switchboard-nemesis
	SWITCHBOARD_NATS_SERVER="$$(dirname "$$(bash tests/python/setup_env.sh | tail -n 1)")/nats-server" \
	SWITCHBOARD_BIN=target/release/switchboard \
	target/release/switchboard-nemesis --seconds $(NEMESIS_SECONDS) --nodes $(NEMESIS_NODES) $(if $(NEMESIS_SEED),--seed $(NEMESIS_SEED))

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

## At scale: 100,000 agents and 1,000,000 open conversations on a 3-node loopback cluster;
## load latency alone, then while every node snapshots and status is polled (minutes, ~6 GiB).
bench-scale:
	$(CARGO) bench -p switchboard-raft --bench scale

## End to end: nats-server + 3 nodes + loadgen; JetStream ceiling and e2e rate/latency lines.
bench-e2e:
	bash benches/e2e.sh
