//! Regional composition of concepts, for prompts that name two or more concepts of an adapter
//! (routed: each region's model carries its concept's block alone; shared, as L2DM's: the whole
//! adapter, each region with its own one-concept clause, since session 24). Summed, the
//! concepts' LoRA blocks act on the whole image, so in "a <a> to the left of a <b>" both objects
//! come out in one concept's look; and a block alone, given the whole two-object prompt, draws
//! world objects in neither look (both measured: README, "Lessons"): a block was taught on
//! one-object prompts only.
//!
//! So the prompt is split into one clause per concept, and the image into one region per clause,
//! laid out by the prompt's own words: a relation between two concepts ("to the left of",
//! "above") or each clause's place ("on the left"), else left to right in the order named. Each
//! concept's block draws its own one-object prompt (its clause, "large" when it names no size and
//! two regions share the image, "in the center", and the scene's background: the prompt's, else
//! [`DEFAULT_BACKGROUND`]) on latents shifted so that its region's centre is the image's centre
//! (the world model reads "in the center" but not "at the top": README, issue 4); each region
//! takes its concept's drawing, shifted back and blended across a soft border. During the first
//! [`Composer::private_share`] of the steps (by default all) each block denoises latents of its
//! own ([`PrivateViews`]), so each concept comes out as its one-object prompt draws it; after
//! them every block predicts on the shared latents. When they run to the end, two objects that
//! would meet at the border are first moved apart ([`settle`]). This is MultiDiffusion's fusion of
//! region-wise predictions (Bar-Tal et al. 2023, eq. 5) with shifted views in place of crops and
//! its bootstrapping phase (sec. 4.1) run to the end, as Mix-of-Show's regionally controllable
//! sampling does for separately taught concepts (Gu et al. 2023, sec. 3.3). On the eight taught
//! concepts of README "Lessons" (64 two-concept prompts, 2026-11-27, session 14): shared latents
//! from the first step composed 19 of 64, private views without a shared background 31 of 64,
//! with one 52 of 64, and with one for the first 80% of the steps, then shared, 25 of 64 (the
//! shared steps mottle what the regions drew apart). The shift, the size word and the border
//! width were chosen on four taught concepts (crescent, arrow, hourglass, chevron; 16-32 pairs
//! each): place words alone, no size word, "small", hard borders and a wider border each composed
//! fewer pairs (session note of 2026-11-27 on issue 5); with private views no size word composed
//! 38 of 64 and region centres a fifth of the image from its edges 51 of 64.

use burn::prelude::*;

use super::adapter::Adapter;
use super::selfcheck::{best_drawing, Signature};
use crate::error::Result;
use crate::loader::LoadedModel;
use crate::model::unet::UNet2DConditionModel;
use crate::pipeline::encode_text;
use crate::scheduler::Scheduler;
mod layout;
pub mod settle;

pub use layout::{layout, object_layout, Clause, DEFAULT_BACKGROUND};
pub(crate) use layout::{regions, scene_background};
use layout::distance;


/// Whether plain relation prompts are composed ([`Composer::plan_objects`]) when the user does
/// not say: for models of the shapes world ([`LoadedModel::world`]: the built-in one), whose
/// one-object prompts name their places reliably while the order of a relation's objects is
/// not learnt (README, Figures); not for other checkpoints, whose prompts are not the world's
/// grammar (a clause is made "large", "in the center", on the scene's background: right for
/// the world, a different picture for a photo model).
pub fn composes_objects_by_default(model: &LoadedModel) -> bool {
    model.world.as_deref() == Some(crate::world::WORLD_NAME)
}

/// Softness of the region borders: a cell's weight for region `k` is
/// `exp(-(d_k - d_nearest) / FEATHER)`, `d` squared distances in image widths, normalised over the
/// regions; between two centres half an image apart one latent cell of a 16-cell side moves the
/// weight by a factor of about 5. Hard borders (0) and 0.1 each composed fewer pairs.
const FEATHER: f32 = 0.04;

