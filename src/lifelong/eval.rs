//! `eval lifelong`: teach the built-in model the shapes world's novel concepts one after another
//! and measure, with the analytic scorer, what each method keeps (issue 5's table).
//!
//! Per method: concept identification right after each lesson and after the last (forgetting is
//! the drop), two-concept prompts with both concepts present and apart, colour binding on
//! two-object world prompts (two shapes, and one shape in two colours), and lesson times. Native only (it times lessons).

use std::time::Instant;

use burn::prelude::*;

use super::adapter::AdapterConfig;
use super::artist::AttendOptions;
use super::compose::Composer;
use super::learner::{base_prompts, Learner, MemoryOptions, Method, Picture};
use super::lesson::LessonOptions;
use crate::error::{Error, Result};
use crate::loader::LoadedModel;
use crate::pipeline::{image_to_rgb8, rgb8_to_image, GenerateOptions, Pipeline};
use crate::world::concepts::{best_concept, novel_concepts, teaching_images, two_concepts_present_apart, NovelConcept};
use crate::world::{check, one_shape_pairs, prompt_at, Place, Prompt, Relation, SceneKind, Size, Split, Verdict};

/// What to run.
#[derive(Debug, Clone)]
pub struct LifelongEvalOptions {
    /// How many concepts, the first of [`novel_concepts`] unless `names` picks them.
    pub concepts: usize,
    /// Concepts by name, taught in this order (empty: the first `concepts`).
    pub names: Vec<String>,
    pub images: usize,
    pub lesson: LessonOptions,
    pub memory: MemoryOptions,
    /// Identification prompts per concept (after its lesson, and again after the last).
    pub probes: usize,
    /// Two-concept prompts, and two-object colour-binding prompts of each kind.
    pub pairs: usize,
    pub steps: usize,
    pub guidance: f32,
    /// Guidance of the prompts that name routed concepts (`generate`'s default for them:
    /// [`super::state::ROUTED_GUIDANCE`]).
    pub routed_guidance: f32,
    /// [`Composer::tries`] of composed prompts.
    pub tries: usize,
    pub seed: u64,
    pub adapter: AdapterConfig,
    /// Keep every teaching picture and final probe image in [`Row::samples`] (for looking at them).
    pub keep_samples: bool,
}

/// One row of the table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub name: String,
    /// Identification rate of each concept right after its lesson.
    pub after: Vec<f32>,
    /// ... and after the last lesson.
    pub last: Vec<f32>,
    pub two_concepts: f32,
    pub binding: f32,
    /// Colour binding on one shape in two colours ("a red circle to the left of a blue circle"):
    /// each colour where the relation puts it.
    pub binding_one_shape: f32,
    /// Single-object world prompts (no concepts) with colour and shape right, after the last lesson.
    pub base_prompts: f32,
    pub lesson_seconds: Vec<f32>,
    /// (prompt, RGB 8-bit) of the teaching pictures ("taught ...") and the final identification
    /// probes, when asked.
    #[serde(skip)]
    pub samples: Vec<(String, Vec<u8>)>,
}

impl Row {
    pub fn mean(v: &[f32]) -> f32 {
        if v.is_empty() { 0.0 } else { v.iter().sum::<f32>() / v.len() as f32 }
    }

    /// Mean drop from right-after to after-the-last, in points.
    pub fn forgetting(&self) -> f32 {
        100.0 * (Self::mean(&self.after) - Self::mean(&self.last))
    }
}

/// How generation runs for a row: the concept attention artist's latent updates, and OA at
/// generation (the artist's binding term and orthogonal attention's edit).
#[derive(Debug, Clone, Copy)]
pub struct Generation {
    pub attend: bool,
    pub bind: bool,
    /// Routed concepts composed by region on prompts naming two or more (src/lifelong/compose.rs).
    pub compose: bool,
}

/// What one image is drawn with: the artist (when on) and orthogonal attention's strength.
#[derive(Debug, Clone)]
struct Drawing {
    attend: Option<AttendOptions>,
    orthogonal: f32,
}

impl Drawing {
    fn of(g: Generation) -> Self {
        let attend = g.attend.then(|| AttendOptions { bind_weight: if g.bind { AttendOptions::default().bind_weight } else { 0.0 }, ..Default::default() });
        Self { attend, orthogonal: if g.bind { GenerateOptions::default().orthogonal } else { 0.0 } }
    }

    /// One-subject probes: neither the artist nor the edit acts on them.
    fn plain() -> Self {
        Self { attend: None, orthogonal: GenerateOptions::default().orthogonal }
    }
}

