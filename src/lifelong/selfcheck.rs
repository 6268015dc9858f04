//! A lesson's self-check: how much the model's own samples of the new concept look like the
//! pictures it was taught from. A lesson's outcome swings with its length (the same concept,
//! taught 200, 300 or 400 steps, came out in widely different shares of its probes, in no
//! steady order: README, "Lessons"), so a lesson keeps a few candidate states along its second
//! half and the learner keeps the one whose samples match the pictures best.
//!
//! The match needs no labels and no knowledge of the shapes world: each picture's subject is
//! what differs from its border colour; its silhouette is compared centred on its centroid and
//! scaled to a fixed spread (where and how large the subject is do not count, its outline and
//! its colour do), the way a person compares a sample with the pictures at a glance.

use burn::prelude::*;

use super::adapter::Adapter;
use crate::error::Result;
use crate::loader::LoadedModel;
use crate::pipeline::{image_to_rgb8, GenerateOptions, Pipeline};

/// Side of the normalised silhouette grid.
const GRID: usize = 24;
/// The subject's root-mean-square radius, in grid cells, after normalisation.
const SPREAD: f32 = 5.0;
/// A pixel farther than this (RGB, 0-255) from the background colour belongs to the subject.
const SUBJECT_DISTANCE: f32 = 48.0;
/// A subject needs at least this share of the picture's pixels to be compared at all.
const MIN_SUBJECT_SHARE: f32 = 0.004;
/// Colour distance (RGB) at which the colour factor of the similarity has fallen to 1/e.
const COLOR_SCALE: f32 = 60.0;

/// A picture's subject: its normalised silhouette and its mean colour.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    mask: Vec<f32>,
    color: [f32; 3],
}

/// Values in a stored signature ([`Signature::to_values`]): the silhouette grid, then the colour.
pub const SIGNATURE_LEN: usize = GRID * GRID + 3;

impl Signature {
    /// The signature as [`SIGNATURE_LEN`] numbers, for a concept's looks in the store.
    pub fn to_values(&self) -> Vec<f32> {
        self.mask.iter().copied().chain(self.color).collect()
    }

    /// The inverse of [`Self::to_values`]; `None` unless `values` has [`SIGNATURE_LEN`] finite
    /// numbers, the silhouette's in [0, 1] and the colour's in [0, 255] (a damaged store's
    /// values are refused, not compared).
    pub fn from_values(values: &[f32]) -> Option<Self> {
        let ok = values.len() == SIGNATURE_LEN && values.iter().all(|v| v.is_finite());
        let (mask, color) = values.split_at(values.len().min(GRID * GRID));
        let ok = ok && mask.iter().all(|m| (0.0..=1.0).contains(m)) && color.iter().all(|c| (0.0..=255.0).contains(c));
        ok.then(|| Self { mask: mask.to_vec(), color: [color[0], color[1], color[2]] })
    }
}

/// The signature of an interleaved RGB picture `width` x `height`, or `None` when no subject
/// stands out from the background (an empty or washed-out sample).
pub fn signature(rgb: &[u8], width: usize, height: usize) -> Option<Signature> {
    let n = width * height;
    if n == 0 || rgb.len() < 3 * n {
        return None;
    }
    let px = |i: usize| [rgb[3 * i] as f32, rgb[3 * i + 1] as f32, rgb[3 * i + 2] as f32];
    let background = border_median(width, height, &px);
    let subject: Vec<usize> = (0..n).filter(|&i| distance(px(i), background) > SUBJECT_DISTANCE).collect();
    if (subject.len() as f32) < MIN_SUBJECT_SHARE * n as f32 {
        return None;
    }
    let count = subject.len() as f32;
    let (cx, cy) = subject.iter().fold((0.0, 0.0), |(x, y), &i| (x + (i % width) as f32, y + (i / width) as f32));
    let (cx, cy) = (cx / count, cy / count);
    let radius = (subject.iter().map(|&i| ((i % width) as f32 - cx).powi(2) + ((i / width) as f32 - cy).powi(2)).sum::<f32>() / count).sqrt().max(0.5);
    // Each subject pixel lands in the grid cell its normalised position falls in; the cell's
    // value is the share of the pixels it would hold if the subject were solid (capped at 1).
    let scale = SPREAD / radius;
    let mut mask = vec![0.0f32; GRID * GRID];
    let half = GRID as f32 / 2.0;
    for &i in &subject {
        let gx = ((i % width) as f32 - cx) * scale + half;
        let gy = ((i / width) as f32 - cy) * scale + half;
        if gx >= 0.0 && gy >= 0.0 && (gx as usize) < GRID && (gy as usize) < GRID {
            mask[gy as usize * GRID + gx as usize] += scale * scale;
        }
    }
    mask.iter_mut().for_each(|m| *m = m.min(1.0));
    let mut color = [0.0f32; 3];
    for &i in &subject {
        let p = px(i);
        (0..3).for_each(|c| color[c] += p[c] / count);
    }
    Some(Signature { mask, color })
}

