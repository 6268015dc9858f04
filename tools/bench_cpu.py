"""Times 20 steps of the built-in model on the CPU: diffusers vs our CLI, same weights, same run.

Usage: python tools/bench_cpu.py [--model www/models/builtin] [--steps 20] [--repeats 3]
Prints one line per run and the ratio of medians (diffusers / ours). Generation time only (model
loading excluded on both sides); ours is read from the CLI's "N steps in S s" line.
"""
import argparse
import re
import statistics
import subprocess
import time

import torch
from diffusers import StableDiffusionPipeline

PROMPT = "a small red star on the left"


def time_diffusers(model, steps, repeats):
    pipe = StableDiffusionPipeline.from_pretrained(model, dtype=torch.float32, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        pipe(PROMPT, num_inference_steps=steps, guidance_scale=7.5, generator=torch.Generator().manual_seed(i))
        if i > 0:  # the first call warms up
            times.append(time.perf_counter() - start)
    return times


def time_ours(binary, model, steps, repeats):
    times = []
    for i in range(repeats + 1):
        out = subprocess.run(
            [binary, "generate", "--prompt", PROMPT, "--model", model, "--steps", str(steps), "--seed", str(i),
             "--backend", "cpu", "--out", "/tmp/ld-bench.png"],
            capture_output=True, text=True, check=True)
        seconds = float(re.search(r"steps in ([0-9.]+) s", out.stderr).group(1))
        if i > 0:
            times.append(seconds)
    return times


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="www/models/builtin")
    parser.add_argument("--binary", default="target/release/lifelong-diffusion")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    ours = time_ours(args.binary, args.model, args.steps, args.repeats)
    theirs = time_diffusers(args.model, args.steps, args.repeats)
    print(f"ours (cpu backend, burn-flex): {[round(t, 3) for t in ours]} s")
    print(f"diffusers (torch {torch.__version__}, cpu): {[round(t, 3) for t in theirs]} s")
    print(f"median ours {statistics.median(ours):.3f} s, diffusers {statistics.median(theirs):.3f} s, "
          f"ratio diffusers/ours {statistics.median(theirs) / statistics.median(ours):.2f}")


if __name__ == "__main__":
    main()
