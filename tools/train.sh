#!/usr/bin/env bash
# Trains the built-in model end to end, resuming whatever an earlier run left in $LD_TRAIN_DIR:
#   1. exports the world's train split with the Rust CLI (the single source of truth for data);
#   2. builds the CLIP BPE tokenizer from the world's vocabulary;
#   3. trains the VAE and encodes the dataset to latents once (cache);
#   4. trains text encoder + UNet jointly (AdamW, EMA, caption dropout), checkpointing to
#      $LD_TRAIN_DIR/unet/ckpt.pt and exporting the EMA pipeline to www/models/builtin/ as it goes.
# When the cache was lost but www/models/builtin/ exists, its tokenizer and VAE are reused (so the
# latent space and token ids stay the same) and the UNet/text encoder warm-start from its weights.
#
#   tools/train.sh                       # all defaults; extra arguments go to train_unet.py
#   N=200000 STEPS=300000 tools/train.sh --max-minutes 60
#   DEC_STEPS=3000 tools/train.sh        # also fine-tune the VAE decoder alone (latents unchanged)
#   CODEC_MIX=0.4                        # ... with 40% of its batches generic scenes (tools/codec_shapes.py)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/root/.cache/ld-venv/bin/python}
export LD_TRAIN_DIR=${LD_TRAIN_DIR:-$HOME/.cache/ld-train}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/ld-target}
N=${N:-60000}
SEED=${SEED:-20251126}
STEPS=${STEPS:-200000}
VAE_STEPS=${VAE_STEPS:-3000}
DEC_STEPS=${DEC_STEPS:-0}
C=$LD_TRAIN_DIR
DATA=$C/world-train-seed$SEED-n$N
BUILTIN=www/models/builtin
mkdir -p "$C"

if [ ! -f "$DATA/meta.json" ]; then
  echo "== exporting $N world scenes (seed $SEED) to $DATA"
  rm -rf "$DATA.tmp"
  cargo run --release --bin lifelong-diffusion -- world export --seed "$SEED" --n "$N" --out "$DATA.tmp" --split train
  mv "$DATA.tmp" "$DATA"
fi

if [ ! -f "$C/tokenizer/vocab.json" ]; then
  if [ -f "$BUILTIN/tokenizer/vocab.json" ]; then
    echo "== reusing the shipped tokenizer"; mkdir -p "$C/tokenizer"; cp "$BUILTIN"/tokenizer/* "$C/tokenizer/"
  else
    echo "== building the tokenizer"; "$PY" tools/build_tokenizer.py --meta "$DATA/meta.json" --out "$C/tokenizer"
  fi
fi

# tools/state/vae is the VAE the next UNet trains on, while it is newer than the shipped one (it replaces
# www/models/builtin/vae when a UNet trained on its latents ships); else the shipped VAE is reused.
STATE_VAE=tools/state/vae
if [ ! -f "$C/vae/config.json" ] && [ -f "$STATE_VAE/config.json" ]; then
  echo "== reusing the VAE in $STATE_VAE"; mkdir -p "$C/vae"; cp "$STATE_VAE"/* "$C/vae/"
elif [ ! -f "$C/vae/config.json" ] && [ -f "$BUILTIN/vae/config.json" ]; then
  echo "== reusing the shipped VAE"; mkdir -p "$C/vae"; cp "$BUILTIN"/vae/* "$C/vae/"
fi
echo "== VAE + latent cache"
"$PY" tools/train_vae.py --data "$DATA" --out "$C/vae" --latents "$C/latents-seed$SEED-n$N.npy" --steps "$VAE_STEPS" \
  --finetune-decoder "$DEC_STEPS" --codec-mix "${CODEC_MIX:-0}"

echo "== text encoder + UNet"
"$PY" tools/train_unet.py --data "$DATA" --latents "$C/latents-seed$SEED-n$N.npy" --vae "$C/vae" \
  --tokenizer "$C/tokenizer" --ckpt-dir "$C/unet" --init-from "$BUILTIN" --steps "$STEPS" "$@"
