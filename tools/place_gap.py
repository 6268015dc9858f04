"""Does a model use the place words of its captions? For single-object training scenes of each place,
the denoising loss with the true caption against the same caption with the opposite place word
("at the top" -> "at the bottom", "on the left" -> "on the right"), same noise, same timesteps. A
model that reads the word has a clearly lower loss with the true caption; equal losses mean it draws
that place at random (what `eval world`'s per-phrase line then shows as about half right).
Then the same for two-object scenes of each relation: "A above B" against "B above A" (the order
of the objects, which is what the relation binds).

    python tools/place_gap.py --model www/models/builtin [--n 48] [--data DIR --latents LAT.npy]
"""
import argparse
import json
from pathlib import Path

import numpy as np

from common import CACHE, CONTEXT, EXPORT_DIR, setup_torch

torch = setup_torch()
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: E402

OPPOSITE = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}


def scenes_by_place(data, n):
    """Up to N (scene index, caption ending with the place word) per place, in file order."""
    by = {p: [] for p in OPPOSITE}
    with open(Path(data) / "scenes.jsonl") as f:
        for line in f:
            row = json.loads(line)
            layout = row["scene"]["layout"]
            place = layout.get("place")
            if layout["kind"] != "single" or place not in by or len(by[place]) >= n:
                continue
            caption = next((c for c in row["captions"] if c.endswith(" " + place)), None)
            if caption:
                by[place].append((row["index"], caption))
            if all(len(v) >= n for v in by.values()):
                break
    return by


RELATIONS = {"above": "above", "below": "below", "left_of": "to the left of", "right_of": "to the right of"}


def phrase(obj):
    article = "an" if obj["color"][0] in "aeiou" else "a"
    return f"{article} {obj['color']} {obj['shape']}"


def scenes_by_relation(data, n):
    """Up to N (scene index, "A rel B", "B rel A") per relation, from two-object scenes of two different
    objects, in file order."""
    by = {r: [] for r in RELATIONS}
    with open(Path(data) / "scenes.jsonl") as f:
        for line in f:
            row = json.loads(line)
            scene = row["scene"]
            relation = scene["layout"].get("relation")
            if scene["layout"]["kind"] != "pair" or relation not in by or len(by[relation]) >= n:
                continue
            a, b = (phrase(o) for o in scene["objects"])
            if a != b:
                words = RELATIONS[relation]
                by[relation].append((row["index"], f"{a} {words} {b}", f"{b} {words} {a}"))
            if all(len(v) >= n for v in by.values()):
                break
    return by


@torch.no_grad()
def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(EXPORT_DIR))
    p.add_argument("--data", default=str(CACHE / "world-train-seed20251126-n60000"))
    p.add_argument("--latents", default=str(CACHE / "latents-seed20251126-n60000.npy"))
    p.add_argument("--n", type=int, default=48)
    a = p.parse_args()
    tok = CLIPTokenizer.from_pretrained(Path(a.model) / "tokenizer")
    te = CLIPTextModel.from_pretrained(Path(a.model) / "text_encoder").float().eval()
    unet = UNet2DConditionModel.from_pretrained(Path(a.model) / "unet").float().eval()
    scale = AutoencoderKL.load_config(Path(a.model) / "vae")["scaling_factor"]
    latents = np.load(a.latents, mmap_mode="r")
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    gen = torch.Generator().manual_seed(0)

    def loss(xt, t, noise, captions):
        ids = tok(captions, padding="max_length", max_length=CONTEXT, return_tensors="pt").input_ids
        pred = unet(xt, t, encoder_hidden_states=te(ids).last_hidden_state).sample
        return ((pred - noise) ** 2).mean().item()

    def compare(label, indices, true, other):
        x0 = torch.from_numpy(np.array(latents[indices], dtype=np.float32)) * scale
        for t in (500, 800):
            noise = torch.randn(x0.shape, generator=gen)
            tt = torch.full((len(indices),), t)
            xt = sched.add_noise(x0, noise, tt)
            lt, lo = loss(xt, tt, noise, true), loss(xt, tt, noise, other)
            print(f"{label:<9} {t:<4} {lt:<19.5f} {lo:<21.5f} {lo / lt:.2f}")

    print("place     t    loss(true caption)  loss(opposite place)  ratio")
    for place, items in scenes_by_place(a.data, a.n).items():
        true = [c for _, c in items]
        compare(place, [i for i, _ in items], true, [c[: -len(place)] + OPPOSITE[place] for c in true])
    print("relation  t    loss(A rel B)       loss(B rel A)         ratio")
    for relation, items in scenes_by_relation(a.data, a.n).items():
        compare(relation, [i for i, _, _ in items], [c for _, c, _ in items], [c for _, _, c in items])


if __name__ == "__main__":
    main()
