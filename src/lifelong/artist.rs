//! Concept attention artist (CAA, L2DM: Sun et al. 2023, sec. "Concept Attention Artist") and the
//! generation-time orthogonal-attention edit (OA): for prompts with two or more subjects, the
//! first denoising steps move the latents down the gradient of a loss on the UNet's
//! cross-attention maps, as Attend-and-Excite (Chefer et al. 2023; diffusers'
//! pipeline_stable_diffusion_attend_and_excite.py) does:
//! - attend: every subject token reaches a minimum peak of its smoothed map (A&E `_compute_loss`);
//! - unmix: different subjects' masks must not overlap (L2DM's concept-level anti-mixing);
//! - bind: an attribute word ("red") attends where its noun does, not where the other nouns do.
//!
//! The gradient runs on the autodiff twin of the pipeline's device: only the latents are moved
//! there (`Tensor::autodiff`); the model's weights stay where they are and enter the graph as
//! constants (burn treats a tensor without autodiff as a constant when combined with one that
//! has it), so nothing is copied or reloaded. Under autodiff the attention's tensor-op twin
//! runs (src/kernels/attention.rs), so the maps are differentiable w.r.t. the latents.

use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

use crate::error::{Error, Result};
use crate::model::attention::{AttnHook, CrossMap};
use crate::model::unet::UNet2DConditionModel;
use crate::world::vocab::{Color, Shape, Size};

/// Settings; `Default` follows A&E's except where noted.
#[derive(Debug, Clone)]
pub struct AttendOptions {
    /// Fraction of the steps whose latents are updated. A&E updates 25 of 50 steps
    /// (`max_iter_to_alter`); we default to the first quarter (issue 5: "the first steps").
    pub alter_fraction: f32,
    /// Iterative refinement `(position, threshold)`: at the step `position` (a fraction of the
    /// altered steps) the attend loss is driven below `1 - threshold`. A&E's
    /// `{0: 0.05, 10: 0.5, 20: 0.8}` of its 25 altered steps.
    pub thresholds: Vec<(f32, f32)>,
    /// Step size `scale_factor * sqrt(linspace(scale_range)[i])` (A&E: 20, (1.0, 0.5)).
    pub scale_factor: f32,
    pub scale_range: (f32, f32),
    /// Most refinement iterations per threshold step (A&E `max_refinement_steps`: 20).
    pub max_refinement_steps: usize,
    /// Weights of the unmix (CAA) and binding (OA) losses next to the attend loss.
    pub unmix_weight: f32,
    pub bind_weight: f32,
    /// Gaussian smoothing of the maps before taking peaks (A&E: kernel 3, sigma 0.5).
    pub sigma: f32,
    /// The attention grid to read; `None`: see [`default_grid`].
    pub grid: Option<[usize; 2]>,
    /// Off below this many subject nouns.
    pub min_subjects: usize,
}

impl Default for AttendOptions {
    fn default() -> Self {
        Self {
            alter_fraction: 0.25,
            thresholds: vec![(0.0, 0.05), (0.4, 0.5), (0.8, 0.8)],
            scale_factor: 20.0,
            scale_range: (1.0, 0.5),
            max_refinement_steps: 20,
            unmix_weight: 1.0,
            bind_weight: 1.0,
            sigma: 0.5,
            grid: None,
            min_subjects: 2,
        }
    }
}

/// Token positions (in the 77-token context; 0 is bos) of a prompt's subjects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subjects {
    /// Nouns: world shape words (singular or plural) and `<concept>` tokens.
    pub nouns: Vec<usize>,
    /// `(attribute position, index into nouns)`: colour and size words bound to the next noun.
    pub attributes: Vec<(usize, usize)>,
}

