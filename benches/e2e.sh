#!/usr/bin/env bash
# End-to-end benchmark (`make bench-e2e`): nats-server + a 3-node cluster on this machine
# (`switchboard dev`), events published to NATS by `switchboard loadgen`, effects consumed
# from the effects stream. Prints the raw JetStream ceilings (one message at a time and in
# atomic batches, publish alone and publish→consume), one `e2e:` line per offered rate and at
# saturation (rate 0) with one-at-a-time gateways, the same with batched gateways
# (`loadgen --batch`, BENCH_E2E_BATCH_RATES), then one `recovery:` line per fault (leader
# SIGKILL, NATS SIGKILL and restart). Release build; data in target/bench-e2e.
set -euo pipefail
cd "$(dirname "$0")/.."

rates="${BENCH_E2E_RATES:-1000 2000 5000 0}"
batch_rates="${BENCH_E2E_BATCH_RATES:-5000 10000 20000 0}"
batch="${BENCH_E2E_BATCH:-500}"
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
trap 'kill -TERM $dev 2>/dev/null || true; wait $dev 2>/dev/null || true; pkill -f "nats-server -c $data/nats.conf" || true' EXIT
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
for rate in $batch_rates; do
  "$sb" loadgen --nats "nats://127.0.0.1:$nats_port" --nodes "$nodes" --rate "$rate" --duration "$seconds" \
    --batch "$batch"
done

# Recovery: at 500 events/s, a fault 4 s into a 14 s run. `first_effect_after_ms` is from the
# fault (the leader's SIGKILL; NATS listening again after a SIGKILL and 1 s down) to the first
# decision after it; `longest_stall_ms` the longest time without any decision.
fault_file="$data.fault"
recover() {
  local kind="$1" fault="$2"
  rm -f "$fault_file"
  "$sb" loadgen --nats "nats://127.0.0.1:$nats_port" --nodes "$nodes" --rate 500 --duration 14 \
    --churn 0 --recovery "$kind" --fault-file "$fault_file" &
  local loadgen=$!
  sleep 4
  eval "$fault"
  date +%s%3N >"$fault_file"
  wait "$loadgen"
}
# The leader's pid, from `ctl status` and the pids `switchboard dev` printed.
leader_pid() {
  local id
  id="$("$sb" ctl --nodes "$nodes" status | awk '$3 == "leader" { print $1 }' | head -n 1)"
  sed -n "s/^  node$id  *pid \([0-9]*\).*/\1/p" "$data.log" | head -n 1
}
nats_back() {
  "$SWITCHBOARD_NATS_SERVER" -c "$data/nats.conf" >/dev/null 2>&1 &
  for _ in $(seq 1 200); do
    if (exec 3<>/dev/tcp/127.0.0.1/"$nats_port") 2>/dev/null; then return; fi
    sleep 0.02
  done
}
recover leader_kill 'kill -KILL "$(leader_pid)"'
nats_pid="$(pgrep -f "nats-server -c $data/nats.conf" | head -n 1)"
recover nats_restart 'kill -KILL "$nats_pid"; sleep 1; nats_back'
