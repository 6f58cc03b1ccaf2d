#!/usr/bin/env bash
# Regenerates crds/ and the chart's copy from the Rust types (the crds_current test fails when
# either is stale).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --bin vk-eci -- crd --output-dir crds
cargo run --quiet --bin vk-eci -- crd --output-dir charts/vk-eci/crds
