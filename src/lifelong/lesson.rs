//! One lesson: the adapter learns a new concept from a few encoded images, while replayed memory
//! (TAME) and the previous state as teacher (ECD) hold the earlier concepts.
//!
//! Loss per step (L2DM Sec. 3, our weights):
//! `L = L_new + mu * L_replay + sum_c lambda_c * L_distill(c) + L_ewc`, each term the mean squared
//! error of the UNet's prediction against its target (`noise`, or `v` for v-prediction models)
//! at timesteps drawn uniformly, as diffusers' train_text_to_image.py does.

use burn::prelude::*;

use super::adam::Adam;
use super::schedule::{candidate_steps, ema_update, lr_factor};
use super::adapter::Adapter;
use super::hold::Hold;
use super::null_space::Guard;
use super::protect::{distill_targets, ewc_penalty, orthogonality, unconditional_anchor, Elastic};
pub use super::trainer::Trainer;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// A training example: VAE latents (scaled, `[1, c, h, w]`) and the prompt they show.
#[derive(Debug, Clone)]
pub struct Example {
    pub latents: Tensor<4>,
    pub prompt: String,
}

/// A replayed example of an earlier concept (`concept` indexes [`Adapter::concepts`]; `None`
/// for base-world samples that protect prompts without concepts).
#[derive(Debug, Clone)]
pub struct Replay {
    pub concept: Option<usize>,
    pub example: Example,
}

/// Which protections a lesson uses; the eval's baselines and ablations switch them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Protection {
    /// Replay memory samples with weight `mu` (TAME).
    pub replay: bool,
    /// Distil the previous state's predictions on memory (ECD).
    pub distill: bool,
    /// Elastic weight consolidation on the adapter (the EWC baseline), strength.
    pub ewc: f32,
    /// Orthogonal attention (OA) during lessons, strength: the new concept's cross-attention
    /// keys are pushed orthogonal to every earlier concept's.
    pub oa: f32,
    /// Each lesson a new block reading only text directions earlier prompts leave unused, earlier
    /// blocks and embeddings frozen (src/lifelong/null_space.rs).
    pub null_space: bool,
    /// Each lesson a new concept-gated block (src/lifelong/gate.rs); every block trainable.
    pub gated: bool,
}

/// Lesson settings.
#[derive(Debug, Clone)]
pub struct LessonOptions {
    pub steps: usize,
    /// New-concept examples per step; replay adds as many again.
    pub batch: usize,
    pub lr_lora: f64,
    pub lr_token: f64,
    /// Learning rate at the last step as a share of the first: the rates fall from their
    /// values above along a half cosine to this share (1 keeps them constant).
    pub lr_end: f64,
    /// Extra weight of the object's latent positions in the new concept's denoising loss
    /// (`memory::object_mask`; 0: every position alike). The object covers a few percent of a
    /// picture, so an unweighted loss spends most of a lesson on its background.
    pub object_weight: f32,
    /// Candidate states kept along the lesson's second half (its last step included), among which
    /// a routed or merged lesson keeps the one whose samples best match the pictures
    /// (src/lifelong/selfcheck.rs); 0 or 1 keeps the last state.
    pub candidates: usize,
    /// Share of the new concept's rows trained with the empty prompt (classifier-free guidance's
    /// caption dropout, Ho & Salimans 2022 Sec. 3.2). A routed block is installed for guidance's
    /// empty-prompt pass too; trained only on captioned rows, that pass is left wherever the block
    /// happens to move it, and guidance multiplies the gap.
    pub prompt_dropout: f32,
    /// Decay of an exponential moving average of the adapter's tensors over the lesson, which
    /// the lesson ends with (0: the last step's tensors).
    pub ema: f64,
    /// Start the concept's embedding at the vocabulary word that best explains the pictures
    /// (src/lifelong/init.rs) instead of the mean embedding.
    pub init_search: bool,
    /// Adam steps that refine the pictures' latents until they decode to the pictures
    /// (src/lifelong/invert.rs); 0 teaches the encoder's latents.
    pub refine_steps: usize,
    /// For models of the shapes world: also teach each picture whose words name a place with its
    /// object moved to every other place (src/lifelong/augment.rs).
    pub place_views: bool,
    /// For models of the shapes world: also teach each picture under its shorter true captions,
    /// its size, place and background phrases left out in every combination
    /// (src/lifelong/augment.rs). Measured worse on the eval's lessons (README, "Lessons").
    pub caption_views: bool,
    /// For models of the shapes world: also teach each picture whose words say "large" with its
    /// object shrunk to the small size, the words saying "small" (src/lifelong/size_views.rs).
    /// Other models' pictures are never shrunk.
    pub size_views: bool,
    /// A null-space lesson's block also adapts the projections that read image features, where
    /// no text basis guards it and TAME and ECD alone hold earlier concepts (src/lifelong/null_space.rs).
    pub image_sites: bool,
    pub mu: f32,
    /// Base distillation weight `lambda_0`.
    pub distill: f32,
    /// Elasticity: `lambda_c = lambda_0 * (1 + kappa * drift_c)`.
    pub kappa: f32,
    /// Weight of the unconditional anchor: the adapted model's prediction for the empty prompt
    /// is held to the base model's, on the lesson's own noised latents. Guidance extrapolates
    /// from that prediction, so a lesson that moves it (every LoRA outside `attn2.to_k/to_v`
    /// does) shifts colours and backgrounds of every image, concept or not. Routed lessons leave
    /// it out (`Method::uncond` in learner.rs).
    pub uncond: f32,
    pub protection: Protection,
    pub seed: u64,
}

