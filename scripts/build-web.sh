#!/usr/bin/env bash
# Builds the web app's wasm into www/pkg/ (git-ignored), offline once the tools are installed:
#   cargo build --release --target wasm32-unknown-unknown  (the library; no CLI features; WebAssembly
#                                                           SIMD from .cargo/config.toml)
#   wasm-bindgen --target web                               (the exact version of the crate in Cargo.lock)
#   wasm-opt -Oz                                            (npm's binaryen; skipped when unavailable)
# Then `cargo run --release -- serve` serves www/ on http://127.0.0.1:8080.
# WASM_OPT=0 skips wasm-opt (npm's binaryen runs as wasm itself: about 4-5 minutes on 2 cores);
# the tests do, to stay inside CI's time, since it changes size and speed, not behaviour.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ld-target}"
OUT=www/pkg

rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

# wasm-bindgen-cli must be the same version as the wasm-bindgen library, or its output does not load.
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$have" != "$want" ]; then
  echo "installing wasm-bindgen-cli $want (about 2-4 minutes, once)"
  # Not --locked: one locked dependency is missing from the registry mirror (shared/toolchain.md).
  cargo install wasm-bindgen-cli --version "$want"
fi

start=$(date +%s)
cargo build --lib --release --target wasm32-unknown-unknown --no-default-features
echo "cargo build (wasm32, release): $(( $(date +%s) - start )) s"

wasm="$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/lifelong_diffusion.wasm"
tmp="$OUT.tmp"
rm -rf "$tmp"
start=$(date +%s)
wasm-bindgen --target web --no-typescript --out-dir "$tmp" "$wasm"

# Debian's binaryen (108) emits wasm that validates but crashes at start; use npm's (132).
tools=scripts/web-tools
if [ "${WASM_OPT:-1}" = 0 ]; then
  echo "WASM_OPT=0: skipping wasm-opt"
elif [ ! -x "$tools/node_modules/.bin/wasm-opt" ] && command -v npm >/dev/null; then
  (cd "$tools" && npm ci --no-audit --no-fund --loglevel=error) || echo "npm ci in $tools failed; skipping wasm-opt"
fi
if [ "${WASM_OPT:-1}" = 0 ]; then
  :
elif [ -x "$tools/node_modules/.bin/wasm-opt" ]; then
  bg="$tmp/lifelong_diffusion_bg.wasm"
  "$tools/node_modules/.bin/wasm-opt" -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue --enable-simd \
    "$bg" -o "$bg.opt" && mv "$bg.opt" "$bg"
else
  echo "wasm-opt not available: the wasm stays unoptimised (larger, same behaviour)"
fi

echo "wasm-bindgen + wasm-opt: $(( $(date +%s) - start )) s"

# Swap in the new build whole, so a server never sees half of it.
rm -rf "$OUT"
mv "$tmp" "$OUT"
ls -l "$OUT"