/// `[k, 1, h, w]` region weights summing to 1 in every latent cell (see [`FEATHER`]).
pub fn region_masks(centers: &[[f32; 2]], latent: [usize; 2], device: &Device) -> Tensor<4> {
    let [h, w] = latent;
    Tensor::from_data(TensorData::new(region_weights(centers, latent), [centers.len(), 1, h, w]), device)
}

/// [`region_masks`]' values, region-major then row-major.
pub fn region_weights(centers: &[[f32; 2]], latent: [usize; 2]) -> Vec<f32> {
    let [h, w] = latent;
    let k = centers.len();
    let mut data = vec![0.0f32; k * h * w];
    for y in 0..h {
        for x in 0..w {
            let cell = [(x as f32 + 0.5) / w as f32, (y as f32 + 0.5) / h as f32];
            let d: Vec<f32> = centers.iter().map(|&c| distance(c, cell)).collect();
            let nearest = d.iter().copied().fold(f32::INFINITY, f32::min);
            let weights: Vec<f32> = d.iter().map(|&dk| (-(dk - nearest) / FEATHER).exp()).collect();
            let sum: f32 = weights.iter().sum();
            for (j, wj) in weights.iter().enumerate() {
                data[(j * h + y) * w + x] = wj / sum;
            }
        }
    }
    data
}

/// The roll `[rows, columns]` that brings a region centre to the centre of a `latent` grid.
fn shift_to_center(center: [f32; 2], latent: [usize; 2]) -> [isize; 2] {
    let cells = |c: f32, n: usize| ((0.5 - c) * n as f32).round() as isize;
    [cells(center[1], latent[0]), cells(center[0], latent[1])]
}

/// One concept's part: the UNet with only its block, its clause's text encoding, its region's
/// weights, the roll that centres its region, and its concept's looks (empty for world objects
/// and for concepts stored without them).
#[derive(Clone)]
struct Part {
    unet: UNet2DConditionModel,
    cond: Tensor<3>,
    mask: Tensor<4>,
    shift: [isize; 2],
    looks: Vec<Signature>,
}

/// One generation's composition. Cloning shares the parts' weights (a page that draws the same
/// prompt again reuses its plan instead of merging the blocks anew).
#[derive(Clone)]
pub struct Composer {
    parts: Vec<Part>,
    /// The clauses, in the order of the concepts' indices in the adapter (for reports and tests).
    pub clauses: Vec<Clause>,
    /// Share of the steps during which each part denoises latents of its own ([`PrivateViews`]).
    pub private_share: f32,
    /// How many drawings each concept's part makes from different noise when the parts draw to
    /// the end on latents of their own; the one whose subject looks most like the concept's
    /// lesson pictures is kept ([`Concept::looks`](super::adapter::Concept::looks)). A lesson's
    /// block draws its concept right from some noise and not from other noise (seed 2's
    /// hourglass block: 7 of 16 noises, with the kept silhouettes matching its pictures 0.50-0.66
    /// where the misses matched 0.31-0.50; README, "Lessons"). A part's drawings are one batch
    /// through its UNet. 1 draws each part once.
    pub tries: usize,
}

/// [`Composer::private_share`]'s default.
pub const PRIVATE_SHARE: f32 = 1.0;

/// [`Composer::tries`]' default: on seed 2's eval lessons (README, "Lessons", session 27) one
/// drawing composed 40 of 64 pairs, three 51, six 59 (four: 39 of the first 47, where three
/// drew 38 and six 43). A part's drawings are one batch, so on the CPU six drew a two-concept
/// prompt in 3.2 s against one drawing's 3.0 s (20 steps).
pub const TRIES: usize = 6;

/// The most drawings a composed concept may make (each adds one to its region's batch at every
/// step, and one decoded image to choose from).
pub const MAX_TRIES: usize = 16;