/// Similarity in [0, 1]: soft IoU of the silhouettes times a factor for how close the colours are.
pub fn similarity(a: &Signature, b: &Signature) -> f32 {
    let (inter, union) = a.mask.iter().zip(&b.mask).fold((0.0, 0.0), |(i, u), (x, y)| (i + x.min(*y), u + x.max(*y)));
    let iou = if union > 0.0 { inter / union } else { 0.0 };
    iou * (-distance(a.color, b.color) / COLOR_SCALE).exp()
}

/// How well `samples` (signatures of generated pictures; `None` for a sample with no subject)
/// match the taught pictures: each sample's best similarity to any of them, averaged.
pub fn match_score(samples: &[Option<Signature>], taught: &[Signature]) -> f32 {
    if samples.is_empty() || taught.is_empty() {
        return 0.0;
    }
    let best = |s: &Signature| taught.iter().map(|t| similarity(s, t)).fold(0.0, f32::max);
    samples.iter().map(|s| s.as_ref().map_or(0.0, best)).sum::<f32>() / samples.len() as f32
}

/// Of each part's drawings (interleaved RGB, `width` x `height`), the index of the one whose subject
/// best matches `looks` (an earlier drawing wins a tie; the first when `looks` is empty or
/// nothing stands out).
pub fn best_drawing(drawings: &[Vec<u8>], width: usize, height: usize, looks: &[Signature]) -> usize {
    let scores: Vec<f32> = drawings.iter().map(|rgb| match_score(&[signature(rgb, width, height)], looks)).collect();
    scores.iter().enumerate().fold(0, |best, (i, s)| if *s > scores[best] { i } else { best })
}

/// How a lesson's candidates are sampled: the teaching pictures' prompts, one sample each.
#[derive(Debug, Clone)]
pub struct SampleOptions {
    pub steps: usize,
    pub guidance: f32,
    pub seed: u64,
}

/// Of a lesson's `candidates` ((step, [`Adapter::params`]) of `adapter`), the step whose samples
/// of `prompts`, drawn on `base` with that state installed, best match `taught` (a later step
/// wins a tie), with the scores in step order. `adapter` is the lesson's own (a routed or merged
/// lesson's fresh block), so a candidate's samples show the new concept alone.
pub fn best_candidate(
    base: &LoadedModel,
    device: &Device,
    adapter: &Adapter,
    candidates: &[(usize, Vec<Tensor<2>>)],
    prompts: &[String],
    taught: &[Signature],
    options: &SampleOptions,
) -> Result<(usize, Vec<f32>)> {
    let mut scores = Vec::with_capacity(candidates.len());
    for (_, params) in candidates {
        let mut state = adapter.clone();
        state.set_params(params.clone());
        let mut model = base.clone();
        state.install(&mut model)?;
        let pipeline = Pipeline::new(model, device.clone());
        let [h, w] = pipeline.image_size();
        let mut samples = Vec::with_capacity(prompts.len());
        for (i, prompt) in prompts.iter().enumerate() {
            let opts = GenerateOptions { prompt: prompt.clone(), steps: options.steps, guidance: options.guidance, seed: options.seed.wrapping_add(i as u64), ..Default::default() };
            let rgb = image_to_rgb8(&pipeline.generate(&opts, &mut |_| {})?.image)?;
            samples.push(signature(&rgb, w, h));
        }
        scores.push(match_score(&samples, taught));
    }
    let best = scores.iter().enumerate().fold(0, |best, (i, s)| if *s >= scores[best] { i } else { best });
    Ok((candidates.get(best).map_or(0, |c| c.0), scores))
}

pub(super) fn distance(a: [f32; 3], b: [f32; 3]) -> f32 {
    a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum::<f32>().sqrt()
}

