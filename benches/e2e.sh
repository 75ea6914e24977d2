#!/usr/bin/env bash
# End-to-end benchmark (`make bench-e2e`): nats-server + a 3-node cluster on this machine
# (`switchboard dev`), events published to NATS by `switchboard loadgen`, effects consumed
# from the effects stream. Prints the raw JetStream ceiling, then one `e2e:` line per offered
# rate and at saturation (rate 0). Release build; data in target/bench-e2e.
set -euo pipefail
cd "$(dirname "$0")/.."

rates="${BENCH_E2E_RATES:-1000 5000 20000 0}"
seconds="${BENCH_E2E_SECONDS:-10}"
python="$(bash tests/python/setup_env.sh | tail -n 1)"
export SWITCHBOARD_NATS_SERVER="$(dirname "$python")/nats-server"
cargo build --release -p switchboard >&2
sb=./target/release/switchboard
data=target/bench-e2e
base=7600
nats_port=4322
nodes="127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))"

"$sb" dev --fresh --data-dir "$data" --base-port "$base" --nats-port "$nats_port" >"$data.log" 2>&1 &
dev=$!
trap 'kill -TERM $dev 2>/dev/null || true; wait $dev 2>/dev/null || true' EXIT
for _ in $(seq 1 150); do
  if "$sb" ctl --nodes "$nodes" --timeout 1 status 2>/dev/null | grep -q leader; then break; fi
  sleep 0.2
done
"$sb" ctl --nodes "$nodes" status >&2

echo "machine: $(nproc) cores, $(uname -m); 3 nodes + nats-server 2.15 (sync_interval: always) on one host"
"$sb" loadgen --nats "nats://127.0.0.1:$nats_port" --raw 100000
for rate in $rates; do
  "$sb" loadgen --nats "nats://127.0.0.1:$nats_port" --nodes "$nodes" --rate "$rate" --duration "$seconds"
done
