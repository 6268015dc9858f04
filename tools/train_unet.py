"""Trains the built-in model's text encoder (transformers CLIPTextModel) and UNet (diffusers
UNet2DConditionModel) jointly on cached VAE latents of the world, with AdamW, an EMA of both, and
classifier-free-guidance caption dropout. Checkpoints every few minutes to CKPT_DIR/ckpt.pt and resumes
from it automatically; logs the loss to CKPT_DIR/loss.csv; exports the EMA weights as a diffusers
pipeline (f16) to www/models/builtin every --export-every minutes and at the end.

    python tools/train_unet.py --data DIR --latents LAT.npy --vae VAE_DIR --tokenizer TOK_DIR \
        --ckpt-dir ~/.cache/ld-train/unet --steps 200000
"""
import argparse
import csv
import random
import time
from pathlib import Path

import numpy as np

from common import (CONTEXT, SCHEDULER, SPARE_TOKENS, WorldData, atomic_torch_save, log, setup_torch,
                    text_config, unet_config)

torch = setup_torch()
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

import export_pipeline  # noqa: E402


def build_models(tok):
    unet = UNet2DConditionModel(**unet_config())
    te_cfg = text_config(len(tok) + SPARE_TOKENS, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    te = CLIPTextModel(CLIPTextConfig(**te_cfg))
    return unet, te


def load_export_weights(unet, te, folder):
    """Warm start from an exported pipeline (when the checkpoint folder was lost)."""
    from safetensors.torch import load_file
    folder = Path(folder)
    u = load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")
    unet.load_state_dict({k: v.float() for k, v in u.items()})
    t = load_file(folder / "text_encoder" / "model.safetensors")
    # transformers 4 names CLIPTextModel's keys `text_model.*`, 5 names them bare: match the model's own.
    prefixed = any(k.startswith("text_model.") for k in te.state_dict())
    t = {k.removeprefix("text_model."): v.float() for k, v in t.items()}
    t = {("text_model." + k if prefixed else k): v for k, v in t.items()}
    missing, unexpected = te.load_state_dict(t, strict=False)
    assert not [m for m in missing if "position_ids" not in m] and not unexpected, (missing, unexpected)


class Ema:
    def __init__(self, modules):
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, step, max_decay):
        d = min(max_decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - d)

    @torch.no_grad()
    def swapped(self):
        """Context: model parameters temporarily replaced by the EMA ones."""
        ema = self

        class Swap:
            @torch.no_grad()
            def __enter__(self):
                self.saved = [p.detach().clone() for p in ema.params]
                for p, s in zip(ema.params, ema.shadow):
                    p.copy_(s)

            @torch.no_grad()
            def __exit__(self, *exc):
                for p, s in zip(ema.params, self.saved):
                    p.copy_(s)
        return Swap()


def tokenize_all(tok, data):
    """Every scene's captions as token ids, [N, captions per scene, CONTEXT] (scenes with fewer captions
    repeat their first), so that a training step tokenizes nothing."""
    k = max(len(c) for c in data.captions)
    flat = [c[i] if i < len(c) else c[0] for c in data.captions for i in range(k)]
    ids = tok(flat, padding="max_length", max_length=CONTEXT, truncation=True, return_tensors="np").input_ids
    return torch.from_numpy(ids.astype(np.int64)).view(data.n, k, CONTEXT)


def load_or_encode_latents(path, data, vae_dir, dev):
    """The cached latents at PATH, or, when missing, the world encoded with the VAE in VAE_DIR (cached)."""
    path = Path(path)
    if path.exists():
        return np.load(path)
    from train_vae import encode_all
    vae = AutoencoderKL.from_pretrained(vae_dir, torch_dtype=torch.float32).to(dev)
    lat, err = encode_all(vae, data, device=dev)
    log(f"encoded {data.n} scenes with {vae_dir} on {dev}; reconstruction MAE {err:.2f}/255")
    np.save(str(path) + ".tmp.npy", lat)
    Path(str(path) + ".tmp.npy").replace(path)
    return lat


def lr_at(a, step, step0, elapsed_s):
    """Warm-up over the first --warmup steps, then constant or (with --decay-to) a linear decay over
    this run: a low-lr phase at the end of training is what sharpens samples once the loss has
    flattened. The decay restarts with each run, so give a decay run one --max-minutes it finishes.
    With --decay-minutes the rate stays constant until that many minutes before the run's end
    (--stop-at or --max-minutes) and decays over them: one run holds both phases (a GPU lease)."""
    warm = min(1.0, (step + 1) / a.warmup)
    if a.decay_to is None:
        return a.lr * warm
    if a.decay_minutes:
        left_s = run_seconds(a) - elapsed_s
        progress = 1.0 - left_s / (a.decay_minutes * 60)
        return warm * (a.lr + (a.decay_to - a.lr) * min(1.0, max(0.0, progress)))
    progress = (step - step0) / max(1, a.steps - step0)
    if a.max_minutes:
        progress = max(progress, elapsed_s / (a.max_minutes * 60))
    return warm * (a.lr + (a.decay_to - a.lr) * min(1.0, progress))