/// The VAE's ceiling per concept: the share of `n` pictures of it (teaching-style: varied place,
/// size and background) that the scorer still identifies after an encode-decode round trip. A
/// lesson cannot make the model draw a concept better than its VAE can carry it.
pub fn vae_ceiling(pipeline: &Pipeline, concepts: &[NovelConcept], n: usize, seed: u64) -> Result<Vec<f32>> {
    let all = novel_concepts();
    concepts
        .iter()
        .map(|c| {
            let pictures = teaching_images(c, n, seed.wrapping_add(4242));
            let mut hits = 0;
            for (rgb, _) in &pictures {
                let back = image_to_rgb8(&crate::world::eval::round_trip(pipeline, rgb))?;
                hits += usize::from(best_concept(&back, &all) == Some(c.name));
            }
            Ok(hits as f32 / pictures.len().max(1) as f32)
        })
        .collect()
}

/// What draws each prompt: one pipeline for all, or a learner whose adapter is routed to the
/// concepts each prompt names (the `routed` method).
pub enum Drawer<'a> {
    One(Box<Pipeline>),
    PerPrompt(&'a Learner),
    /// As `PerPrompt`, with prompts naming two or more concepts composed by region.
    Composed(&'a Learner),
}

impl Drawer<'_> {
    fn of(learner: &Learner, method: Method) -> Result<Drawer<'_>> {
        // Shared adapters draw every prompt with the whole state, but compose by region too.
        Ok(if method == Method::Routed || method.keeps_memory() { Drawer::PerPrompt(learner) } else { Drawer::One(Box::new(learner.pipeline()?)) })
    }

    /// The composing drawer of a routed learner when `compose` asks for it.
    fn composing(&self, compose: bool) -> Option<Drawer<'_>> {
        match self {
            Drawer::PerPrompt(l) | Drawer::Composed(l) if compose => Some(Drawer::Composed(l)),
            _ => None,
        }
    }
}

fn latent_size(pipeline: &Pipeline) -> [usize; 2] {
    let [_, h, w] = pipeline.latent_shape();
    [h, w]
}

fn generate_rgb(drawer: &Drawer, prompt: &str, seed: u64, options: &LifelongEvalOptions, drawing: &Drawing) -> Result<Vec<u8>> {
    let routed_prompt = matches!(drawer, Drawer::PerPrompt(l) | Drawer::Composed(l) if super::state::names_routed(&l.adapter, prompt));
    let guidance = if routed_prompt { options.routed_guidance } else { options.guidance };
    let opts = GenerateOptions { prompt: prompt.into(), steps: options.steps, guidance, seed, orthogonal: drawing.orthogonal, ..Default::default() };
    let (routed, composer);
    let pipeline = match drawer {
        Drawer::One(p) => p,
        Drawer::PerPrompt(learner) | Drawer::Composed(learner) => {
            routed = learner.pipeline_for(prompt)?;
            &routed
        }
    };
    composer = match drawer {
        Drawer::Composed(learner) => Composer::plan(&learner.adapter, &learner.base, prompt, latent_size(pipeline))?.map(|mut c| {
            c.tries = options.tries;
            c
        }),
        _ => None,
    };
    image_to_rgb8(&pipeline.generate_composed(&opts, drawing.attend.as_ref(), composer, &mut |_| {})?.image)
}

/// Identification rate of `concept` over `options.probes` prompts naming it at varied places.
fn identify_rate(
    drawer: &Drawer,
    concept: &NovelConcept,
    all: &[NovelConcept],
    options: &LifelongEvalOptions,
    salt: u64,
    samples: &mut Vec<(String, Vec<u8>)>,
) -> Result<f32> {
    let mut hits = 0;
    for i in 0..options.probes {
        let place = Place::ALL[i % Place::ALL.len()];
        let size = Size::ALL[i % 2];
        let prompt = format!("a {} {} {}", size.name(), concept.token(), place.phrase());
        let rgb = generate_rgb(drawer, &prompt, options.seed ^ salt.wrapping_add(i as u64), options, &Drawing::plain())?;
        hits += usize::from(best_concept(&rgb, all) == Some(concept.name));
        if options.keep_samples {
            samples.push((prompt, rgb));
        }
    }
    Ok(rate(hits, options.probes))
}

