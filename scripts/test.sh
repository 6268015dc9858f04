#!/usr/bin/env bash
# Every test: native tests on the cpu (burn-flex) and wgpu (lavapipe) backends, the web app's wasm
# build, then the browser tests (Debian's Chromium on SwiftShader, tests/browser, DEVELOPERS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# lavapipe runs headless; quiet the Vulkan loader's complaint about a missing runtime dir.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
# One shared target folder outside the clone, so repeated runs and CI reuse the build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ld-target}"
# Dev profile: dependencies are built with opt-level 3 (Cargo.toml), our crate with 1.
cargo test -- --test-threads=1
# The wasm32 build of the library, bound for the browser into www/pkg (wasm-bindgen). wasm-opt is
# skipped: it takes 4-5 minutes on 2 cores and changes size and speed, not behaviour.
WASM_OPT=0 bash scripts/build-web.sh
# Browser tests, served by the CLI that `cargo test` just built.
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
LD_BIN="$CARGO_TARGET_DIR/debug/lifelong-diffusion" npm --prefix tests/browser test
