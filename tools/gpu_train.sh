#!/usr/bin/env bash
# One GPU lease of training for the built-in model (tools/README.md, "On a GPU"): renders a fresh
# world with the Rust exporter, encodes it once with the shipped VAE, then trains the variants below
# side by side on the one GPU (each is launch-bound at this model size, so two share it well), each
# warm-started from www/models/builtin and ending with a learning-rate decay, all stopping at the
# lease's deadline; then exports each and measures its place/relation reading (place_gap.py).
#
#   OUT=/tmp/out tools/gpu_train.sh SECONDS      # SECONDS: wall time this may take in all
#
# Knobs: EXPORTER (the world exporter, default `lifelong-diffusion`), N (scenes, 250000), SEED
# (world seed, 20251128), DEVICE (cuda; cpu for a dry run), RESERVE (seconds kept after training
# for exports and measurements, 80), DECAY (minutes of decay at the end, 2), WORK (/tmp/ld-gpu).
# OUT receives, per variant V: V-unet.safetensors, V-te.safetensors, V.log; and loss.csv (all variants).
set -euo pipefail
budget=${1:?usage: OUT=DIR tools/gpu_train.sh SECONDS}
t0=$(date +%s)
: "${OUT:?set OUT to the folder for the results}"
EXPORTER=${EXPORTER:-lifelong-diffusion} N=${N:-250000} SEED=${SEED:-20251128} DEVICE=${DEVICE:-cuda}
RESERVE=${RESERVE:-80} DECAY=${DECAY:-2} WORK=${WORK:-/tmp/ld-gpu}
here=$(cd "$(dirname "$0")" && pwd)
model=$here/../www/models/builtin
mkdir -p "$WORK" "$OUT"

# The variants: both aim at what the shipped model does not read (tools/README.md: "at the top" /
# "at the bottom" and the order of the objects in a relation). A is the plan written after session 8;
# B presses harder (more of each batch, relations' "of" too, a higher rate).
declare -A VARIANTS=(
  [A]="--focus top,bottom,above,below --focus-share 0.3 --lr 8e-4"
  [B]="--focus top,bottom,above,below,of --focus-share 0.6 --lr 1e-3"
)

"$EXPORTER" world export --seed "$SEED" --n "$N" --out "$WORK/world" --split train
cd "$here"
# Encode once (train_unet.py would encode on its own when the cache is missing, once per variant).
python3 - "$WORK" "$model" "$DEVICE" <<'EOF'
import sys, torch
from common import WorldData
from train_unet import load_or_encode_latents
work, model, dev = sys.argv[1:]
load_or_encode_latents(f"{work}/latents.npy", WorldData(f"{work}/world"), f"{model}/vae", torch.device(dev))
EOF

stop=$((t0 + budget - RESERVE))
echo "training until $(date -d @$stop +%T) ($((stop - $(date +%s))) s from now)"
for v in "${!VARIANTS[@]}"; do
  # shellcheck disable=SC2086  # the variant's arguments are meant to split
  python3 train_unet.py --device "$DEVICE" --data "$WORK/world" --latents "$WORK/latents.npy" \
    --vae "$model/vae" --tokenizer "$model/tokenizer" --ckpt-dir "$WORK/ck-$v" --init-from "$model" \
    --export-to "$WORK/export-$v" --batch 512 --warmup 300 --decay-to 1e-6 --decay-minutes "$DECAY" \
    --stop-at "$stop" --ckpt-every 1000 --log-every 100 ${VARIANTS[$v]} > "$OUT/$v.log" 2>&1 &
done
fail=0
wait || fail=1
for v in "${!VARIANTS[@]}"; do
  [ -f "$WORK/export-$v/unet/diffusion_pytorch_model.safetensors" ] || { echo "variant $v made no export"; fail=1; continue; }
  cp "$WORK/export-$v/unet/diffusion_pytorch_model.safetensors" "$OUT/$v-unet.safetensors"
  cp "$WORK/export-$v/text_encoder/model.safetensors" "$OUT/$v-te.safetensors"
  sed "s/^/$v,/" "$WORK/ck-$v/loss.csv" >> "$OUT/loss.csv"
  python3 place_gap.py --model "$WORK/export-$v" --data "$WORK/world" --latents "$WORK/latents.npy" >> "$OUT/$v.log" 2>&1 &
done
wait || fail=1
echo "done in $(( $(date +%s) - t0 )) s"
exit $fail