/// Finds the subjects in `tokens` as [`crate::tokenizer::ClipTokenizer::tokens`] spells them.
/// Attributes bind to the following noun when only attributes lie between (A&E picks indices by
/// hand; the world's captions are regular enough to find them).
pub fn find_subjects(tokens: &[String]) -> Subjects {
    let is_concept = |t: &str| t.starts_with('<') && t.ends_with('>') && !t.starts_with("<|") && t.len() > 2;
    let is_noun = |t: &str| Shape::from_name(t).is_some() || Shape::from_plural(t).is_some() || is_concept(t);
    let is_attr = |t: &str| Color::from_name(t).is_some() || Size::from_name(t).is_some();
    let mut out = Subjects::default();
    let mut pending = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let t = token.as_str();
        if is_noun(t) {
            let noun = out.nouns.len();
            out.nouns.push(i);
            out.attributes.extend(pending.drain(..).map(|a| (a, noun)));
        } else if is_attr(t) {
            pending.push(i);
        } else {
            pending.clear();
        }
    }
    out
}

/// The grid to read for a latent of `latent` given the model's attention grids: the largest
/// whose side is at most `max(latent / 4, 8)`, else the coarsest. A&E reads SD's 16x16 maps of a
/// 64x64 latent (latent / 4: coarse enough to carry semantics, fine enough to locate objects);
/// the built-in model's 16x16 latent has 16, 8 and 4 grids, and 4x4 cannot tell a small object's
/// place (a 14 px object covers less than one cell), so 8x8 is read there.
pub fn default_grid(latent: [usize; 2], grids: &[[usize; 2]]) -> Option<[usize; 2]> {
    let limit = (latent[0] / 4).max(8);
    let fits = grids.iter().filter(|g| g[0] <= limit).max_by_key(|g| g[0] * g[1]);
    fits.or_else(|| grids.iter().min_by_key(|g| g[0] * g[1])).copied()
}

/// Mean of the maps at `grid` over layers, of the prompt's own batch item: the last one (the only
/// one when the UNet ran on the prompt alone, as A&E's `aggregate_attention`; after the negative
/// prompt under guidance). The heads are averaged already. `[h*w, m]`.
pub fn aggregate(maps: &[CrossMap], grid: [usize; 2]) -> Option<Tensor<2>> {
    let last = |m: &CrossMap| m.probs.dims()[0] - 1;
    let picked: Vec<Tensor<2>> = maps.iter().filter(|m| m.grid == grid).map(|m| m.probs.clone().narrow(0, last(m), 1).squeeze_dim(0)).collect();
    let n = picked.len();
    (n > 0).then(|| Tensor::stack::<3>(picked, 0).sum_dim(0).squeeze_dim::<2>(0).div_scalar(n as f32))
}

/// Per-token maps `[end - 1, h, w]` for tokens `1..end` (row `i - 1` is token `i`): A&E
/// `_compute_max_attention_per_index` drops bos, scales by 100 and re-normalises over the text
/// tokens with a softmax, then smooths each map (kernel 3, reflect padding).
pub fn token_maps(aggregated: Tensor<2>, grid: [usize; 2], end: usize, sigma: f32) -> Tensor<3> {
    let k = end - 1;
    let text = softmax(aggregated.narrow(1, 1, k).mul_scalar(100.0), 1);
    smooth(text.swap_dims(0, 1).reshape([k, grid[0], grid[1]]), sigma)
}

/// 3x3 Gaussian smoothing with reflect padding (A&E's GaussianSmoothing, whose kernel is
/// `exp(-((x - mean) / (2 sigma))^2)` normalised to sum 1). Maps narrower than 2 pass unchanged.
pub fn smooth(maps: Tensor<3>, sigma: f32) -> Tensor<3> {
    let [k, h, w] = maps.dims();
    if h < 2 || w < 2 || sigma <= 0.0 {
        return maps;
    }
    let g: Vec<f32> = [-1f32, 0.0, 1.0].iter().map(|x| (-(x / (2.0 * sigma)).powi(2)).exp()).collect();
    let norm: f32 = g.iter().sum::<f32>().powi(2);
    let kernel: Vec<f32> = (0..9).map(|i| g[i / 3] * g[i % 3] / norm).collect();
    let device = maps.device();
    let weight = Tensor::<4>::from_data(TensorData::new(kernel, [1, 1, 3, 3]), &device).cast(maps.dtype());
    let reflect = |t: Tensor<3>, dim: usize, n: usize| {
        Tensor::cat(vec![t.clone().narrow(dim, 1, 1), t.clone(), t.narrow(dim, n - 2, 1)], dim)
    };
    let padded = reflect(reflect(maps, 1, h), 2, w).reshape([k, 1, h + 2, w + 2]);
    conv2d(padded, weight, None, ConvOptions::new([1, 1], [0, 0], [1, 1], 1)).reshape([k, h, w])
}

