#!/usr/bin/env bash
# Benchmarks the kubelet API of `vk-eci run` (release build, real processes) with N pods on one
# virtual node against the simulator and the sandbox: metric refresh, ECI metric calls per
# minute, follow latency, RSS; writes hack/results/bench-kubelet-<PODS>.json.
#   hack/bench-kubelet.sh [PODS] [extra vk-eci-bench-kubelet flags]   (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
pods=${1:-1000}
shift || true
cargo build --release --quiet --bin vk-eci --bin vk-eci-bench-kubelet
mkdir -p hack/results
target/release/vk-eci-bench-kubelet --pods "$pods" --vk-eci target/release/vk-eci "$@" | tee "hack/results/bench-kubelet-${pods}.json"
