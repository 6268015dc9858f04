#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh Debian machine with the Rust toolchain:
# Mesa's lavapipe (a Vulkan CPU driver, so the wgpu backend runs without a GPU), Debian's Chromium
# (the browser tests; never a downloaded browser), Node.js/npm if missing, and the wasm32 target.
set -euo pipefail
missing=()
dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || missing+=(mesa-vulkan-drivers libvulkan1)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q "${missing[@]}"
fi
rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