/// Rows of `maps` `[k, h, w]` at `rows` -> `[rows.len(), h * w]`.
fn pick(maps: &Tensor<3>, rows: &[usize]) -> Tensor<2> {
    let [_, h, w] = maps.dims();
    let picked: Vec<Tensor<2>> = rows.iter().map(|&r| maps.clone().narrow(0, r, 1).reshape([1, h * w])).collect();
    Tensor::cat(picked, 0)
}

/// A&E `_compute_loss`: `max_i max(0, 1 - peak_i)` over the peaks `[k]` `->` `[1]`.
pub fn attend_loss(peaks: Tensor<1>) -> Tensor<1> {
    peaks.neg().add_scalar(1.0).clamp_min(0.0).max()
}

/// Elementwise min and max of two equally shaped tensors, from `|a - b|` (plain ops autodiff has).
fn min_max(a: Tensor<2>, b: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
    let (sum, gap) = (a.clone() + b.clone(), (a - b).abs());
    ((sum.clone() - gap.clone()).div_scalar(2.0), (sum + gap).div_scalar(2.0))
}

/// Concept-level unmix loss (L2DM CAA, mask-based): each noun map `[k, n]` is normalised by its
/// max and masked where it is at least its mean (the mask is a constant; the values keep their
/// gradient); the loss is the mean over pairs of the masked maps' soft IoU
/// `sum(min) / sum(max)`: 0 for disjoint masks, 1 for identical ones.
pub fn unmix_loss(nouns: Tensor<2>) -> Tensor<1> {
    let k = nouns.dims()[0];
    let device = nouns.device();
    let normed = nouns.clone() / nouns.max_dim(1).clamp_min(1e-12);
    let mask = normed.clone().greater_equal(normed.clone().mean_dim(1)).float().detach();
    let masked = normed * mask;
    let mut total = Tensor::<1>::zeros([1], &device);
    let mut pairs = 0;
    for i in 0..k {
        for j in i + 1..k {
            let (lo, hi) = min_max(masked.clone().narrow(0, i, 1), masked.clone().narrow(0, j, 1));
            total = total + lo.sum() / hi.sum().clamp_min(1e-12);
            pairs += 1;
        }
    }
    if pairs == 0 {
        total
    } else {
        total.div_scalar(pairs as f32)
    }
}

/// Cosine similarity of two rows `[1, n]` -> `[1]`.
fn cosine(a: Tensor<2>, b: Tensor<2>) -> Tensor<1> {
    let dot = (a.clone() * b.clone()).sum();
    dot / ((a.powi_scalar(2).sum() * b.powi_scalar(2).sum()).sqrt().clamp_min(1e-12))
}

/// Attribute binding loss (OA at generation): for each attribute map, `1 - cos(attr, own noun)`
/// plus the mean `cos(attr, other noun)`, averaged over attributes; 0 without attributes.
/// attrs: `[a, n]`, nouns: `[k, n]`, owners: the noun index of each attribute.
pub fn bind_loss(attrs: Tensor<2>, nouns: Tensor<2>, owners: &[usize]) -> Tensor<1> {
    let k = nouns.dims()[0];
    let mut total = Tensor::<1>::zeros([1], &nouns.device());
    for (a, &own) in owners.iter().enumerate() {
        let attr = attrs.clone().narrow(0, a, 1);
        total = total + cosine(attr.clone(), nouns.clone().narrow(0, own, 1)).neg().add_scalar(1.0);
        let others: Vec<usize> = (0..k).filter(|&j| j != own).collect();
        for &j in &others {
            total = total + cosine(attr.clone(), nouns.clone().narrow(0, j, 1)).div_scalar(others.len() as f32);
        }
    }
    if owners.is_empty() {
        total
    } else {
        total.div_scalar(owners.len() as f32)
    }
}