/// Each part's own latents and sampler for the first steps: MultiDiffusion's bootstrapping
/// (Bar-Tal et al. 2023, sec. 4.1), which lets each region's object form against a background of
/// its own before the regions see each other. Here a part's own background is its own
/// one-object scene, so for those steps each concept is drawn as a one-object prompt draws it, in
/// its view, and the image takes each region from its part; after them every part sees the
/// shared latents ([`Composer::predict`]), which blends the regions into one picture (by
/// default they run to the end: the shared steps mottled what the regions drew apart).
pub struct PrivateViews {
    /// Each part's drawings in its view, one batch: the first from the shared noise, then
    /// [`Composer::tries`]` - 1` from fresh noise when it has looks to choose by (one UNet pass
    /// draws them all); one drawing once [`Composer::choose`] kept the best.
    latents: Vec<Tensor<4>>,
    schedulers: Vec<Box<dyn Scheduler>>,
    /// The steps they run for.
    pub steps: usize,
    /// Whether they run to the end, so that the drawn objects may move apart ([`settle`]).
    last: bool,
}

impl Composer {
    /// The composition for `prompt` on `base` (the model without concepts) with `adapter`, or
    /// `None` when the prompt names fewer than two of the adapter's concepts, or its words give
    /// no layout (two clauses in one place).
    pub fn plan(adapter: &Adapter, base: &LoadedModel, prompt: &str, latent: [usize; 2]) -> Result<Option<Self>> {
        let present = adapter.concepts_in(prompt);
        if present.len() < 2 {
            return Ok(None);
        }
        let tokens: Vec<&str> = present.iter().map(|&c| adapter.concepts[c].token.as_str()).collect();
        let Some(clauses) = layout(prompt, &tokens) else { return Ok(None) };
        let mut composer = Self::assemble(clauses, latent, base, |k| {
            let mut model = base.clone();
            adapter.routed(&[present[k]]).install(&mut model)?;
            Ok(model)
        })?;
        for (part, &c) in composer.parts.iter_mut().zip(&present) {
            part.looks.clone_from(&adapter.concepts[c].looks);
        }
        Ok(Some(composer))
    }

    /// The composition of a plain two-object relation prompt ([`object_layout`]) on `base`: each
    /// object drawn by the model alone from its one-object clause, in its region. `None` when the
    /// prompt has no such layout.
    pub fn plan_objects(base: &LoadedModel, prompt: &str, latent: [usize; 2]) -> Result<Option<Self>> {
        let Some(clauses) = object_layout(prompt) else { return Ok(None) };
        Ok(Some(Self::assemble(clauses, latent, base, |_| Ok(base.clone()))?))
    }

    /// One part per clause: the model `model_for(k)` gives clause `k` (a copy of `base`, whose
    /// device they share; cloning shares weights), its clause's encoding, its region's weights
    /// and the roll that centres the region.
    fn assemble(clauses: Vec<Clause>, latent: [usize; 2], base: &LoadedModel, mut model_for: impl FnMut(usize) -> Result<LoadedModel>) -> Result<Self> {
        let device = base.text_encoder.token_embedding.val().device();
        let centers: Vec<[f32; 2]> = clauses.iter().map(|c| c.center).collect();
        let masks = region_masks(&centers, latent, &device);
        let mut parts = Vec::with_capacity(clauses.len());
        for (k, clause) in clauses.iter().enumerate() {
            let model = model_for(k)?;
            // A clause is no longer than the prompt it came from plus a few words; the prompt's
            // own encoding already warns when it is truncated.
            let cond = encode_text(&model, &clause.prompt, &device, &mut Vec::new())?;
            let shift = shift_to_center(clause.center, latent);
            parts.push(Part { unet: model.unet, cond, mask: masks.clone().narrow(0, k, 1), shift, looks: Vec::new() });
        }
        Ok(Self { parts, clauses, private_share: PRIVATE_SHARE, tries: TRIES })
    }

    /// The parts' own latents for the first `private_share` of `total` steps, each the shared
    /// `latents` in its view, each with a fresh sampler from `sampler`; `None` for no such step.
    /// When they run to the end, a part with looks also draws `tries - 1` times from fresh noise
    /// (`noise()`, scaled as the sampler's first latents).
    pub fn private_views(
        &self,
        latents: &Tensor<4>,
        total: usize,
        sampler: &dyn Fn() -> Result<Box<dyn Scheduler>>,
        noise: &mut dyn FnMut() -> Tensor<4>,
    ) -> Result<Option<PrivateViews>> {
        let steps = (self.private_share.clamp(0.0, 1.0) * total as f32).round() as usize;
        if steps == 0 {
            return Ok(None);
        }
        let last = steps == total;
        let extra = |p: &Part| if last && !p.looks.is_empty() { self.tries.saturating_sub(1) } else { 0 };
        let latents = self.parts.iter().map(|p| Tensor::cat(std::iter::once(roll(latents.clone(), p.shift)).chain((0..extra(p)).map(|_| noise())).collect(), 0)).collect();
        let schedulers = self.parts.iter().map(|_| sampler()).collect::<Result<_>>()?;
        Ok(Some(PrivateViews { latents, schedulers, steps, last }))
    }