impl Default for LessonOptions {
    fn default() -> Self {
        Self {
            steps: 150,
            batch: 4,
            lr_lora: 3e-3,
            lr_token: 1e-2,
            lr_end: 1.0,
            object_weight: 0.0,
            candidates: 1,
            prompt_dropout: 0.0,
            ema: 0.0,
            init_search: true,
            refine_steps: 30,
            place_views: false,
            caption_views: false,
            // On since session 21: two concepts composed 59 of 64 against 51 without, identification
            // 83.6/86.7% against 83.2/84.4% (README, "Lessons").
            size_views: true,
            // Replaying memory against the noise (mu 1) pulled plain prompts from 50% to 12.5%
            // right (its samples carry guidance's overshoot, which training on them amplifies);
            // distillation toward the teacher keeps them without that (README, "Lessons").
            image_sites: true,
            mu: 0.3,
            distill: 0.3,
            kappa: 1.0,
            uncond: 1.0,
            protection: Protection { replay: true, distill: true, ewc: 0.0, oa: 0.05, null_space: true, gated: false },
            seed: 0,
        }
    }
}

/// Reported after every step.
#[derive(Debug, Clone, Copy)]
pub struct LessonProgress {
    pub step: usize,
    pub total: usize,
    pub loss: f32,
    pub distill: f32,
}

/// What a lesson did.
#[derive(Debug, Clone)]
pub struct LessonReport {
    pub steps: usize,
    pub first_loss: f32,
    pub last_loss: f32,
    /// Final elastic weights per concept index (ECD).
    pub elastic: Vec<(usize, f32)>,
    /// The states kept at `LessonOptions::candidates` steps (step, [`Adapter::params`]), the
    /// last step's last; empty when only the last state counts.
    pub candidates: Vec<(usize, Vec<Tensor<2>>)>,
    /// The step whose state the lesson kept (the last unless a self-check chose another).
    pub kept_step: usize,
    /// The self-check's score of each candidate (step, score in [0, 1]), when it ran.
    pub scores: Vec<(usize, f32)>,
    /// The words the embedding search ranked first (word, denoising error), the first being
    /// where the concept's embedding started; empty when it started at the mean embedding.
    pub init_words: Vec<(String, f32)>,
    /// When the pictures' latents were refined (src/lifelong/invert.rs): the share of their
    /// pixels the VAE's round trip had lost.
    pub refined: Option<f32>,
    /// For a null-space lesson, `(k, d)`: the text directions it left alone, of the text width.
    pub protected: Option<(usize, usize)>,
}

/// Mean squared error per example `[b]`.
pub(super) fn mse_per_example(a: Tensor<4>, b: Tensor<4>) -> Tensor<1> {
    let [n, ..] = a.dims();
    (a - b).square().reshape([n as i32, -1]).mean_dim(1).reshape([n])
}

pub(super) fn pick<'a, T>(items: &'a [T], n: usize, rng: &mut Rng) -> Vec<&'a T> {
    pick_indices(items.len(), n, rng).into_iter().map(|i| &items[i]).collect()
}

/// `n` indices drawn uniformly, with replacement, from `0..len`.
fn pick_indices(len: usize, n: usize, rng: &mut Rng) -> Vec<usize> {
    (0..n).map(|_| (rng.uniform() * len as f64) as usize % len).collect()
}

/// What a lesson holds on to from before it: the previous state as ECD's teacher (frozen) and,
/// for null-space lessons, the guard that keeps the new block off earlier prompts' directions.
#[derive(Clone, Copy, Default)]
pub struct Prior<'a> {
    pub teacher: Option<&'a Adapter>,
    pub guard: Option<&'a Guard>,
}