/// Two-concept prompts "a <a> to the left of a <b>" over consecutive taught pairs.
fn two_concept_rate(
    drawer: &Drawer,
    taught: &[NovelConcept],
    options: &LifelongEvalOptions,
    drawing: &Drawing,
    samples: &mut Vec<(String, Vec<u8>)>,
) -> Result<f32> {
    if taught.len() < 2 {
        return Ok(0.0);
    }
    let mut hits = 0;
    for i in 0..options.pairs {
        // b is never a: offsets 1..n-1 in turn.
        let n = taught.len();
        let (a, b) = (&taught[i % n], &taught[(i + 1 + (i / n) % (n - 1)) % n]);
        let relation = Relation::ALL[i % Relation::ALL.len()];
        let prompt = format!("a {} {} a {}", a.token(), relation.phrase(), b.token());
        let rgb = generate_rgb(drawer, &prompt, options.seed.wrapping_add(1000 + i as u64), options, drawing)?;
        hits += usize::from(two_concepts_present_apart(&rgb, a, b));
        if options.keep_samples {
            samples.push((prompt, rgb));
        }
    }
    Ok(rate(hits, options.pairs))
}

/// Colour binding: two-object world prompts whose both objects come out in their own colours.
fn binding_rate(drawer: &Drawer, options: &LifelongEvalOptions, drawing: &Drawing) -> Result<f32> {
    let prompts = (0u64..).map(|i| prompt_at(options.seed.wrapping_add(77), i, Split::Train, SceneKind::Pair));
    world_rate(drawer, options, drawing, prompts, 2000, |v| v.color)
}

/// Colour binding where only binding tells the objects apart: one shape in two colours
/// ([`one_shape_pairs`]), right when both colours are drawn and each is on its side of the
/// relation (the scorer pairs each named object with the drawn one of its colour).
fn one_shape_binding_rate(drawer: &Drawer, options: &LifelongEvalOptions, drawing: &Drawing) -> Result<f32> {
    let prompts = one_shape_pairs(options.seed.wrapping_add(77));
    world_rate(drawer, options, drawing, prompts, 4000, |v| v.color && v.relation == Some(true))
}

/// Plain single-object world prompts (no concept) whose object has the right colour and shape:
/// what lessons must leave as the base model had it.
pub fn base_rate(drawer: &Drawer, options: &LifelongEvalOptions) -> Result<f32> {
    let prompts = (0u64..).map(|i| prompt_at(options.seed.wrapping_add(99), i, Split::Train, SceneKind::Single));
    world_rate(drawer, options, &Drawing::plain(), prompts, 3000, |v| v.color && v.shape)
}

/// The share of the first `options.pairs` of `prompts`, the i-th drawn at seed `seed + offset + i`,
/// whose verdict `right` accepts.
fn world_rate(drawer: &Drawer, options: &LifelongEvalOptions, drawing: &Drawing, prompts: impl Iterator<Item = Prompt>, offset: u64, right: impl Fn(&Verdict) -> bool) -> Result<f32> {
    let mut hits = 0;
    for (i, prompt) in prompts.take(options.pairs).enumerate() {
        let rgb = generate_rgb(drawer, &prompt.caption, options.seed.wrapping_add(offset + i as u64), options, drawing)?;
        hits += usize::from(right(&check(&rgb, &prompt.spec)?));
    }
    Ok(rate(hits, options.pairs))
}

/// The concepts a run teaches, in order: `options.names`, else the first `options.concepts`.
pub fn taught_concepts(options: &LifelongEvalOptions) -> Result<Vec<NovelConcept>> {
    let all = novel_concepts();
    if options.names.is_empty() {
        if options.concepts == 0 || options.concepts > all.len() {
            return Err(Error::InvalidInput(format!("eval lifelong teaches 1 to {} concepts", all.len())));
        }
        return Ok(all[..options.concepts].to_vec());
    }
    options
        .names
        .iter()
        .map(|n| {
            all.iter().find(|c| c.name == n.as_str()).copied().ok_or_else(|| {
                let known: Vec<&str> = all.iter().map(|c| c.name).collect();
                Error::InvalidInput(format!("no concept `{n}`; the world's novel concepts are {}", known.join(", ")))
            })
        })
        .collect()
}

