#!/usr/bin/env bash
# Benchmarks the admission webhook of `vk-eci run` (release build, real processes): AdmissionReviews
# at a fixed rate over HTTPS; writes hack/results/bench-webhook-<RATE>.json.
#   hack/bench-webhook.sh [RATE]   (reviews per second, default 100; 30 s)
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-100}
cargo build --release --quiet --bin vk-eci --bin vk-eci-bench-webhook
mkdir -p hack/results
target/release/vk-eci-bench-webhook --rate "$rate" --vk-eci target/release/vk-eci | tee "hack/results/bench-webhook-${rate}.json"
