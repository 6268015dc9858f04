"""Renders prompts with diffusers from an exported pipeline folder into one PNG grid (a sanity check).

    python tools/sample.py --model www/models/builtin --out /tmp/grid.png [--steps 20] [--scale 4] "a red circle" ...
"""
import argparse

from common import setup_torch

torch = setup_torch()
from diffusers import StableDiffusionPipeline  # noqa: E402
from PIL import Image  # noqa: E402

DEFAULT = ["a small red star on the left", "a large blue circle", "a yellow triangle to the left of a purple ring",
           "a green heart above a white square", "a large black cross on a sand background", "a pink diamond at the top",
           "an orange ring on a night background", "a brown square below a blue star"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("prompts", nargs="*")
    p.add_argument("--model", default="www/models/builtin")
    p.add_argument("--out", default="/tmp/grid.png")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int, default=3)
    a = p.parse_args()
    prompts = a.prompts or DEFAULT
    pipe = StableDiffusionPipeline.from_pretrained(a.model, torch_dtype=torch.float32, safety_checker=None)
    g = torch.Generator().manual_seed(a.seed)
    imgs = pipe(prompts, num_inference_steps=a.steps, guidance_scale=a.guidance, generator=g, height=64, width=64).images
    s = 64 * a.scale
    grid = Image.new("RGB", (s * len(imgs), s), "white")
    for i, im in enumerate(imgs):
        grid.paste(im.resize((s, s), Image.NEAREST), (i * s, 0))
    grid.save(a.out)
    for i, pr in enumerate(prompts):
        print(i, pr)


if __name__ == "__main__":
    main()
