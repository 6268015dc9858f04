//! `eval world`: generate images for world prompts with a model and score them with the
//! analytic scorer, per category (single / two objects, seen / held-out) and attribute.

use std::collections::BTreeMap;

use burn::prelude::*;

use crate::error::{Error, Result};
use crate::lifelong::artist::AttendOptions;
use crate::lifelong::compose::Composer;
use crate::pipeline::{image_to_rgb8, GenerateOptions, Pipeline};

use super::caption::prompt_at;
use super::render::render;
use super::sample::{item_rng, Split};
use super::scene::{realize, Layout, SceneKind, Spec};
use super::score::{check, Tally, Verdict};

/// How many prompts and how to sample them.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Prompts per category.
    pub n: usize,
    pub steps: usize,
    pub guidance: f32,
    /// Prompt `i` of a category uses world seed `seed` and noise seed `seed + i`.
    pub seed: u64,
    /// Score the model's VAE instead of its generator: render a scene matching each prompt, encode
    /// and decode it, and score the result. This is the ceiling any generation can reach.
    pub reconstruct: bool,
    /// Run the concept attention artist (src/lifelong/artist.rs) on prompts with two or more
    /// subjects; `None`: plain generation.
    pub attend: Option<AttendOptions>,
    /// Orthogonal attention's strength (src/lifelong/orthogonal.rs); 0: the model alone.
    pub orthogonal: f32,
    /// Draw two-object relation prompts as two one-object clauses, each in its region
    /// (src/lifelong/compose.rs, [`Composer::plan_objects`]).
    pub compose: bool,
    /// Which categories to run, in [`CATEGORIES`] order; empty: all four.
    pub categories: Vec<(SceneKind, Split)>,
}

/// One row of the report.
#[derive(Debug, Clone)]
pub struct CategoryResult {
    pub kind: SceneKind,
    pub split: Split,
    pub tally: Tally,
    /// Two-object prompts: both objects with the right colour and shape.
    pub both_objects_right: usize,
    pub n: usize,
    /// Prompts the concept attention artist edited (0 without `attend`).
    pub attended: usize,
    /// Place (one object) or relation (two objects) per phrase asked: (right, asked). A rate per
    /// attribute hides which way a model fails; this showed the built-in model drawing "at the top"
    /// and "at the bottom" at random while it never missed "on the left".
    pub by_phrase: BTreeMap<&'static str, (usize, usize)>,
}

impl CategoryResult {
    /// An empty row for `n` prompts of `kind` from `split`.
    pub fn new(kind: SceneKind, split: Split, n: usize) -> Self {
        CategoryResult { kind, split, tally: Tally::default(), both_objects_right: 0, n, attended: 0, by_phrase: BTreeMap::new() }
    }

    pub fn name(&self) -> String {
        let kind = if self.kind == SceneKind::Single { "single" } else { "two-object" };
        let split = if self.split == Split::Train { "seen" } else { "held-out" };
        format!("{kind}/{split}")
    }

    /// The report row as JSON: rates per attribute (absent when never asked).
    pub fn to_json(&self) -> serde_json::Value {
        let rates = self.tally.rates();
        let mut map = serde_json::Map::new();
        for (name, rate) in Verdict::ATTRIBUTES.iter().zip(rates) {
            if let Some(r) = rate {
                map.insert((*name).into(), serde_json::json!(r));
            }
        }
        if self.kind == SceneKind::Pair {
            map.insert("both_objects".into(), serde_json::json!(self.both_objects_right as f32 / self.n.max(1) as f32));
        }
        let by_phrase: serde_json::Map<_, _> =
            self.by_phrase.iter().map(|(phrase, &(right, asked))| ((*phrase).into(), serde_json::json!(right as f32 / asked.max(1) as f32))).collect();
        serde_json::json!({ "category": self.name(), "n": self.n, "attended": self.attended, "rates": map, "by_phrase": by_phrase })
    }

    /// Counts whether the place or relation `spec` asks for was right.
    fn count_phrase(&mut self, spec: &Spec, verdict: &Verdict) {
        let (phrase, right) = match spec.layout {
            Layout::Single { place: Some(place) } => (place.phrase(), verdict.place),
            Layout::Pair { relation } => (relation.phrase(), verdict.relation),
            _ => return,
        };
        if let Some(right) = right {
            let entry = self.by_phrase.entry(phrase).or_default();
            entry.0 += usize::from(right);
            entry.1 += 1;
        }
    }
}

/// The four categories the built-in model issue measures.
pub const CATEGORIES: [(SceneKind, Split); 4] =
    [(SceneKind::Single, Split::Train), (SceneKind::Single, Split::HeldOut), (SceneKind::Pair, Split::Train), (SceneKind::Pair, Split::HeldOut)];

