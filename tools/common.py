"""Shared helpers for the built-in model's training tools: paths, the dataset reader, model configs."""
import json
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("LD_TRAIN_DIR", Path.home() / ".cache" / "ld-train"))
EXPORT_DIR = REPO / "www" / "models" / "builtin"
CONTEXT = 77          # tokenizer model_max_length = text encoder max_position_embeddings
SPARE_TOKENS = 64     # extra token-embedding rows for concept tokens added at run time
SIZE = 64


def setup_torch(threads=2):
    import torch
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set by an earlier import of another tool module
        pass
    return torch


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


class WorldData:
    """A world export folder: images.u8 (N x 64 x 64 x 3 uint8, HWC RGB), scenes.jsonl, meta.json."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.n = int(self.meta["n"])
        size = int(self.meta.get("size", SIZE))
        self.images = np.memmap(self.folder / "images.u8", dtype=np.uint8, mode="r", shape=(self.n, size, size, 3))
        self.captions = [None] * self.n
        with open(self.folder / "scenes.jsonl") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    self.captions[row["index"]] = row["captions"]
        assert all(c for c in self.captions), "scenes.jsonl misses some indices"


def unet_config(vocab_hidden=128):
    return dict(
        sample_size=16, in_channels=4, out_channels=4,
        down_block_types=["CrossAttnDownBlock2D"] * 3,
        up_block_types=["CrossAttnUpBlock2D"] * 3,
        block_out_channels=[64, 128, 128], layers_per_block=1,
        attention_head_dim=[2, 4, 4],  # SD-1.x legacy meaning: head count (32 channels a head)
        cross_attention_dim=vocab_hidden, norm_num_groups=32,
    )


def vae_config():
    return dict(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=64,
        down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
        block_out_channels=[16, 32, 64], layers_per_block=1, norm_num_groups=16,
    )


def text_config(vocab_size, bos, eos, pad):
    return dict(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
        num_attention_heads=4, max_position_embeddings=CONTEXT, hidden_act="quick_gelu",
        projection_dim=128, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
    )


SCHEDULER = dict(
    _class_name="DDIMScheduler", num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
    beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    prediction_type="epsilon", timestep_spacing="leading",
)


def atomic_torch_save(obj, path):
    import torch
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
