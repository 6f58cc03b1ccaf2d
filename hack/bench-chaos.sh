#!/usr/bin/env bash
# Benchmarks vk-eci's safety under chaos (release build, real processes): two `vk-eci run`
# replicas; a Deployment of spot pods under a Surge SpotRotationPolicy and api-evict spot pods
# with a PodDisruptionBudget, while seeded rounds SIGKILL the leader, slow the pod LIST, flap
# the API server, inject ECI errors and lost responses and release spot instances. Counts what
# must never happen (all 0) and the failover time; writes hack/results/bench-chaos-<PODS>.json.
#   hack/bench-chaos.sh [PODS] [extra flags, e.g. --chaos-seconds 120]   (default 500; ~8 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
pods=${1:-500}
shift || true
cargo build --release --quiet --bin vk-eci --bin vk-eci-bench-chaos
mkdir -p hack/results
target/release/vk-eci-bench-chaos --pods "$pods" --vk-eci target/release/vk-eci "$@" | tee "hack/results/bench-chaos-${pods}.json"
