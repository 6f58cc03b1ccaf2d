#!/usr/bin/env bash
# Benchmarks a spot storm on `vk-eci run` (release build, real processes): a Deployment of N
# spot pods with a PodDisruptionBudget under a Surge SpotRotationPolicy, 20 % of them released
# at once with ECI's three minutes of warning; writes hack/results/bench-storm-<PODS>[-VARIANT].json.
#   hack/bench-storm.sh [PODS] [VARIANT]   (default 1000; about 5 minutes)
# VARIANT: real-timing    replacements start in ECI's real 4-20 s (plus 1-4 s scheduling)
#          second-storm   another 20 % released 30 s after the first
#          create-errors  20 % of CreateContainerGroup calls fail during the storm
set -euo pipefail
cd "$(dirname "$0")/.."
pods=${1:-1000}
variant=${2:-}
case "$variant" in
  "") flags=(); suffix="" ;;
  real-timing) flags=(--real-timing); suffix="-$variant" ;;
  second-storm) flags=(--second-storm-after-seconds 30); suffix="-$variant" ;;
  create-errors) flags=(--create-error-rate 0.2); suffix="-$variant" ;;
  *) sed -n '2,8p' "$0" >&2; exit 2 ;;
esac
cargo build --release --quiet --bin vk-eci --bin vk-eci-bench-storm
mkdir -p hack/results
target/release/vk-eci-bench-storm --pods "$pods" --vk-eci target/release/vk-eci "${flags[@]}" |
  tee "hack/results/bench-storm-${pods}${suffix}.json"