/// The loss of one UNet pass, and its attend part as a number (for the refinement thresholds).
pub struct ArtistLoss {
    pub total: Tensor<1>,
    pub attend: f32,
    pub unmix: f32,
    pub bind: f32,
}

/// Everything the artist needs for one prompt: which tokens, which grid, which steps.
#[derive(Debug, Clone)]
pub struct Artist {
    pub options: AttendOptions,
    pub subjects: Subjects,
    pub grid: [usize; 2],
    /// Softmax over text tokens `1..text_end`: the prompt's own words, bos, eos and padding
    /// left out (A&E's `normalize_eot`, its SD-2 setting). A&E's SD-1 setting (all but bos and
    /// the last position) leaves the built-in model's subject peaks near 1/75: its attention
    /// spreads over the ~65 padding tokens, and the attend loss neither moves nor guides.
    pub text_end: usize,
    /// Steps `0..alter_steps` are updated.
    pub alter_steps: usize,
    /// Refinement `(step index, threshold)`.
    pub thresholds: Vec<(usize, f32)>,
    /// Step sizes, one per step.
    pub step_sizes: Vec<f32>,
}

impl Artist {
    /// `None` when the prompt has fewer than `min_subjects` nouns (the generation then runs
    /// exactly as without the artist). Errors on a grid the model does not have.
    pub fn plan(options: &AttendOptions, tokens: &[String], context_len: usize, steps: usize, unet: &UNet2DConditionModel, latent: [usize; 2]) -> Result<Option<Self>> {
        let subjects = find_subjects(tokens);
        let alter_steps = ((steps as f32 * options.alter_fraction.clamp(0.0, 1.0)).round() as usize).min(steps);
        let in_text = subjects.nouns.iter().chain(subjects.attributes.iter().map(|(a, _)| a)).all(|&i| i + 1 < context_len);
        if subjects.nouns.len() < options.min_subjects.max(1) || alter_steps == 0 || !in_text {
            return Ok(None);
        }
        let grids = unet.attention_grids(latent);
        let grid = match options.grid {
            Some(g) if grids.contains(&g) => g,
            Some(g) => return Err(Error::InvalidInput(format!("attend: the model has no cross-attention at grid {g:?}; it has {grids:?}"))),
            None => default_grid(latent, &grids).ok_or_else(|| Error::InvalidInput("attend: the model has no cross-attention".into()))?,
        };
        let thresholds = options.thresholds.iter().map(|&(at, th)| (((at * alter_steps as f32).round() as usize).min(steps - 1), th)).collect();
        let (a, b) = options.scale_range;
        let step_sizes = (0..steps)
            .map(|i| {
                let f = if steps > 1 { i as f32 / (steps - 1) as f32 } else { 0.0 };
                options.scale_factor * (a + (b - a) * f).max(0.0).sqrt()
            })
            .collect();
        let text_end = tokens.len().min(context_len) - 1;
        Ok(Some(Self { options: options.clone(), subjects, grid, text_end, alter_steps, thresholds, step_sizes }))
    }

    /// Whether step `i` runs the artist.
    pub fn active(&self, i: usize) -> bool {
        i < self.alter_steps || self.thresholds.iter().any(|&(at, _)| at == i)
    }

