#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh Debian machine with the Rust toolchain:
# Mesa's lavapipe (a Vulkan CPU driver, so the wgpu backend runs without a GPU) and the wasm32 target.
set -euo pipefail
if ! dpkg -s mesa-vulkan-drivers >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q mesa-vulkan-drivers libvulkan1
fi
rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
