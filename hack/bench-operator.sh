#!/usr/bin/env bash
# Benchmarks `vk-eci run` (release build, real processes) with N pods on one virtual node
# against the simulator and the sandbox; writes hack/results/bench-operator-<PODS + PRELOADED>.json.
#   hack/bench-operator.sh [PODS [PRELOADED]]
# PODS are created as one Deployment (default 1000; 10000 takes about 10 minutes: ECI allows
# 20 creates/s); PRELOADED pods (default 0) already run when the operator starts, their groups
# made through the simulator's admin API. The file is named by the total.
set -euo pipefail
cd "$(dirname "$0")/.."
pods=${1:-1000}
preloaded=${2:-0}
cargo build --release --quiet --bin vk-eci --bin vk-eci-bench-operator
mkdir -p hack/results
# As the image runs it (hack/Dockerfile); GLIBC_TUNABLES= on the command line measures glibc's defaults.
export GLIBC_TUNABLES=${GLIBC_TUNABLES-glibc.malloc.mmap_threshold=131072:glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=131072}
target/release/vk-eci-bench-operator --pods "$pods" --preloaded "$preloaded" --vk-eci target/release/vk-eci \
  | tee "hack/results/bench-operator-$((pods + preloaded)).json"
