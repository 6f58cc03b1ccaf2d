#!/usr/bin/env bash
# vk-eci end to end on this machine: builds, then starts the Kubernetes API sandbox, the ECI
# simulator and `vk-eci run` with its admission webhook, runs a pod labelled
# alibabacloud.com/eci=true on ECI, applies a spot Deployment and a SpotRotationPolicy, triggers a
# spot release and shows what happens. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin vk-eci --bin vk-eci-quickstart
exec target/release/vk-eci-quickstart --vk-eci target/release/vk-eci "$@"
