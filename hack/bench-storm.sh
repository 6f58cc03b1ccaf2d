#!/usr/bin/env bash
# Benchmarks a spot storm on `vk-eci run` (release build, real processes): a Deployment of N
# spot pods with a PodDisruptionBudget under a Surge SpotRotationPolicy, 20 % of them released
# at once with ECI's three minutes of warning; writes hack/results/bench-storm-<PODS>.json.
#   hack/bench-storm.sh [PODS]   (default 1000; about 5 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
pods=${1:-1000}
cargo build --release --quiet --bin vk-eci --bin vk-eci-bench-storm
mkdir -p hack/results
target/release/vk-eci-bench-storm --pods "$pods" --vk-eci target/release/vk-eci | tee "hack/results/bench-storm-${pods}.json"