/// The per-channel median of the picture's outermost pixels: the background the subject stands on.
pub(super) fn border_median(width: usize, height: usize, px: &dyn Fn(usize) -> [f32; 3]) -> [f32; 3] {
    let border: Vec<usize> = (0..width * height).filter(|&i| i % width == 0 || i % width == width - 1 || i / width == 0 || i / width == height - 1).collect();
    let mut out = [0.0; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let mut v: Vec<f32> = border.iter().map(|&i| px(i)[c]).collect();
        v.sort_by(f32::total_cmp);
        *o = v[v.len() / 2];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `size`-pixel picture on `bg` with the pixels where `inside(x, y)` holds in `fg`.
    fn picture(size: usize, bg: [u8; 3], fg: [u8; 3], inside: impl Fn(f32, f32) -> bool) -> Vec<u8> {
        (0..size * size).flat_map(|i| if inside((i % size) as f32, (i / size) as f32) { fg } else { bg }).collect()
    }

    fn tee(x0: f32, y0: f32, s: f32) -> impl Fn(f32, f32) -> bool {
        move |x, y| {
            let (u, v) = ((x - x0) / s, (y - y0) / s);
            (0.0..3.0).contains(&u) && (0.0..1.0).contains(&v) || (1.0..2.0).contains(&u) && (1.0..3.0).contains(&v)
        }
    }

    #[test]
    fn place_size_and_background_do_not_count_outline_and_colour_do() {
        let pink = [230, 100, 170];
        let small = signature(&picture(64, [200, 230, 250], pink, tee(5.0, 8.0, 4.0)), 64, 64).unwrap();
        let large = signature(&picture(64, [40, 40, 80], pink, tee(20.0, 20.0, 9.0)), 64, 64).unwrap();
        let square = signature(&picture(64, [40, 40, 80], pink, |x, y| (20.0..47.0).contains(&x) && (20.0..47.0).contains(&y)), 64, 64).unwrap();
        let yellow = signature(&picture(64, [40, 40, 80], [240, 220, 40], tee(20.0, 20.0, 9.0)), 64, 64).unwrap();
        let same = similarity(&small, &large);
        assert!(same > 0.6, "the same tee small on sky and large on night: {same}");
        assert!(similarity(&large, &square) < same - 0.15, "a square is not a tee: {} vs {same}", similarity(&large, &square));
        assert!(similarity(&large, &yellow) < 0.3 * same, "a yellow tee is not the pink one: {}", similarity(&large, &yellow));
    }

    #[test]
    fn a_sample_without_a_subject_scores_nothing() {
        let blank = picture(64, [90, 90, 90], [90, 90, 90], |_, _| false);
        assert_eq!(signature(&blank, 64, 64), None);
        let taught = signature(&picture(64, [0, 0, 0], [250, 250, 250], tee(10.0, 10.0, 6.0)), 64, 64).unwrap();
        assert_eq!(match_score(&[None, None], std::slice::from_ref(&taught)), 0.0);
        let half = match_score(&[None, Some(taught.clone())], std::slice::from_ref(&taught));
        assert!((half - 0.5).abs() < 1e-6, "{half}");
        assert_eq!(signature(&[1, 2], 64, 64), None, "too few bytes is no picture");
    }

    #[test]
    fn a_stored_signature_comes_back_equal_and_a_damaged_one_is_refused() {
        let tee = signature(&picture(64, [40, 40, 80], [230, 100, 170], tee(20.0, 20.0, 9.0)), 64, 64).unwrap();
        let values = tee.to_values();
        assert_eq!(values.len(), SIGNATURE_LEN);
        assert_eq!(Signature::from_values(&values), Some(tee));
        assert_eq!(Signature::from_values(&values[1..]), None, "too short");
        let mut nan = values.clone();
        nan[3] = f32::NAN;
        assert_eq!(Signature::from_values(&nan), None);
        let mut out_of_range = values;
        out_of_range[0] = 7.0;
        assert_eq!(Signature::from_values(&out_of_range), None);
    }

    #[test]
    fn the_drawing_that_matches_the_looks_is_kept() {
        let pink = [230, 100, 170];
        let looks = [signature(&picture(64, [200, 230, 250], pink, tee(5.0, 8.0, 4.0)), 64, 64).unwrap()];
        let square = picture(64, [40, 40, 80], pink, |x, y| (20.0..47.0).contains(&x) && (20.0..47.0).contains(&y));
        let blank = picture(64, [90, 90, 90], [90, 90, 90], |_, _| false);
        let a_tee = picture(64, [40, 40, 80], pink, tee(30.0, 12.0, 7.0));
        assert_eq!(best_drawing(&[square.clone(), blank.clone(), a_tee.clone()], 64, 64, &looks), 2);
        assert_eq!(best_drawing(&[a_tee.clone(), square.clone()], 64, 64, &looks), 0);
        assert_eq!(best_drawing(&[square, a_tee], 64, 64, &[]), 0, "no looks: the first drawing");
        assert_eq!(best_drawing(&[blank.clone(), blank], 64, 64, &looks), 0, "a tie keeps the first");
    }
}