def run_seconds(a):
    """How long this run trains: until --stop-at (unix seconds) when given, else --max-minutes."""
    if a.stop_at:
        return a.stop_at - a.started_at
    return a.max_minutes * 60 if a.max_minutes else float("inf")


def focus_pairs(data, words):
    """(scene, caption index) of every caption containing one of WORDS as a whole word: the pool a
    focused batch share is drawn from (for what the model has not learned, e.g. "top"/"bottom")."""
    want = set(words)
    pairs = [(i, j) for i, caps in enumerate(data.captions) for j, c in enumerate(caps) if want & set(c.split())]
    assert pairs, f"no caption contains any of {sorted(want)}"
    return torch.tensor(pairs, dtype=torch.int64)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="world export folder (captions)")
    p.add_argument("--latents", required=True, help="cached latents .npy from train_vae.py")
    p.add_argument("--vae", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--ckpt-dir", required=True)
    p.add_argument("--export-to", default=str(export_pipeline.EXPORT_DIR))
    p.add_argument("--init-from", default=None, help="exported pipeline to warm-start from when no checkpoint exists")
    p.add_argument("--steps", type=int, default=200000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--decay-to", type=float, default=None,
                   help="decay the lr linearly from --lr to this over the run (progress: steps toward --steps or "
                        "time toward --max-minutes, whichever is further); default: constant lr")
    p.add_argument("--drop", type=float, default=0.1, help="caption dropout for classifier-free guidance")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--min-snr", type=float, default=5.0)
    p.add_argument("--ckpt-every", type=float, default=8.0, help="minutes")
    p.add_argument("--export-every", type=float, default=20.0, help="minutes; first export after the first checkpoint")
    p.add_argument("--max-minutes", type=float, default=0, help="stop after this long (0: no limit)")
    p.add_argument("--stop-at", type=float, default=0, help="unix time at which to stop (a lease's end), overrides --max-minutes")
    p.add_argument("--decay-minutes", type=float, default=0, help="with --decay-to: decay over the run's last minutes only")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--focus", default="", help="comma-separated caption words (e.g. top,bottom): --focus-share of "
                   "each batch is drawn from the captions that contain one of them")
    p.add_argument("--focus-share", type=float, default=0.5)
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda: latents and captions live on the GPU, bf16 autocast)")
    a = p.parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    ckdir = Path(a.ckpt_dir)
    ckdir.mkdir(parents=True, exist_ok=True)
    data = WorldData(a.data)
    latents = torch.from_numpy(load_or_encode_latents(a.latents, data, a.vae, dev).astype(np.float32)).to(dev)
    assert latents.shape[0] == data.n, (latents.shape, data.n)
    scale = AutoencoderKL.load_config(a.vae)["scaling_factor"]
    tok = CLIPTokenizer.from_pretrained(a.tokenizer)
    assert tok.model_max_length == CONTEXT
    caption_ids = tokenize_all(tok, data).to(dev)
    focus = focus_pairs(data, a.focus.split(",")).to(dev) if a.focus else None
    n_focus = round(a.focus_share * a.batch) if focus is not None else 0
    if focus is not None:
        log(f"focus on {a.focus}: {len(focus)} captions, {n_focus} of each batch of {a.batch}")

    torch.manual_seed(a.seed)
    unet, te = build_models(tok)
    unet.to(dev); te.to(dev)
    n_unet = sum(q.numel() for q in unet.parameters())
    n_te = sum(q.numel() for q in te.parameters())
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), weight_decay=1e-2)
    sched = DDPMScheduler(**{k: v for k, v in SCHEDULER.items() if not k.startswith("_") and k not in ("set_alpha_to_one", "steps_offset")})
    alphas = sched.alphas_cumprod
    snr = (alphas / (1 - alphas)).to(dev)
    empty_ids = tok([""], padding="max_length", max_length=CONTEXT, return_tensors="pt").input_ids.to(dev)

    step, trained_s, rng = 0, 0.0, random.Random(a.seed)
    ck_path = ckdir / "ckpt.pt"
    ema = Ema([unet, te])
    if ck_path.exists():
        ck = torch.load(ck_path, weights_only=False, map_location=dev)
        unet.load_state_dict(ck["unet"]); te.load_state_dict(ck["te"]); opt.load_state_dict(ck["opt"])
        for s, v in zip(ema.shadow, ck["ema"]):
            s.copy_(v)
        step, trained_s = ck["step"], ck["trained_s"]
        rng.setstate(ck["py_rng"]); torch.set_rng_state(ck["torch_rng"].cpu())
        log(f"resumed from {ck_path} at step {step} ({trained_s/3600:.2f} h trained)")
    elif a.init_from and (Path(a.init_from) / "unet").exists():
        load_export_weights(unet, te, a.init_from)
        ema = Ema([unet, te])
        log(f"no checkpoint: warm start from {a.init_from} (fresh optimizer)")
    log(f"unet {n_unet/1e6:.2f}M params, text encoder {n_te/1e6:.2f}M params; data {data.n} scenes; scale {scale:.4f}")

    def save():
        atomic_torch_save({"unet": unet.state_dict(), "te": te.state_dict(), "opt": opt.state_dict(),
                           "ema": ema.shadow, "step": step, "trained_s": trained_s,
                           "py_rng": rng.getstate(), "torch_rng": torch.get_rng_state(), "args": vars(a)}, ck_path)
        log(f"checkpoint step {step} -> {ck_path}")

    def export():
        # docs/training-log.md describes the shipped weights: only an export into the shipped folder
        # rewrites it (a side run exporting elsewhere must not).
        ships = Path(a.export_to).resolve() == Path(export_pipeline.EXPORT_DIR).resolve()
        info = {"step": step, "trained_s": trained_s, "csv": str(ckdir / "loss.csv"),
                "args": vars(a), "n_unet": n_unet, "n_te": n_te}
        with ema.swapped():
            export_pipeline.export(unet, te, a.tokenizer, a.vae, a.export_to, info=info if ships else None)
        log(f"exported EMA pipeline at step {step} -> {a.export_to}")

    csv_path = ckdir / "loss.csv"
    new_csv = not csv_path.exists()
    csv_file = open(csv_path, "a", newline="")
    writer = csv.writer(csv_file)
    if new_csv:
        writer.writerow(["step", "loss", "trained_s", "s_per_step", "unix_time"])
    start, step0 = time.time(), step
    a.started_at = start
    last_ck, last_export = time.time(), None
    acc, acc_n, t_win = 0.0, 0, time.time()
    unet.train(); te.train()
    t_prev = time.time()
    while step < a.steps:
        # One batch drawn from the pre-tokenized captions (a random one of each scene's captions, or the
        # empty prompt with probability --drop for classifier-free guidance).
        g = torch.Generator().manual_seed(rng.getrandbits(62))
        idx = torch.randint(0, data.n, (a.batch,), generator=g).to(dev)
        which = torch.randint(0, caption_ids.shape[1], (a.batch,), generator=g).to(dev)
        drop = (torch.rand(a.batch, generator=g) < a.drop).to(dev)
        if n_focus:
            pick = focus[torch.randint(0, len(focus), (n_focus,), generator=g).to(dev)]
            idx[:n_focus], which[:n_focus] = pick[:, 0], pick[:, 1]
        ids = torch.where(drop[:, None], empty_ids, caption_ids[idx, which])
        x0 = latents[idx] * scale
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (a.batch,), generator=g).to(dev)
        xt = sched.add_noise(x0, noise, t)
        lr = lr_at(a, step, step0, time.time() - start)
        for g_ in opt.param_groups:
            g_["lr"] = lr
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            cond = te(ids).last_hidden_state
            pred = unet(xt, t, encoder_hidden_states=cond).sample
        w = (torch.clamp(snr[t], max=a.min_snr) / snr[t]) if a.min_snr > 0 else torch.ones(a.batch, device=dev)
        per = ((pred.float() - noise) ** 2).mean(dim=(1, 2, 3))
        loss = (per * w).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        ema.update(step, a.ema)
        # Step-to-step wall time: on a GPU the queue's back-pressure makes this the real step time.
        now = time.time()
        trained_s += now - t_prev
        t_prev = now
        acc += per.mean().detach(); acc_n += 1
        if step % a.log_every == 0:
            sps = (time.time() - t_win) / acc_n
            acc = float(acc)
            writer.writerow([step, f"{acc/acc_n:.5f}", f"{trained_s:.0f}", f"{sps:.3f}", f"{time.time():.0f}"])
            csv_file.flush()
            log(f"step {step} loss {acc/acc_n:.4f} lr {lr:.2e} {sps:.2f}s/step")
            acc, acc_n, t_win = 0.0, 0, time.time()
        if time.time() - last_ck > a.ckpt_every * 60:
            save(); last_ck = time.time()
            if last_export is None or time.time() - last_export > a.export_every * 60:
                export(); last_export = time.time()
        if time.time() - start > run_seconds(a):
            break
    save()
    export()


if __name__ == "__main__":
    main()