/// Teaches `adapter` (trainable, on the trainer's device) the examples in `new`; `replay` holds
/// memory of earlier concepts, `prior` the state before this lesson.
pub fn teach(
    trainer: &Trainer,
    adapter: &mut Adapter,
    prior: Prior<'_>,
    new: &[Example],
    replay: &[Replay],
    options: &LessonOptions,
    progress: &mut dyn FnMut(LessonProgress),
) -> Result<LessonReport> {
    if new.is_empty() {
        return Err(Error::InvalidInput("a lesson needs at least one example".into()));
    }
    let (mut rng, mut replay_rng) = (Rng::new(options.seed), Rng::new(options.seed ^ 0x5EED_F0D0));
    // Its own stream, so a lesson without dropout draws exactly what it drew before.
    let mut drop_rng = Rng::new(options.seed ^ 0xD20F);
    let mut ema: Option<Vec<Tensor<2>>> = None;
    let mut adam = Adam::default();
    let lrs: Vec<f64> = (0..adapter.params().len())
        .map(|i| if i < adapter.down.len() * 2 { options.lr_lora } else { options.lr_token })
        .collect();
    let anchor = (options.protection.ewc > 0.0).then(|| adapter.frozen(&trainer.device).params());
    let mut elastic = Elastic::default();
    let (mut first, mut last) = (f32::NAN, f32::NAN);
    let keep_at = candidate_steps(options.steps, options.candidates);
    // The object masks depend on the pictures only: made once, not at every step.
    let weights = if options.object_weight > 0.0 { object_weights(new, options.object_weight, &trainer.device)? } else { Vec::new() };
    let mut candidates = Vec::with_capacity(keep_at.len());
    // A gated lesson trains its own block and token; earlier concepts' blocks and tokens stay as
    // they were (each is its concept's alone: session 28's first gated run, which trained every
    // block and token under TAME's replay and ECD's distillation, lost its first three concepts
    // entirely; a common block open for every concept, trained by every lesson and held by TAME and
    // ECD, pulled later concepts toward earlier ones: README, "Lessons").
    let gated = adapter.gated.then(|| Hold::last_block(adapter, &trainer.device));
    let hold = prior.guard.map(|g| &g.hold).or(gated.as_ref());
    for step in 1..=options.steps {
        let (loss, distill) = step_loss(trainer, adapter, prior.teacher, (new, &weights), replay, options, &mut elastic, [&mut rng, &mut replay_rng, &mut drop_rng])?;
        let loss = if options.protection.oa > 0.0 && adapter.concepts.len() > 1 {
            loss + orthogonality(trainer, adapter)?.mul_scalar(options.protection.oa)
        } else {
            loss
        };
        let loss = match (&anchor, &adapter.fisher) {
            (Some(anchor), Some(fisher)) => loss + ewc_penalty(adapter, anchor, fisher).mul_scalar(options.protection.ewc),
            _ => loss,
        };
        let value = loss.clone().into_scalar::<f32>();
        if !value.is_finite() {
            return Err(Error::InvalidInput(format!("the lesson diverged at step {step} (loss {value}); try fewer steps or a lower learning rate")));
        }
        let grads = loss.backward();
        let g: Vec<Option<Tensor<2>>> = adapter.params().iter().map(|p| p.grad(&grads)).collect();
        let g = match hold {
            Some(hold) => hold.mask(g),
            None => g,
        };
        let mut params = adapter.params();
        let decay = lr_factor(step, options.steps, options.lr_end);
        adam.step(&mut params, g, &lrs.iter().map(|lr| lr * decay).collect::<Vec<_>>());
        if let Some(guard) = prior.guard {
            guard.project(&mut params);
        }
        if options.ema > 0.0 {
            ema = Some(ema_update(ema, &params, options.ema));
        }
        adapter.set_params(params);
        if step == 1 {
            first = value;
        }
        last = value;
        if keep_at.contains(&step) {
            candidates.push((step, adapter.params()));
        }
        progress(LessonProgress { step, total: options.steps, loss: value, distill });
    }
    if let Some(averaged) = ema {
        adapter.set_params(averaged.into_iter().map(|p| p.detach().require_grad()).collect());
    }
    Ok(LessonReport { steps: options.steps, first_loss: first, last_loss: last, elastic: elastic.weights(options), candidates, kept_step: options.steps, scores: Vec::new(), init_words: Vec::new(), refined: None, protected: None })
}

