#!/usr/bin/env bash
# Benchmark: the Kubernetes API sandbox holding 10,000 pods with a watch open.
# Reports its memory (VmRSS, VmHWM) and the time to create, watch and list them; writes
# hack/results/bench-sandbox.json. Usage: hack/bench-sandbox.sh [COUNT] [CONCURRENCY]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
count=${1:-10000}
concurrency=${2:-32}
port=${BENCH_SANDBOX_PORT:-16499}

cargo build --release --quiet -p kube-sandbox --bin kube-sandbox --example fill_pods
./target/release/kube-sandbox --listen "127.0.0.1:$port" 2>/dev/null &
sandbox=$!
trap 'kill $sandbox 2>/dev/null' EXIT
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
idle_rss=$(awk '/VmRSS/ {print $2}' "/proc/$sandbox/status")
result=$(./target/release/examples/fill_pods "http://127.0.0.1:$port" "$count" "$concurrency")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$sandbox/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$sandbox/status")

mkdir -p hack/results
python3 - "$result" "$idle_rss" "$rss" "$hwm" >hack/results/bench-sandbox.json <<'PY'
import json, sys
result = json.loads(sys.argv[1])
idle, rss, hwm = (int(x) for x in sys.argv[2:5])
result.update({
    "sandbox_idle_rss_mib": round(idle / 1024, 1),
    "sandbox_rss_mib": round(rss / 1024, 1),
    "sandbox_peak_rss_mib": round(hwm / 1024, 1),
})
print(json.dumps(result, indent=2))
PY
cat hack/results/bench-sandbox.json
