#!/usr/bin/env bash
# Every test: native tests on the cpu (burn-flex) and wgpu (lavapipe) backends, then the wasm32 build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# lavapipe runs headless; quiet the Vulkan loader's complaint about a missing runtime dir.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
# One shared target folder outside the clone, so repeated runs and CI reuse the build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ld-target}"
# Dev profile: dependencies are built with opt-level 3 (Cargo.toml), our crate with 1.
cargo test -- --test-threads=1
cargo build --lib --target wasm32-unknown-unknown --no-default-features