#[allow(clippy::too_many_arguments)]
fn step_loss(
    trainer: &Trainer,
    adapter: &Adapter,
    teacher: Option<&Adapter>,
    (new, weights): (&[Example], &[Tensor<4>]),
    replay: &[Replay],
    options: &LessonOptions,
    elastic: &mut Elastic,
    rngs: [&mut Rng; 3],
) -> Result<(Tensor<1>, f32)> {
    let [rng, replay_rng, drop_rng] = rngs;
    let picked = pick_indices(new.len(), options.batch, rng);
    let fresh: Vec<&Example> = picked.iter().map(|&i| &new[i]).collect();
    let use_replay = options.protection.replay || options.protection.distill;
    let mut old = if use_replay && !replay.is_empty() { pick(replay, options.batch, replay_rng) } else { Vec::new() };
    // Concept memory first, base-world memory last: `distill_targets` splits the rows there.
    old.sort_by_key(|r| r.concept.is_none());
    let examples: Vec<&Example> = fresh.iter().copied().chain(old.iter().map(|r| &r.example)).collect();
    let mut prompts: Vec<&str> = examples.iter().map(|e| e.prompt.as_str()).collect();
    if options.prompt_dropout > 0.0 {
        for prompt in prompts.iter_mut().take(fresh.len()) {
            if drop_rng.uniform() < f64::from(options.prompt_dropout) {
                *prompt = "";
            }
        }
    }
    let ids = trainer.ids(&prompts)?;
    // The new concept's examples, timesteps and noise come from their own stream, so a method
    // with replay sees exactly the new-concept batches a method without it sees (paired runs).
    let (mut x_t, mut target, mut t) = trainer.noise(Tensor::cat(fresh.iter().map(|e| e.latents.clone()).collect(), 0), rng);
    if !old.is_empty() {
        let (xo, yo, to) = trainer.noise(Tensor::cat(old.iter().map(|r| r.example.latents.clone()).collect(), 0), replay_rng);
        x_t = Tensor::cat(vec![x_t, xo], 0);
        target = Tensor::cat(vec![target, yo], 0);
        t.extend(to);
    }
    let pred = trainer.predict(adapter, x_t.clone(), &t, &ids)?;
    let per = mse_per_example(pred.clone(), target.clone());
    let (nf, no) = (fresh.len(), old.len());
    let mut loss = if !weights.is_empty() {
        let weights = Tensor::cat(picked.iter().map(|&i| weights[i].clone()).collect(), 0);
        weighted_mse(pred.clone().narrow(0, 0, nf), target.clone().narrow(0, 0, nf), weights)
    } else {
        per.clone().narrow(0, 0, nf).mean()
    };
    if no > 0 && options.protection.replay {
        loss = loss + per.clone().narrow(0, nf, no).mean().mul_scalar(options.mu);
    }
    let mut distill_value = 0.0;
    if let (Some(teacher), true, true) = (teacher, no > 0, options.protection.distill) {
        let concept_rows = old.iter().filter(|r| r.concept.is_some()).count();
        let taught = distill_targets(trainer, teacher, x_t.clone().narrow(0, nf, no), &t[nf..], &ids[nf..], concept_rows)?;
        let gap = mse_per_example(pred.clone().narrow(0, nf, no), taught.clone());
        let own = mse_per_example(taught, target.narrow(0, nf, no));
        let concepts: Vec<Option<usize>> = old.iter().map(|r| r.concept).collect();
        let weights = elastic.update(&concepts, &gap, &own, options);
        let weights = Tensor::<1>::from_data(TensorData::new(weights, [no]), &trainer.device);
        let distill = (gap * weights).mean();
        distill_value = distill.clone().into_scalar::<f32>();
        loss = loss + distill;
    }
    if options.uncond > 0.0 {
        loss = loss + unconditional_anchor(trainer, adapter, x_t.narrow(0, 0, nf.min(2)), &t[..nf.min(2)])?.mul_scalar(options.uncond);
    }
    Ok((loss, distill_value))
}

/// Per-position loss weights `[1, 1, h, w]` of each new example: `1 + extra` on the object, 1
/// elsewhere, scaled to mean 1 per example so the loss keeps its size against the other terms.
fn object_weights(examples: &[Example], extra: f32, device: &Device) -> Result<Vec<Tensor<4>>> {
    examples
        .iter()
        .map(|e| {
            let [_, _, h, w] = e.latents.dims();
            let raw: Vec<f32> = super::memory::object_mask(&e.latents)?.iter().map(|m| 1.0 + extra * m).collect();
            let mean = raw.iter().sum::<f32>() / raw.len() as f32;
            Ok(Tensor::from_data(TensorData::new(raw.iter().map(|v| v / mean).collect::<Vec<f32>>(), [1, 1, h, w]), device))
        })
        .collect()
}

fn weighted_mse(a: Tensor<4>, b: Tensor<4>, weights: Tensor<4>) -> Tensor<1> {
    ((a - b).square() * weights).mean()
}
