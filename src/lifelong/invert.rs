//! Lesson targets that decode to the pictures. A lesson teaches the UNet to produce a picture's
//! latents, and what the user sees is the decoder's image of them; the encoder's latents are only
//! the encoder's guess at what decodes to the picture. For the built-in model's VAE (trained on
//! one-colour objects) the guess loses two-colour patterns: of 16 teaching pictures of `halves`
//! the scorer identified 8 after an encode-decode round trip, and 16 after decoding latents
//! refined by 10 Adam steps on the decoder's reconstruction error (session note of 2026-11-27,
//! issue 5). The refinement moves the latents little (mean squared change ~0.05 against a mean
//! square of 0.6-1.6), so they stay where the UNet was trained to go. Lessons now take 30 steps:
//! `halves` taught from latents refined 10, 20, 30 and 60 steps came out in 17, 22, 25 and 24 of
//! 48 probes (README, "Lessons", session 19): the closer the latents decode to the pictures, the
//! more of the concept's two colours the lesson's drawings keep.
//!
//! Refined always, though, the latents of pictures the VAE already carries cost the lesson: the
//! same eight-concept run taught arrow, hourglass and crescent worse from refined latents (50, 12
//! and 88% identified against 100, 88 and 100) while halves went from 12 to 62%. So a lesson
//! refines only when the round trip visibly loses its pictures: when more than
//! [`REFINE_FROM`] of their pixels come back more than [`FAR`] away. On the built-in model's
//! teaching pictures that share was 2.2-4.6% for halves (mean 3.5%) and 0.2-3.2% for the seven
//! flat concepts (means 0.8-1.7%). Since its decoder learnt two-colour fills (2026-11-28,
//! tools/codec_shapes.py) halves come back too (1.1% on the test's four pictures) and thin
//! stripes are what it still loses (4.2%).
//!
//! This is the decoder-side inversion of GAN inversion (optimising a code so the generator
//! reproduces an image; Zhu et al. 2016, "Generative Visual Manipulation", sec. 3.1), started from
//! the encoder's code as their hybrid method is.

use burn::prelude::*;

use crate::loader::LoadedModel;
use crate::pipeline::{decode_latents, encode_latents};

/// Share of the pictures' pixels (all pictures together) that must come back [`FAR`] off after
/// an encode-decode round trip for the refinement to run.
pub const REFINE_FROM: f32 = 0.025;
/// A pixel is far off when its RGB distance exceeds this, on the [0, 1] scale (40 of 255).
pub const FAR: f32 = 40.0 / 255.0;

/// Adam's step in scaled-latent units (the latents have unit-order spread); 0.05-0.1 converged
/// in 10-40 steps on the built-in VAE, 0.1 in the fewest.
const LR: f32 = 0.1;
const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const EPS: f32 = 1e-8;

/// The pictures' latents and whether they were refined.
#[derive(Debug, Clone)]
pub struct PictureLatents {
    pub latents: Tensor<4>,
    /// Share of the pixels the encoder's latents decode [`FAR`] off.
    pub far_share: f32,
    pub refined: bool,
}

/// The latents of `images` (`[n, 3, h, w]` in `[0, 1]`, on `model`'s autodiff device): the
/// encoder's, refined by `steps` Adam steps on the decoder's mean squared error to the images
/// when the round trip loses them (see [`REFINE_FROM`]). `steps == 0` skips the check too. The
/// model's weights are frozen: only the latents get gradients.
pub fn picture_latents(model: &LoadedModel, images: Tensor<4>, steps: usize) -> PictureLatents {
    let encoded = encode_latents(model, images.clone()).detach();
    if steps == 0 {
        return PictureLatents { latents: encoded, far_share: 0.0, refined: false };
    }
    let target = images.mul_scalar(2.0).sub_scalar(1.0);
    let far_share = far_share(decode_latents(model, encoded.clone()).detach(), target.clone());
    if far_share <= REFINE_FROM {
        return PictureLatents { latents: encoded, far_share, refined: false };
    }
    PictureLatents { latents: refine(model, encoded, target, steps), far_share, refined: true }
}

/// Share of pixels of `decoded` (in [-1, 1], clamped here) farther than [`FAR`] from `target`.
fn far_share(decoded: Tensor<4>, target: Tensor<4>) -> f32 {
    // RGB distance on the [0, 1] scale: half the distance on [-1, 1].
    let distance = (decoded.clamp(-1.0, 1.0) - target).powf_scalar(2.0).sum_dim(1).sqrt().div_scalar(2.0);
    distance.greater_elem(FAR).float().mean().into_scalar::<f32>()
}

fn refine(model: &LoadedModel, encoded: Tensor<4>, target: Tensor<4>, steps: usize) -> Tensor<4> {
    let mut z = encoded.clone().require_grad();
    let (mut m, mut v) = (encoded.zeros_like(), encoded.zeros_like());
    for step in 1..=steps {
        let loss = (decode_latents(model, z.clone()) - target.clone()).powf_scalar(2.0).mean();
        let Some(grad) = z.grad(&loss.backward()) else { return encoded };
        // The gradient comes back off the autodiff graph; bring it onto z's device as data.
        let g = Tensor::<4>::from_data(grad.to_data(), &z.device());
        m = m.mul_scalar(BETA1) + g.clone().mul_scalar(1.0 - BETA1);
        v = v.mul_scalar(BETA2) + g.powf_scalar(2.0).mul_scalar(1.0 - BETA2);
        let m_hat = m.clone().div_scalar(1.0 - BETA1.powi(step as i32));
        let v_hat = v.clone().div_scalar(1.0 - BETA2.powi(step as i32));
        let update = m_hat.div(v_hat.sqrt().add_scalar(EPS)).mul_scalar(LR);
        z = (z.detach() - update).detach().require_grad();
    }
    // A fresh constant: burn's `detach` keeps a leaf's require-grad mark, and the lesson's graph
    // must not reach back into these latents.
    Tensor::from_data(z.to_data(), &encoded.device())
}
