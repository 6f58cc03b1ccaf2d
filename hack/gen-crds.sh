#!/usr/bin/env bash
# Regenerates crds/ from the Rust types (the crds_current test fails when it is stale).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --bin vk-eci -- crd --output-dir crds
