"""Exports the built-in model as a diffusers StableDiffusionPipeline folder (f16 safetensors) and writes
docs/training-log.md with a loss-curve PNG.

Called by train_unet.py with the EMA weights; standalone it exports a checkpoint's EMA weights:
    python tools/export_pipeline.py --ckpt ~/.cache/ld-train/unet/ckpt.pt --vae VAE_DIR --tokenizer TOK_DIR
"""
import argparse
import copy
import csv
import json
import platform
import shutil
import time
from pathlib import Path

from common import EXPORT_DIR, REPO, SCHEDULER, unet_config, vae_config  # noqa: F401

TOKENIZER_FILES = ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"]


def export(unet, te, tokenizer_dir, vae_dir, out=EXPORT_DIR, info=None):
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer
    out = Path(out)
    tmp = out.parent / (".%s-tmp" % out.name)
    old = out.parent / (".%s-old" % out.name)
    for d in (tmp, old):
        if d.exists():
            shutil.rmtree(d)
    vae = AutoencoderKL.from_pretrained(vae_dir)
    pipe = StableDiffusionPipeline(
        vae=vae.half(), text_encoder=copy.deepcopy(te).half().eval(), tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir),
        unet=copy.deepcopy(unet).half().eval(), scheduler=DDIMScheduler.from_config(SCHEDULER),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(tmp, safe_serialization=True)
    # The runtime reads this to treat prompts as the shapes world's (src/loader.rs, LoadedModel::world);
    # diffusers skips model_index.json keys with a leading underscore.
    index_path = tmp / "model_index.json"
    index = json.loads(index_path.read_text())
    index["_lifelong_diffusion"] = {"world": "shapes"}
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    tok_out = tmp / "tokenizer"
    shutil.rmtree(tok_out)
    tok_out.mkdir()
    for f in TOKENIZER_FILES:
        shutil.copy(Path(tokenizer_dir) / f, tok_out / f)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    if old.exists():
        shutil.rmtree(old)
    if info is not None:
        write_log(out, info)


def sizes(folder):
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(Path(folder).rglob("*.safetensors"))}


def plot_loss(rows, path, smooth=10):
    """A small log-scale loss curve with PIL (matplotlib is not in the pinned environment)."""
    import math
    from PIL import Image, ImageDraw
    W, H, L, B = 640, 300, 60, 30
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    if len(rows) < 2:
        img.save(path)
        return
    steps = [r[0] for r in rows]
    loss = [r[1] for r in rows]
    sm = [sum(loss[max(0, i - smooth + 1):i + 1]) / len(loss[max(0, i - smooth + 1):i + 1]) for i in range(len(loss))]
    lo, hi = math.log10(min(loss)), math.log10(max(loss))
    hi = max(hi, lo + 1e-3)
    X = lambda s: L + (W - L - 10) * (s - steps[0]) / max(1, steps[-1] - steps[0])
    Y = lambda v: 10 + (H - 10 - B) * (hi - math.log10(v)) / (hi - lo)
    d.rectangle([L, 10, W - 10, H - B], outline="black")
    d.line([(X(s), Y(v)) for s, v in zip(steps, loss)], fill=(170, 190, 230), width=1)
    d.line([(X(s), Y(v)) for s, v in zip(steps, sm)], fill=(20, 60, 200), width=2)
    for frac in (0, 0.5, 1):
        v = 10 ** (hi - frac * (hi - lo))
        d.text((4, Y(v) - 6), f"{v:.3f}", fill="black")
    d.text((L, H - B + 6), f"step {steps[0]}", fill="black")
    d.text((W - 110, H - B + 6), f"step {steps[-1]}", fill="black")
    d.text((L + 150, H - B + 6), "UNet+text encoder loss (eps MSE, log scale)", fill="black")
    img.save(path)


def write_log(folder, info):
    docs = REPO / "docs"
    docs.mkdir(exist_ok=True)
    rows = []
    if info.get("csv") and Path(info["csv"]).exists():
        with open(info["csv"]) as f:
            for r in csv.DictReader(f):
                rows.append((int(r["step"]), float(r["loss"]), float(r["trained_s"]), float(r["s_per_step"])))
    plot_loss(rows, docs / "training-loss.png")
    vae_cfg = json.loads((Path(folder) / "vae" / "config.json").read_text())
    stats_path = Path(info["args"]["vae"]) / "stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    sz = sizes(folder)
    recent = rows[-20:]
    a = info["args"]
    lines = [
        "# Training log of the built-in model",
        "",
        "Written by tools/export_pipeline.py at each export (see tools/README.md for the command).",
        "",
        f"- exported: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, from the EMA weights (decay {a['ema']})",
        f"- UNet + text encoder steps: {info['step']} (batch {a['batch']}, lr {a['lr']}, caption dropout {a['drop']}, min-SNR {a['min_snr']})",
        f"- training wall time (UNet + text encoder, summed over sessions): {info['trained_s']/3600:.2f} h on {platform.machine()} CPU, 2 threads",
        f"- speed, last logged windows: {sum(r[3] for r in recent)/max(1,len(recent)):.2f} s/step" if recent else "- speed: n/a",
        f"- loss (mean of the last {len(recent)} windows of 50 steps): {sum(r[1] for r in recent)/max(1,len(recent)):.4f}" if recent else "- loss: n/a",
        *[f"- {h}" for h in info.get("history", [])],
        f"- parameters: UNet {info['n_unet']/1e6:.2f}M, text encoder {info['n_te']/1e6:.2f}M",
        f"- VAE: scaling_factor {vae_cfg.get('scaling_factor'):.4f}; reconstruction MAE {stats.get('recon_mae_u8', float('nan')):.2f}/255 on {stats.get('n','?')} scenes",
        f"- weights on disk (f16): " + ", ".join(f"{k} {v/1e6:.2f} MB" for k, v in sz.items()) + f"; total {sum(sz.values())/1e6:.2f} MB",
        "",
        "![loss](training-loss.png)",
        "",
        "| step | loss (50-step mean) | trained h | s/step |",
        "|---|---|---|---|",
    ]
    pick = rows[:: max(1, len(rows) // 15)] if rows else []
    if rows and pick[-1] != rows[-1]:
        pick.append(rows[-1])
    for r in pick:
        lines.append(f"| {r[0]} | {r[1]:.4f} | {r[2]/3600:.2f} | {r[3]:.2f} |")
    (docs / "training-log.md").write_text("\n".join(lines) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--vae", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--out", default=str(EXPORT_DIR))
    p.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA")
    p.add_argument("--no-log", action="store_true", help="do not rewrite docs/training-log.md")
    a = p.parse_args()
    import torch
    from transformers import CLIPTokenizer
    from train_unet import build_models
    ck = torch.load(a.ckpt, weights_only=False)
    unet, te = build_models(CLIPTokenizer.from_pretrained(a.tokenizer))
    unet.load_state_dict(ck["unet"]); te.load_state_dict(ck["te"])
    if not a.raw:
        params = list(unet.parameters()) + list(te.parameters())
        with torch.no_grad():
            for q, s in zip(params, ck["ema"]):
                q.copy_(s)
    args = dict(ck["args"], vae=a.vae)
    export(unet, te, a.tokenizer, a.vae, a.out, info=None if a.no_log else {"step": ck["step"], "trained_s": ck["trained_s"], "args": args,
           "csv": str(Path(a.ckpt).parent / "loss.csv"), "n_unet": sum(q.numel() for q in unet.parameters()),
           "n_te": sum(q.numel() for q in te.parameters())})
    print(f"exported step {ck['step']} -> {a.out}")


if __name__ == "__main__":
    main()
