//! Null-space lessons for the shared adapter (L2DM's default): each lesson adds a LoRA block whose
//! cross-attention key/value rows read only text directions that the earlier prompts do not use,
//! so a prompt of an earlier concept, a plain prompt and the empty prompt (guidance's other
//! branch) get the same keys and values after the lesson as before it. Earlier blocks and earlier
//! concepts' embeddings stay frozen; the new block's down-projection is kept inside the null space
//! after every step.
//!
//! This is InfLoRA's design (Liang & Li, CVPR 2024, Sec. 4.2: a new branch's `A` in the null
//! space of the earlier tasks' inputs) with GPM's energy criterion for the protected basis (Saha
//! et al., ICLR 2021, Eq. 5). Sites that read image features (`attn2.to_q`/`to_out`,
//! self-attention, feed-forward) see every prompt's pixels, so no text basis can guard them: the
//! block adapts them too by default, held there by TAME's replay and ECD's distillation only, or
//! leaves them at zero (`LessonOptions::image_sites` off), as Custom Diffusion (Kumari et al.
//! 2023, Sec. 3.1) adapts `to_k`/`to_v` only. On the built-in model the keys and values alone
//! learn little: the new shapes are drawn by the image-side projections (README, "Lessons").

use std::ops::Range;

use burn::prelude::*;

use super::adapter::{leaf, lora_down, Adapter};
use super::hold::Hold;
use super::learner::Learner;
use super::lesson::{LessonOptions, Trainer};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::world::vocab::{Background, Place, Size};

/// Share of the protected prompts' text energy (the sum of their hidden states' squares) whose
/// directions the new block may not read; the rest (the least-used directions) is its room.
pub const ENERGY: f64 = 0.99;

/// The constraint of one lesson, built from the state before it.
pub struct Guard {
    /// Orthonormal basis `[d, k]` of the protected text directions.
    basis: Tensor<2>,
    /// What the lesson may not move: earlier blocks, the sites the block leaves alone, earlier
    /// concepts' embeddings.
    pub hold: Hold,
    /// Per LoRA site: whether it reads text (`attn2.to_k` / `attn2.to_v`).
    text_sites: Vec<bool>,
    /// `(k, d)`: protected directions of the text width.
    pub dims: (usize, usize),
}

/// Whether a LoRA site reads the text encoder's output.
fn reads_text(site: &str) -> bool {
    site.ends_with("attn2.to_k") || site.ends_with("attn2.to_v")
}

/// The student of a guarded lesson: `adapter` (the state before it, its concepts not yet
/// including the new one) grown by a block of `rank` rows when it already holds concepts (an
/// empty adapter's own rows are the first block), and the guard built from `prompts`. With
/// `image_sites` the block adapts every site, else the text sites only.
pub fn prepare(trainer: &Trainer, adapter: &Adapter, prompts: &[String], (rank, image_sites): (usize, bool), seed: u64) -> Result<(Adapter, Guard)> {
    let features = hidden_states(trainer, adapter, prompts)?;
    let d = trainer.model.text_encoder.token_embedding.val().dims()[1];
    let basis = protected_basis(&features, d, ENERGY)?;
    let k = basis.dims()[1];
    let device = &trainer.device;
    let (grown, block) = if adapter.concepts.is_empty() { (adapter.frozen(device), 0..adapter.config.rank) } else { grow(adapter, rank, image_sites, seed, device) };
    let trained_sites = grown.sites.iter().map(|s| image_sites || reads_text(s)).collect();
    let guard = Guard {
        basis,
        hold: Hold::new(&block, grown.config.rank, trained_sites, grown.concepts.len(), device),
        text_sites: grown.sites.iter().map(|s| reads_text(s)).collect(),
        dims: (k, d),
    };
    let mut student = grown.trainable(device);
    let mut params = student.params();
    guard.project(&mut params);
    student.set_params(params);
    Ok((student, guard))
}

/// The trainable state a shared-adapter lesson starts from: the adapter as it is, or for a
/// null-space lesson the adapter grown by a block and the guard that keeps that block off
/// every earlier prompt's text directions (memory prompts, and the shapes world's phrases).
pub(super) fn student(learner: &Learner, options: &LessonOptions) -> Result<(Adapter, Option<Guard>)> {
    if !options.protection.null_space {
        return Ok((learner.adapter.trainable(&learner.trainer.device), None));
    }
    let remembered: Vec<String> = learner.memories.iter().flat_map(|m| m.items.iter().map(|i| i.prompt.clone())).collect();
    let world = learner.base.world.as_deref() == Some("shapes");
    let prompts = protected_prompts(&learner.adapter, &remembered, world);
    let (student, guard) = prepare(&learner.trainer, &learner.adapter, &prompts, (learner.block.rank, options.image_sites), options.seed)?;
    Ok((student, Some(guard)))
}

