#!/usr/bin/env bash
# Benchmark: the ECI simulator holding 10,000 container groups.
# Reports its memory (VmRSS, VmHWM) and the cost of creating and listing them, and writes the
# result to hack/results/bench-sim.json. Usage: hack/bench-sim.sh [COUNT] [CONCURRENCY]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
count=${1:-10000}
concurrency=${2:-32}
port=${BENCH_SIM_PORT:-18399}

cargo build --release --quiet --bin vk-eci -p vk-eci
cargo build --release --quiet -p eci-sim --example fill

config=$(mktemp)
cat >"$config" <<YAML
throttling:
  enabled: false
timing:
  schedule_ms: {min: 10, max: 50}
  start_ms: {min: 20, max: 100}
YAML

${SIM_ENV:-} ./target/release/vk-eci sim --listen "127.0.0.1:$port" --config "$config" 2>/dev/null &
sim=$!
trap 'kill $sim 2>/dev/null; rm -f "$config"' EXIT
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/_sim/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
idle_rss=$(awk '/VmRSS/ {print $2}' "/proc/$sim/status")

result=$(./target/release/examples/fill "http://127.0.0.1:$port" "$count" "$concurrency")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$sim/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$sim/status")

mkdir -p hack/results
python3 - "$result" "$idle_rss" "$rss" "$hwm" "$count" >hack/results/bench-sim.json <<'PY'
import json, sys
result = json.loads(sys.argv[1])
idle, rss, hwm, count = (int(x) for x in sys.argv[2:6])
result.update({
    "sim_idle_rss_mib": round(idle / 1024, 1),
    "sim_rss_mib": round(rss / 1024, 1),
    "sim_peak_rss_mib": round(hwm / 1024, 1),
    "kib_per_group": round((rss - idle) / count, 2),
})
print(json.dumps(result, indent=2))
PY
cat hack/results/bench-sim.json