    /// Step `i` of every part on its own latents (`guide` turns a UNet output into the guided
    /// prediction, `noise` is the step's noise in image coordinates). Returns the regions' blend
    /// of the guided predictions (for the shared sampler's history) and of the parts' new latents
    /// (the image so far; equal to the shared sampler's step on the first for DDIM and Euler,
    /// which are linear in the prediction).
    pub fn step_private(
        &self,
        views: &mut PrivateViews,
        i: usize,
        t: f32,
        context: &Tensor<3>,
        guide: &dyn Fn(Tensor<4>) -> Tensor<4>,
        noise: Option<&Tensor<4>>,
    ) -> Result<(Tensor<4>, Tensor<4>)> {
        let (mut prediction, mut image) = (first(&views.latents[0]).zeros_like(), first(&views.latents[0]).zeros_like());
        for (k, part) in self.parts.iter().enumerate() {
            let noise = noise.map(|n| roll(n.clone(), part.shift));
            let guided;
            (views.latents[k], guided) = part.denoise(views.latents[k].clone(), views.schedulers[k].as_mut(), i, t, context, guide, noise)?;
            let mask = part.mask.clone().cast(guided.dtype());
            prediction = prediction + unroll(first(&guided), part.shift) * mask.clone();
            image = image + unroll(first(&views.latents[k]), part.shift) * mask;
        }
        Ok((prediction, image))
    }

    /// Every part's drawings when there is a choice to make: after the last step, the batch of
    /// each part that drew more than once (`[n, c, h, w]`, its first drawing first), in part
    /// order; the caller decodes them, reads them back and hands their pixels to
    /// [`Composer::choose`].
    pub fn to_choose(&self, views: &PrivateViews, done: usize) -> Option<Vec<Tensor<4>>> {
        let batches: Vec<Tensor<4>> = views.latents.iter().filter(|l| l.dims()[0] > 1).cloned().collect();
        (views.last && done >= views.steps && !batches.is_empty()).then_some(batches)
    }

    /// Keeps each part's drawing whose subject best matches its concept's looks, given
    /// [`Composer::to_choose`]'s drawings decoded to interleaved RGB (`width` x `height`, one per
    /// drawing, in its order); returns the image blended from the kept drawings. Once: the other
    /// drawings are dropped.
    pub fn choose(&self, views: &mut PrivateViews, drawings: &[Vec<u8>], width: usize, height: usize) -> Tensor<4> {
        let mut at = 0;
        for (part, latents) in self.parts.iter().zip(views.latents.iter_mut()) {
            let n = latents.dims()[0];
            if n < 2 {
                continue;
            }
            let best = drawings.get(at..at + n).map_or(0, |mine| best_drawing(mine, width, height, &part.looks));
            at += n;
            *latents = latents.clone().narrow(0, best, 1);
        }
        self.blend(&views.latents)
    }

    /// The image from the parts' latents (each in its view; a part's first drawing, unless
    /// [`Composer::choose`] kept another): each region from its part.
    fn blend(&self, latents: &[Tensor<4>]) -> Tensor<4> {
        let mut image = first(&latents[0]).zeros_like();
        for (part, own) in self.parts.iter().zip(latents) {
            let own = first(own);
            let mask = part.mask.clone().cast(own.dtype());
            image = image + unroll(own, part.shift) * mask;
        }
        image
    }