/// `adapter` with `rank` more rows: the new block's `A` initialised as PEFT does on the text
/// sites (and with `image_sites` everywhere; zero elsewhere), `B` zero, so the grown state is the
/// same model. Alpha grows with the rank so every block keeps the scale `alpha / rank` it was
/// trained with.
pub(super) fn grow(adapter: &Adapter, rank: usize, image_sites: bool, seed: u64, device: &Device) -> (Adapter, Range<usize>) {
    let old = adapter.frozen(device);
    let mut rng = Rng::new(seed ^ 0x9A11);
    let start = old.config.rank;
    let mut down = Vec::with_capacity(old.down.len());
    let mut up = Vec::with_capacity(old.up.len());
    for ((a, b), site) in old.down.iter().zip(&old.up).zip(&old.sites) {
        let [d_in, _] = a.dims();
        let [_, d_out] = b.dims();
        // Drawn for every site, so the text sites' draws do not depend on `image_sites`.
        let fresh = lora_down(d_in, rank, &mut rng, device);
        let fresh = if image_sites || reads_text(site) { fresh } else { fresh.zeros_like() };
        down.push(Tensor::cat(vec![a.clone(), fresh], 1));
        up.push(Tensor::cat(vec![b.clone(), Tensor::zeros([rank, d_out], device)], 0));
    }
    let mut config = old.config.clone();
    config.alpha *= (start + rank) as f32 / start.max(1) as f32;
    config.rank = start + rank;
    (Adapter { down, up, config, ..old }, start..start + rank)
}

impl Guard {
    /// Puts the new block's `A` back into the null space: `A <- A - U U^T A` on its columns.
    pub fn project(&self, params: &mut [Tensor<2>]) {
        for (i, reads) in self.text_sites.iter().enumerate() {
            if !reads || self.dims.0 == 0 {
                continue;
            }
            let p = params[i].clone().detach();
            let inside = self.basis.clone().matmul(self.basis.clone().transpose().matmul(p.clone() * self.hold.column.clone()));
            params[i] = leaf((p - inside).detach());
        }
    }
}