    /// The artist's loss for model input `z` `[1, c, h, w]` at timestep `t` and the prompt's
    /// own text `cond` `[1, 77, d]` (A&E runs the UNet on the conditional text only).
    pub fn loss(&self, unet: &UNet2DConditionModel, z: Tensor<4>, t: f32, cond: &Tensor<3>) -> Result<ArtistLoss> {
        let (_, maps) = unet.forward_with_maps(z, t, cond, &AttnHook::at(&[self.grid]));
        let aggregated = aggregate(&maps, self.grid).ok_or_else(|| Error::InvalidInput(format!("attend: no map at grid {:?}", self.grid)))?;
        let maps = token_maps(aggregated, self.grid, self.text_end, self.options.sigma);
        let rows = |ids: &[usize]| ids.iter().map(|&i| i - 1).collect::<Vec<_>>();
        let nouns = pick(&maps, &rows(&self.subjects.nouns));
        let attend = attend_loss(nouns.clone().max_dim(1).squeeze_dim(1));
        let unmix = unmix_loss(nouns.clone());
        let attr_ids: Vec<usize> = self.subjects.attributes.iter().map(|&(a, _)| a).collect();
        let owners: Vec<usize> = self.subjects.attributes.iter().map(|&(_, n)| n).collect();
        let bind = if owners.is_empty() { Tensor::zeros([1], &nouns.device()) } else { bind_loss(pick(&maps, &rows(&attr_ids)), nouns, &owners) };
        let value = |t: &Tensor<1>| t.clone().into_scalar::<f32>();
        let (a, u, b) = (value(&attend), value(&unmix), value(&bind));
        let total = attend + unmix.mul_scalar(self.options.unmix_weight) + bind.mul_scalar(self.options.bind_weight);
        Ok(ArtistLoss { total, attend: a, unmix: u, bind: b })
    }
}

/// What the artist did at one step (losses before and at the last refinement iteration).
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    pub step: usize,
    pub attend_before: f32,
    pub attend_after: f32,
    pub unmix_after: f32,
    pub bind_after: f32,
    pub iterations: usize,
}

impl Artist {
    /// The loss at model input `z` (plain device) and its gradient w.r.t. `z` (`None` when the
    /// loss is 0: A&E skips the update then). Only `z` goes to the autodiff device.
    pub fn loss_and_grad(&self, unet: &UNet2DConditionModel, z: Tensor<4>, t: f32, cond: &Tensor<3>) -> Result<(ArtistLoss, Option<Tensor<4>>)> {
        let tracked = z.autodiff().require_grad();
        let loss = self.loss(unet, tracked.clone(), t, cond)?;
        if loss.total.clone().into_scalar::<f32>() <= 0.0 {
            return Ok((loss, None));
        }
        let grads = loss.total.backward();
        let grad = tracked.grad(&grads).map(|g| g.inner());
        Ok((loss, grad))
    }

    /// One step's latent edit (A&E `__call__`: the iterative refinement at threshold steps
    /// (`_perform_iterative_refinement_step`), then one `_update_latent` while `i <
    /// max_iter_to_alter`). `x`: the latents `[1, c, h, w]`; `input_scale`: the scheduler's
    /// model-input scale at this step (1 for DDIM), so the update is taken where the UNet looks,
    /// as A&E's (its DDIM/PNDM latents are the model input).
    pub fn alter(&self, unet: &UNet2DConditionModel, x: Tensor<4>, i: usize, t: f32, input_scale: f32, cond: &Tensor<3>) -> Result<(Tensor<4>, StepReport)> {
        let step = self.step_sizes.get(i).copied().unwrap_or(0.0);
        let mut z = x.mul_scalar(input_scale);
        let (mut loss, mut grad) = self.loss_and_grad(unet, z.clone(), t, cond)?;
        let attend_before = loss.attend;
        let mut iterations = 0;
        if let Some(&(_, threshold)) = self.thresholds.iter().find(|&&(at, _)| at == i) {
            while loss.attend > 1.0 - threshold && iterations < self.options.max_refinement_steps {
                let Some(g) = grad else { break };
                z = z - g.mul_scalar(step);
                (loss, grad) = self.loss_and_grad(unet, z.clone(), t, cond)?;
                iterations += 1;
            }
        }
        if let (true, Some(g)) = (i < self.alter_steps, grad) {
            z = z - g.mul_scalar(step);
        }
        let report = StepReport { step: i, attend_before, attend_after: loss.attend, unmix_after: loss.unmix, bind_after: loss.bind, iterations };
        Ok((z.div_scalar(input_scale), report))
    }
}

#[cfg(test)]
mod tests;