/// Teaches the concepts in order with `method`, then scores each generation variant; one row per
/// variant (`names[i]` for `variants[i]`). `progress` gets one line per lesson.
pub fn run_method(
    base: &LoadedModel,
    trained: &LoadedModel,
    device: &Device,
    method: Method,
    variants: &[(String, Generation)],
    options: &LifelongEvalOptions,
    progress: &mut dyn FnMut(String),
) -> Result<Vec<Row>> {
    let all = novel_concepts();
    let taught = taught_concepts(options)?;
    let mut learner = Learner::new(base.clone(), device.clone(), trained.clone(), options.adapter.clone())?;
    if method.keeps_memory() && !method.gated() {
        learner.remember_base(&base_prompts(true, 6), &options.memory, options.seed)?;
    }
    let (mut after, mut seconds, mut samples) = (Vec::new(), Vec::new(), Vec::new());
    for (k, concept) in taught.iter().enumerate() {
        let teaching = teaching_images(concept, options.images, options.seed);
        if options.keep_samples {
            samples.extend(teaching.iter().map(|(rgb, words)| (format!("taught {}", words.prompt(concept)), rgb.clone())));
        }
        let pictures: Vec<Picture> = teaching
            .into_iter()
            .map(|(rgb, words)| Picture { image: rgb8_to_image(&rgb, crate::world::SIZE, device), words: Some(words.prompt(concept).replace(&concept.token(), "{}")) })
            .collect();
        let started = Instant::now();
        let lesson = LessonOptions { seed: options.seed.wrapping_add(k as u64), ..options.lesson.clone() };
        let report = learner.lesson(concept.name, &pictures, method, &lesson, &options.memory, &mut |_| {})?;
        seconds.push(started.elapsed().as_secs_f32());
        let rate = identify_rate(&Drawer::of(&learner, method)?, concept, &all, options, 100 * k as u64, &mut Vec::new())?;
        progress(format!(
            "{method:?} lesson {} <{}>: from {:?}{}, loss {:.4} -> {:.4}, kept step {} {:?}, {:.0} s, identified {:.0}%",
            k + 1,
            concept.name,
            report.init_words.iter().map(|(w, e)| format!("{w} {e:.4}")).collect::<Vec<_>>(),
            report.refined.map_or(String::new(), |share| format!(", latents refined ({:.1}% of pixels lost)", 100.0 * share))
                + &report.protected.map_or(String::new(), |(k, d)| format!(", {k} of {d} text directions protected")),
            report.first_loss,
            report.last_loss,
            report.kept_step,
            report.scores.iter().map(|(step, score)| format!("{step}: {score:.3}")).collect::<Vec<_>>(),
            seconds[k],
            100.0 * rate
        ));
        after.push(rate);
    }
    let drawer = Drawer::of(&learner, method)?;
    let last = taught
        .iter()
        .enumerate()
        .map(|(k, c)| identify_rate(&drawer, c, &all, options, 5000 + 100 * k as u64, &mut samples))
        .collect::<Result<Vec<_>>>()?;
    let base_prompts = base_rate(&drawer, options)?;
    let mut rows = Vec::new();
    for (name, g) in variants {
        let drawing = Drawing::of(*g);
        let mut row_samples = samples.clone();
        let composed = drawer.composing(g.compose);
        let two = two_concept_rate(composed.as_ref().unwrap_or(&drawer), &taught, options, &drawing, &mut row_samples)?;
        let binding = binding_rate(&drawer, options, &drawing)?;
        let binding_one_shape = one_shape_binding_rate(&drawer, options, &drawing)?;
        rows.push(Row { name: name.clone(), after: after.clone(), last: last.clone(), two_concepts: two, binding, binding_one_shape, base_prompts, lesson_seconds: seconds.clone(), samples: row_samples });
    }
    Ok(rows)
}

/// The table: one line per row, percentages.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!("{:<22}{:>10}{:>10}{:>12}{:>10}{:>10}{:>10}{:>10}{:>12}\n", "method", "after", "last", "forgetting", "2-concept", "binding", "1-shape", "base", "s/lesson");
    for r in rows {
        let cells = [Row::mean(&r.after), Row::mean(&r.last), r.two_concepts, r.binding, r.binding_one_shape, r.base_prompts].map(percent);
        out.push_str(&format!(
            "{:<22}{:>10}{:>10}{:>12}{:>10}{:>10}{:>10}{:>10}{:>12.1}\n",
            r.name,
            cells[0],
            cells[1],
            if r.forgetting().is_finite() { format!("{:.1}p", r.forgetting()) } else { "-".into() },
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            Row::mean(&r.lesson_seconds)
        ));
    }
    out
}

/// A rate as the table shows it: "-" when nothing was drawn (`--pairs 0`).
pub fn percent(rate: f32) -> String {
    if rate.is_finite() { format!("{:.1}%", 100.0 * rate) } else { "-".into() }
}

/// `hits` of `n`, or NaN (printed "-", null in the JSON line) when `n` is 0: a figure of
/// nothing drawn is no 0%.
fn rate(hits: usize, n: usize) -> f32 {
    if n == 0 { f32::NAN } else { hits as f32 / n as f32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_of_nothing_drawn_shows_as_a_dash_not_zero() {
        assert_eq!(percent(rate(3, 4)), "75.0%");
        assert_eq!(percent(rate(0, 4)), "0.0%");
        assert_eq!(percent(rate(0, 0)), "-");
        assert_eq!(serde_json::json!({ "rate": rate(0, 0) })["rate"], serde_json::Value::Null);
    }
}
