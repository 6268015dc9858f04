"""Trains the built-in model's VAE (diffusers AutoencoderKL, 64x64x3 <-> 16x16x4), then encodes the whole
dataset to latents once (cache) and writes the latent scaling factor (1 / std of the latents) into
the VAE's config.

    python tools/train_vae.py --data DIR --out ~/.cache/ld-train/vae --steps 2000
Resumable: a finished VAE (OUT/config.json) is kept; a partial run resumes from OUT.ckpt.pt.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

import codec_shapes
from common import WorldData, atomic_torch_save, log, setup_torch, vae_config

torch = setup_torch()
from diffusers import AutoencoderKL  # noqa: E402


def to_tensor(batch_u8):
    return torch.from_numpy(np.ascontiguousarray(batch_u8)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def object_weights(x, object_weight):
    """Per-pixel loss weights: `object_weight` on pixels that differ from the background (the world fills
    the canvas with one colour, read at a corner), 1 elsewhere, normalised to mean 1 per image. Objects
    cover a few percent of a scene, so an unweighted loss learns the background and washes out small
    objects' colours (measured: 38% colour accuracy on reconstructions of the first VAE)."""
    bg = x[:, :, :1, :1]
    mask = ((x - bg).abs().sum(1, keepdim=True) > 0.1).float()
    w = 1 + (object_weight - 1) * mask
    return w / w.mean(dim=(2, 3), keepdim=True)


def recon_loss(rec, x, object_weight):
    """L1 + L2 per pixel, object pixels weighted (`object_weights`): the VAE's and the decoder's loss."""
    return (object_weights(x, object_weight) * ((rec - x).abs() + (rec - x) ** 2)).mean()


def cosine_factor(done, total):
    """The learning rate's factor after `done` of `total` steps: a cosine from 1 down to a tenth."""
    return 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * done / max(total, 1)))