    /// The parts' finished latents when their objects may still move apart ([`settle`]): the
    /// views ran every step, and there are two. The caller reads them back (asynchronously where
    /// the device cannot block, as WebGPU) and hands their values to [`Composer::settled`].
    pub fn to_settle(&self, views: &PrivateViews, done: usize) -> Option<Vec<Tensor<4>>> {
        (views.last && done >= views.steps && self.parts.len() == 2).then(|| firsts(views))
    }

    /// The image with the two objects moved apart, from [`Composer::to_settle`]'s latents and
    /// their values read back; `None` when no object is found or nothing is to settle.
    pub fn settled(&self, views: &PrivateViews, values: &[Vec<f32>]) -> Option<Tensor<4>> {
        settle::settled(&self.parts, &self.clauses, &firsts(views), values)
    }

    /// The noise prediction for `input` (`[2, c, h, w]`: negative then prompt under guidance,
    /// `[1, ...]` without; `context` the same batch): in each region, its concept's model on its
    /// clause and its shifted view (the negative prompt's encoding is shared; each part's own
    /// block predicts its negative half too, as routed generation does). Guidance is linear, so
    /// blending the unguided halves by the same weights equals blending the guided predictions.
    /// (Taking the negative half from the model without blocks instead composed 0 of 32 pairs:
    /// guidance then multiplies each block's whole drift.)
    pub fn predict(&self, input: Tensor<4>, t: f32, context: &Tensor<3>) -> Tensor<4> {
        let mut result = input.zeros_like();
        for part in &self.parts {
            let own = unroll(part.unet.forward(roll(input.clone(), part.shift), t, &part_context(context, &part.cond, 1)), part.shift);
            result = result + own * part.mask.clone().cast(input.dtype());
        }
        result
    }
}

impl Part {
    /// One sampler step of `latents` (this part's view; a batch of its drawings) with its block
    /// on its clause: the new latents and the guided prediction. Every drawing takes the step's
    /// `noise` (drawn for one).
    #[allow(clippy::too_many_arguments)]
    fn denoise(
        &self,
        latents: Tensor<4>,
        scheduler: &mut dyn Scheduler,
        i: usize,
        t: f32,
        context: &Tensor<3>,
        guide: &dyn Fn(Tensor<4>) -> Tensor<4>,
        noise: Option<Tensor<4>>,
    ) -> Result<(Tensor<4>, Tensor<4>)> {
        let n = latents.dims()[0];
        let input = if context.dims()[0] == 2 { Tensor::cat(vec![latents.clone(), latents.clone()], 0) } else { latents.clone() };
        let guided = guide(self.unet.forward(scheduler.scale_model_input(input, i), t, &part_context(context, &self.cond, n)));
        let noise = noise.map(|x| if n > 1 { x.repeat_dim(0, n) } else { x });
        Ok((scheduler.step(guided.clone(), i, latents, noise)?, guided))
    }
}

/// A part's text batch for `n` drawings: the shared negative prompt's encoding under guidance
/// (`n` times), then its clause's (`n` times), as [`Part::denoise`] stacks its input.
fn part_context(context: &Tensor<3>, cond: &Tensor<3>, n: usize) -> Tensor<3> {
    let cond = cond.clone().repeat_dim(0, n);
    if context.dims()[0] == 2 {
        Tensor::cat(vec![context.clone().narrow(0, 0, 1).repeat_dim(0, n), cond], 0)
    } else {
        cond
    }
}

/// The first drawing of a part's batch (the kept one once [`Composer::choose`] ran).
fn first(latents: &Tensor<4>) -> Tensor<4> {
    latents.clone().narrow(0, 0, 1)
}

/// Each part's first (or kept) drawing.
fn firsts(views: &PrivateViews) -> Vec<Tensor<4>> {
    views.latents.iter().map(first).collect()
}

/// Image coordinates -> a part's view (its region's centre at the image's centre).
fn roll(x: Tensor<4>, [dy, dx]: [isize; 2]) -> Tensor<4> {
    x.roll_dim(dy, 2).roll_dim(dx, 3)
}

/// A part's view -> image coordinates.
fn unroll(x: Tensor<4>, [dy, dx]: [isize; 2]) -> Tensor<4> {
    x.roll_dim(-dy, 2).roll_dim(-dx, 3)
}
