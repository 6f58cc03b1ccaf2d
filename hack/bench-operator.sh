#!/usr/bin/env bash
# Benchmarks `vk-eci run` (release build, real processes) with N pods on one virtual node
# against the simulator and the sandbox; writes hack/results/bench-operator-<PODS>.json.
#   hack/bench-operator.sh [PODS]   (default 1000; 10000 takes about 10 minutes: ECI allows 20 creates/s)
set -euo pipefail
cd "$(dirname "$0")/.."
pods=${1:-1000}
cargo build --release --quiet --bin vk-eci --bin vk-eci-bench-operator
mkdir -p hack/results
target/release/vk-eci-bench-operator --pods "$pods" --vk-eci target/release/vk-eci | tee "hack/results/bench-operator-${pods}.json"