/// Runs the evaluation; `progress(done, total)` after every image.
pub fn evaluate(pipeline: &Pipeline, options: &EvalOptions, progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<CategoryResult>> {
    if pipeline.image_size() != [super::SIZE, super::SIZE] {
        return Err(Error::InvalidInput(format!(
            "eval world needs a model that draws {0}x{0} images (the shapes world); this one draws {1:?}",
            super::SIZE,
            pipeline.image_size()
        )));
    }
    let categories: Vec<_> = CATEGORIES.iter().copied().filter(|c| options.categories.is_empty() || options.categories.contains(c)).collect();
    let total = options.n * categories.len();
    let mut results = Vec::new();
    for (c, &(kind, split)) in categories.iter().enumerate() {
        let mut result = CategoryResult::new(kind, split, options.n);
        for i in 0..options.n {
            let prompt = prompt_at(options.seed, i as u64, split, kind);
            let image = if options.reconstruct {
                let scene = realize(&prompt.spec, &mut item_rng(options.seed, i as u64, RECONSTRUCT_STREAM))?;
                round_trip(pipeline, &render(&scene))
            } else {
                let generate = GenerateOptions {
                    prompt: prompt.caption,
                    steps: options.steps,
                    guidance: options.guidance,
                    seed: options.seed.wrapping_add(i as u64),
                    orthogonal: options.orthogonal,
                    ..Default::default()
                };
                let [_, h, w] = pipeline.latent_shape();
                let composer = if options.compose { Composer::plan_objects(&pipeline.model, &generate.prompt, [h, w])? } else { None };
                let mut run = pipeline.start_with(&generate, options.attend.as_ref())?;
                run.set_composer(composer)?;
                result.attended += usize::from(run.artist_active());
                while run.step()?.is_some() {}
                run.settle_now()?;
                run.finish().image
            };
            let verdict = check(&image_to_rgb8(&image)?, &prompt.spec)?;
            result.both_objects_right += usize::from(verdict.color && verdict.shape);
            result.tally.add(&verdict);
            result.count_phrase(&prompt.spec, &verdict);
            progress(c * options.n + i + 1, total);
        }
        results.push(result);
    }
    Ok(results)
}

/// An `item_rng` stream apart from the scene and caption streams.
const RECONSTRUCT_STREAM: u64 = 7;

/// Interleaved RGB bytes -> the model's VAE encode + decode -> `[1, 3, h, w]` in [0, 1].
pub fn round_trip(pipeline: &Pipeline, rgb: &[u8]) -> Tensor<4> {
    pipeline.decode(pipeline.encode(crate::pipeline::rgb8_to_image(rgb, super::SIZE, &pipeline.device)))
}

/// A plain-text table of `results`, one row per category, one column per attribute (percent).
pub fn table(results: &[CategoryResult]) -> String {
    let mut out = format!("{:<20}", "category");
    for name in Verdict::ATTRIBUTES.iter().chain(&["both-obj"]) {
        out.push_str(&format!("{name:>11}"));
    }
    out.push('\n');
    for r in results {
        out.push_str(&format!("{:<20}", r.name()));
        for rate in r.tally.rates() {
            out.push_str(&rate.map_or(format!("{:>11}", "-"), |v| format!("{:>10.1}%", v * 100.0)));
        }
        let both = (r.kind == SceneKind::Pair).then(|| r.both_objects_right as f32 / r.n.max(1) as f32);
        out.push_str(&both.map_or(format!("{:>11}", "-"), |v| format!("{:>10.1}%", v * 100.0)));
        out.push('\n');
        if !r.by_phrase.is_empty() {
            let counts: Vec<String> = r.by_phrase.iter().map(|(phrase, (right, asked))| format!("{phrase} {right}/{asked}")).collect();
            out.push_str(&format!("{:<20}{}\n", "", counts.join(", ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_and_relations_are_counted_per_phrase() {
        let mut r = CategoryResult::new(SceneKind::Single, Split::Train, 0);
        let (mut asked, mut expected_right) = (BTreeMap::<&str, usize>::new(), 0);
        for i in 0..40 {
            let single = prompt_at(0, i, Split::Train, SceneKind::Single);
            let pair = prompt_at(0, i, Split::Train, SceneKind::Pair);
            // Every other place right, every relation right.
            for (spec, right) in [(&single.spec, i % 2 == 0), (&pair.spec, true)] {
                let (phrase, verdict) = match spec.layout {
                    Layout::Single { place } => (place.expect("prompts name their place").phrase(), Verdict { place: Some(right), ..Default::default() }),
                    Layout::Pair { relation } => (relation.phrase(), Verdict { relation: Some(right), ..Default::default() }),
                    Layout::Plural => continue,
                };
                r.count_phrase(spec, &verdict);
                *asked.entry(phrase).or_default() += 1;
                expected_right += usize::from(right);
            }
        }
        let counted: BTreeMap<&str, usize> = r.by_phrase.iter().map(|(p, &(_, n))| (*p, n)).collect();
        assert_eq!(counted, asked);
        let right: usize = r.by_phrase.values().map(|&(right, _)| right).sum();
        assert_eq!(right, expected_right, "half the places right, every relation right");
        assert!(table(&[r]).contains("at the top "), "the table lists each phrase");
    }
}