/// The prompts a lesson protects: the empty prompt, every memory prompt, and for the shapes
/// world its plain captions and each earlier concept in every size, place and background phrase
/// (the probes' and the pictures' words); other models get each concept alone.
pub fn protected_prompts(adapter: &Adapter, memory_prompts: &[String], world: bool) -> Vec<String> {
    let mut out = vec![String::new()];
    out.extend(memory_prompts.iter().cloned());
    if world {
        out.extend(super::learner::base_prompts(true, 128));
    }
    for concept in &adapter.concepts {
        out.push(format!("a {}", concept.token));
        if !world {
            continue;
        }
        let sizes = std::iter::once("").chain(Size::ALL.iter().map(|s| s.name()));
        for size in sizes {
            for place in std::iter::once("").chain(Place::ALL.iter().map(|p| p.phrase())) {
                for bg in std::iter::once(String::new()).chain(Background::ALL.iter().map(|b| format!("on a {b} background"))) {
                    let words: Vec<&str> = ["a", size, &concept.token, place, &bg].into_iter().filter(|w| !w.is_empty()).collect();
                    out.push(words.join(" "));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Every token's text-encoder output for `prompts` under `adapter`'s concept embeddings, as
/// rows `[n * tokens, d]` flattened (the padding positions too: the UNet attends to them).
fn hidden_states(trainer: &Trainer, adapter: &Adapter, prompts: &[String]) -> Result<Tensor<2>> {
    let frozen = adapter.frozen(&trainer.device);
    let mut rows = Vec::new();
    for chunk in prompts.chunks(64) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let ids = trainer.ids(&refs)?;
        let hidden = frozen.encode_ids(&trainer.model.text_encoder, &ids, &trainer.device)?.detach();
        let [b, n, d] = hidden.dims();
        rows.push(hidden.reshape([b * n, d]));
    }
    if rows.is_empty() {
        return Err(Error::InvalidInput("a guarded lesson needs at least one prompt to protect".into()));
    }
    Ok(Tensor::cat(rows, 0))
}

/// The eigenvectors of `H^T H` (`features` rows `[N, d]`) with the largest eigenvalues, enough to
/// hold `energy` of its trace, as the columns of a `[d, k]` tensor on the features' device.
fn protected_basis(features: &Tensor<2>, d: usize, energy: f64) -> Result<Tensor<2>> {
    let gram = features.clone().transpose().matmul(features.clone());
    let values: Vec<f32> = gram.into_data().convert::<f32>().try_to_vec::<f32>().map_err(|e| Error::InvalidInput(format!("reading text features: {e:?}")))?;
    let gram: Vec<f64> = values.into_iter().map(f64::from).collect();
    let (eigen, vectors) = symmetric_eigen(gram, d);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| eigen[b].total_cmp(&eigen[a]));
    let total: f64 = eigen.iter().map(|v| v.max(0.0)).sum();
    let (mut kept, mut sum) = (Vec::new(), 0.0);
    for &j in &order {
        if total <= 0.0 || sum >= energy * total {
            break;
        }
        sum += eigen[j].max(0.0);
        kept.push(j);
    }
    let k = kept.len();
    let mut basis = vec![0.0f32; d * k];
    for (c, &j) in kept.iter().enumerate() {
        for r in 0..d {
            basis[r * k + c] = vectors[r * d + j] as f32;
        }
    }
    Ok(Tensor::from_data(TensorData::new(basis, [d, k]), &features.device()))
}

/// Eigenvalues and eigenvectors (columns of the row-major `[d, d]` result) of a symmetric
/// matrix by cyclic Jacobi rotations (Golub & Van Loan, Algorithm 8.5.3): a few sweeps suffice
/// for the text widths here (128 to 1024).
pub fn symmetric_eigen(mut a: Vec<f64>, d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v: Vec<f64> = (0..d * d).map(|i| if i / d == i % d { 1.0 } else { 0.0 }).collect();
    let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
    for _sweep in 0..30 {
        let off: f64 = (0..d).flat_map(|p| (0..d).filter(move |&q| q != p).map(move |q| (p, q))).map(|(p, q)| a[p * d + q].powi(2)).sum::<f64>().sqrt();
        if off <= 1e-12 * scale {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                rotate(&mut a, &mut v, d, p, q);
            }
        }
    }
    ((0..d).map(|i| a[i * d + i]).collect(), v)
}

/// One Jacobi rotation zeroing `a[p][q]` (and `a[q][p]`), accumulated into `v`.
fn rotate(a: &mut [f64], v: &mut [f64], d: usize, p: usize, q: usize) {
    let apq = a[p * d + q];
    if apq.abs() < 1e-300 {
        return;
    }
    let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
    let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
    let c = 1.0 / (t * t + 1.0).sqrt();
    let s = t * c;
    for k in 0..d {
        let (akp, akq) = (a[k * d + p], a[k * d + q]);
        a[k * d + p] = c * akp - s * akq;
        a[k * d + q] = s * akp + c * akq;
    }
    for k in 0..d {
        let (apk, aqk) = (a[p * d + k], a[q * d + k]);
        a[p * d + k] = c * apk - s * aqk;
        a[q * d + k] = s * apk + c * aqk;
    }
    for k in 0..d {
        let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
        v[k * d + p] = c * vkp - s * vkq;
        v[k * d + q] = s * vkp + c * vkq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_eigenvectors_rebuild_the_matrix() {
        let d = 5;
        let mut rng = Rng::new(3);
        let m: Vec<f64> = (0..d * d).map(|_| rng.uniform() - 0.5).collect();
        // A = M^T M: symmetric, positive semi-definite, like a Gram matrix.
        let a: Vec<f64> = (0..d * d).map(|i| (0..d).map(|k| m[k * d + i / d] * m[k * d + i % d]).sum()).collect();
        let (values, v) = symmetric_eigen(a.clone(), d);
        for i in 0..d {
            for j in 0..d {
                let rebuilt: f64 = (0..d).map(|k| v[i * d + k] * values[k] * v[j * d + k]).sum();
                let dot: f64 = (0..d).map(|k| v[k * d + i] * v[k * d + j]).sum();
                assert!((rebuilt - a[i * d + j]).abs() < 1e-9, "A[{i}][{j}]: {rebuilt} vs {}", a[i * d + j]);
                assert!((dot - f64::from(u8::from(i == j))).abs() < 1e-9, "eigenvectors are orthonormal");
            }
        }
    }

    #[test]
    fn the_basis_spans_the_features_and_nothing_more() {
        let device = Device::flex();
        // 40 rows in the span of two directions of a 6-wide space.
        let mut rng = Rng::new(5);
        let (u, w) = ([1.0, 2.0, 0.0, -1.0, 0.0, 0.5], [0.0, 1.0, 1.0, 1.0, -2.0, 0.0]);
        let rows: Vec<f32> = (0..40).flat_map(|_| {
            let (a, b) = (rng.uniform() - 0.5, rng.uniform() - 0.5);
            (0..6).map(move |c| (a * u[c] + b * w[c]) as f32)
        }).collect();
        let features = Tensor::<2>::from_data(TensorData::new(rows, [40, 6]), &device);
        let basis = protected_basis(&features, 6, 0.999_999).expect("basis");
        assert_eq!(basis.dims(), [6, 2], "two directions hold all the energy");
        // Projecting the features off the basis leaves nothing; an outside direction keeps most of itself.
        let left = features.clone() - features.matmul(basis.clone()).matmul(basis.clone().transpose());
        assert!(left.abs().max().into_scalar::<f32>() < 1e-4);
        let outside = Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 0.0, 1.0, -1.0, 0.0, 0.0], [1, 6]), &device);
        let kept = outside.clone() - outside.matmul(basis.clone()).matmul(basis.transpose());
        assert!(kept.square().sum().into_scalar::<f32>() > 0.5);
    }
}