def optimizer_step(opt, loss, params):
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def object_crops(x, crop, rng):
    """Random crops of `crop` px, each centred near a random object pixel when the image has one (a crop
    of plain background teaches nothing)."""
    bg = x[:, :, :1, :1]
    mask = (x - bg).abs().sum(1) > 0.1
    size = x.shape[-1]
    out = []
    for i in range(x.shape[0]):
        ys, xs = torch.nonzero(mask[i], as_tuple=True)
        if len(ys):
            k = int(rng.integers(len(ys)))
            cy, cx = int(ys[k]) + int(rng.integers(-crop // 4, crop // 4 + 1)), int(xs[k]) + int(rng.integers(-crop // 4, crop // 4 + 1))
        else:
            cy, cx = rng.integers(crop // 2, size - crop // 2 + 1, 2)
        oy = min(max(cy - crop // 2, 0), size - crop)
        ox = min(max(cx - crop // 2, 0), size - crop)
        out.append(x[i, :, oy:oy + crop, ox:ox + crop])
    return torch.stack(out)


def train(data, out, steps, batch, lr, seed, crop, crop_steps, full_batch, object_weight=10.0, kl_weight=1e-5):
    ckpt_path = Path(str(out) + ".ckpt.pt")
    torch.manual_seed(seed)
    vae = AutoencoderKL(**vae_config())
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    step, rng = 0, np.random.default_rng(seed)
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        vae.load_state_dict(ck["vae"]); opt.load_state_dict(ck["opt"]); step = ck["step"]; rng = ck["rng"]
        log(f"vae: resumed at step {step}")
    log(f"vae: {sum(p.numel() for p in vae.parameters())/1e6:.2f}M params")
    vae.train()
    t0, last_save = time.time(), time.time()
    while step < steps:
        full = step >= crop_steps  # crops first (cheap), then whole images (borders, exact colours)
        idx = np.sort(rng.choice(data.n, full_batch if full else batch, replace=False))
        x = to_tensor(data.images[idx])
        if not full and crop < x.shape[-1]:  # the VAE is convolutional: crops train it 4x cheaper
            x = object_crops(x, crop, rng)
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 100) * cosine_factor(step, steps)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        l_rec = recon_loss(rec, x, object_weight)
        l_kl = post.kl().mean() / (4 * 16 * 16)
        optimizer_step(opt, l_rec + kl_weight * l_kl, vae.parameters())
        step += 1
        if step % 100 == 0:
            log(f"vae step {step}/{steps} rec {l_rec.item():.4f} kl {l_kl.item():.3f} {(time.time()-t0)/100:.2f}s/step")
            t0 = time.time()
        if time.time() - last_save > 300 or step == steps:
            atomic_torch_save({"vae": vae.state_dict(), "opt": opt.state_dict(), "step": step, "rng": rng}, ckpt_path)
            last_save = time.time()
    return vae


def finetune_decoder(data, out, steps, batch, lr, seed, object_weight=10.0, codec_mix=0.0):
    """Trains only post_quant_conv + decoder of a finished VAE on whole images: the encoder, the latent
    space, the latent cache and the scaling factor stay as they are, so a UNet trained on them is
    unaffected. `codec_mix` of each batch are generic scenes (codec_shapes.py: random outlines,
    two-colour fills) so that the decoder carries what a lesson may teach. Resumable
    (OUT.dec.ckpt.pt); the total is recorded in OUT/stats.json."""
    out = Path(out)
    stats = json.loads((out / "stats.json").read_text()) if (out / "stats.json").exists() else {}
    done = stats.get("decoder_finetune_steps", 0)
    if done >= steps:
        log(f"decoder: already fine-tuned for {done} steps")
        return
    vae = AutoencoderKL.from_pretrained(out, torch_dtype=torch.float32)
    train_params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    for q in vae.parameters():
        q.requires_grad_(False)
    for q in train_params:
        q.requires_grad_(True)
    opt = torch.optim.AdamW(train_params, lr=lr, weight_decay=0.0)
    ck_path = Path(str(out) + ".dec.ckpt.pt")
    step, rng = done, np.random.default_rng(seed + 17)
    if ck_path.exists():
        ck = torch.load(ck_path, weights_only=False)
        vae.load_state_dict(ck["vae"]); opt.load_state_dict(ck["opt"]); step = ck["step"]; rng = ck["rng"]
        log(f"decoder: resumed at step {step}")
    vae.encoder.eval(); vae.decoder.train()
    t0, last_save, start = time.time(), time.time(), step
    while step < steps:
        # Decays over this call's steps (a resumed call restarts it at `lr`).
        for g in opt.param_groups:
            g["lr"] = lr * cosine_factor(step - start, steps - start)
        generic = int(round(codec_mix * batch))
        x = data.images[np.sort(rng.choice(data.n, batch - generic, replace=False))]
        x = to_tensor(np.concatenate([x, codec_shapes.batch(rng, generic)]) if generic else x)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean
        rec = vae.decode(z).sample
        loss = recon_loss(rec, x, object_weight)
        optimizer_step(opt, loss, train_params)
        step += 1
        if step % 100 == 0:
            log(f"decoder step {step}/{steps} rec {loss.item():.4f} {(time.time()-t0)/100:.2f}s/step")
            t0 = time.time()
        if time.time() - last_save > 300 or step == steps:
            atomic_torch_save({"vae": vae.state_dict(), "opt": opt.state_dict(), "step": step, "rng": rng}, ck_path)
            last_save = time.time()
    vae.save_pretrained(out)
    x = to_tensor(data.images[-256:])
    with torch.no_grad():
        err = ((vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1) - x).abs() * 127.5).mean().item()
    stats.update(decoder_finetune_steps=step, recon_mae_u8=err, decoder_codec_mix=codec_mix)
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    log(f"decoder: fine-tuned to step {step}; reconstruction MAE {err:.2f}/255")


@torch.no_grad()
def encode_all(vae, data, batch=256, device="cpu"):
    vae.eval()
    out = np.zeros((data.n, 4, 16, 16), np.float16)
    err = []
    for i in range(0, data.n, batch):
        x = to_tensor(data.images[i:i + batch]).to(device)
        post = vae.encode(x).latent_dist
        out[i:i + batch] = post.mean.cpu().numpy().astype(np.float16)
        if i < 2 * batch:
            rec = vae.decode(post.mean).sample.clamp(-1, 1)
            err.append(((rec - x).abs() * 127.5).mean().item())
        if (i // batch) % 40 == 0:
            log(f"encode {i}/{data.n}")
    return out, float(np.mean(err))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="folder for the trained VAE (diffusers layout)")
    p.add_argument("--latents", required=True, help="where to cache the encoded dataset (.npy)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--crop", type=int, default=32, help="train on random crops of this size first")
    p.add_argument("--crop-steps", type=int, default=2200, help="steps on object-centred crops; the rest on whole 64x64 images")
    p.add_argument("--full-batch", type=int, default=8, help="batch size on whole images")
    p.add_argument("--object-weight", type=float, default=10.0, help="loss weight of object pixels vs background")
    p.add_argument("--kl", type=float, default=1e-5, help="KL weight")
    p.add_argument("--finetune-decoder", type=int, default=0, metavar="STEPS",
                   help="then fine-tune the decoder alone to this many steps in total (latents unchanged)")
    p.add_argument("--codec-mix", type=float, default=0.0,
                   help="share of each decoder fine-tuning batch drawn from codec_shapes.py's generic scenes")
    p.add_argument("--decoder-lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    data = WorldData(a.data)
    out = Path(a.out)
    if (out / "config.json").exists():
        vae = AutoencoderKL.from_pretrained(out, torch_dtype=torch.float32)
        log("vae: already trained, loaded (its scaling_factor is kept)")
    else:
        vae = train(data, out, a.steps, a.batch, a.lr, a.seed, a.crop, a.crop_steps, a.full_batch, a.object_weight, a.kl)
    fresh = not (out / "config.json").exists()
    if fresh or not Path(a.latents).exists():
        lat, err = encode_all(vae, data)
        std = float(lat.astype(np.float32).std())
        if fresh:
            vae.register_to_config(scaling_factor=1.0 / std)
            vae.save_pretrained(out)
        np.save(str(a.latents) + ".tmp.npy", lat)
        Path(str(a.latents) + ".tmp.npy").replace(a.latents)
        (out / "stats.json").write_text(json.dumps({"latent_std": std, "latent_mean": float(lat.astype(np.float32).mean()),
                                                    "recon_mae_u8": err, "n": data.n}, indent=2))
        log(f"latents: std {std:.4f} -> scaling_factor {1/std:.4f}; reconstruction MAE {err:.2f}/255")
    if a.finetune_decoder:
        finetune_decoder(data, out, a.finetune_decoder, a.full_batch, a.decoder_lr, a.seed, a.object_weight, a.codec_mix)


if __name__ == "__main__":
    main()
