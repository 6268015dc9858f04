//! Lessons in the browser: the same `Learner` the native `teach` command runs (src/teach_cli.rs),
//! fed with pictures the page decoded to RGBA, saved as a new version of the IndexedDB store.
//!
//! Device: burn's autodiff over burn-flex on the CPU, not WebGPU. A lesson reads values back
//! synchronously (the loss every step, distillation weights, memory scores), and WebGPU in a
//! browser only reads back asynchronously, so the autodiff-over-wgpu path would fail at the first
//! `into_scalar`. The worker runs the lesson synchronously; progress still reaches the page,
//! because `postMessage` from a busy worker is delivered.

use std::collections::HashMap;

use burn::prelude::*;
use js_sys::{Array, Function, Map, Promise, Reflect, Uint8Array};
use serde::Deserialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::future_to_promise;

use super::error::WebError;
use super::generator::object;
use super::store::ConceptStore;
use crate::lifelong::adapter::AdapterConfig;
use crate::lifelong::images::fit_rgb8;
use crate::lifelong::learner::{base_prompts, Learner, MemoryOptions, Method, Picture};
use crate::lifelong::lesson::LessonOptions;
use crate::lifelong::state;
use crate::lifelong::store::{concept_token, validate_concept_name};
use crate::loader::{self, MemoryFiles};
use crate::pipeline::{image_to_rgb8, GenerateOptions, Pipeline};

/// What the page may set (JSON; unknown fields are refused so a typo is not silently ignored).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TeachOptions {
    /// Lesson steps; default: the method's (300 routed, 150 L2DM).
    #[serde(default)]
    steps: Option<usize>,
    #[serde(default)]
    seed: u64,
    /// Words for the pictures' prompts: one for all or one per picture (as the CLI's `--words`).
    #[serde(default)]
    words: Vec<String>,
    /// New-concept examples per step (replay adds as many).
    #[serde(default)]
    batch: Option<usize>,
    /// Start the concept at the vocabulary word that best explains the pictures (default true;
    /// false skips that search and starts at the mean embedding).
    #[serde(default)]
    init_search: Option<bool>,
    /// Decoder steps that refine the pictures' latents before the lesson (default 30; 0 skips).
    #[serde(default)]
    refine_steps: Option<usize>,
    #[serde(default)]
    memory: MemorySettings,
    /// `"routed"` (one block per concept) or `"l2dm"` (one shared adapter); default: what the
    /// store already holds (a store is one or the other), routed for an empty store.
    #[serde(default)]
    method: Option<String>,
}

/// Memory building after the lesson; absent fields keep the learner's defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MemorySettings {
    keep: Option<usize>,
    candidates: Option<usize>,
    refresh: Option<usize>,
    steps: Option<usize>,
    guidance: Option<f32>,
    /// Base-model samples made before the first lesson of a store.
    base: Option<usize>,
}

const MAX_STEPS: usize = 2000;
const MAX_PICTURES: usize = 8;
const MAX_REFINE_STEPS: usize = 200;
/// Side of the concept card's thumbnail.
const THUMB: usize = 64;

impl TeachOptions {
    fn parse(json: &str, pictures: usize) -> Result<(Self, LessonOptions, MemoryOptions, usize), WebError> {
        let o: TeachOptions = serde_json::from_str(json).map_err(|e| WebError::InvalidOptions(e.to_string()))?;
        let bad = |what: String| Err(WebError::InvalidOptions(what));
        if let Some(steps) = o.steps.filter(|s| !(1..=MAX_STEPS).contains(s)) {
            return bad(format!("steps must be between 1 and {MAX_STEPS}, got {steps}"));
        }
        if o.words.len() > 1 && o.words.len() != pictures {
            return bad(format!("give one words entry for all pictures or one per picture ({pictures} pictures, {} words)", o.words.len()));
        }
        // Steps are set once the method is known (`Method::default_steps`).
        let mut lesson = LessonOptions { seed: o.seed, ..LessonOptions::default() };
        lesson.init_search = o.init_search.unwrap_or(lesson.init_search);
        if let Some(r) = o.refine_steps {
            if r > MAX_REFINE_STEPS {
                return bad(format!("refineSteps must be between 0 and {MAX_REFINE_STEPS}, got {r}"));
            }
            lesson.refine_steps = r;
        }
        if let Some(b) = o.batch {
            if !(1..=16).contains(&b) {
                return bad(format!("batch must be between 1 and 16, got {b}"));
            }
            lesson.batch = b;
        }
        let d = MemoryOptions::default();
        let m = &o.memory;
        let memory = MemoryOptions {
            keep: m.keep.unwrap_or(d.keep).max(1),
            candidates: m.candidates.unwrap_or(d.candidates).max(1),
            refresh: m.refresh.unwrap_or(d.refresh),
            steps: m.steps.unwrap_or(d.steps).clamp(1, 200),
            guidance: m.guidance.unwrap_or(d.guidance),
        };
        let base = m.base.unwrap_or(6).clamp(1, 16);
        Ok((o, lesson, memory, base))
    }
}

/// Teaches concept `name` from `pictures` (an array of `{ rgba, width, height }`, RGBA bytes as
/// `createImageBitmap` + `getImageData` give them) to the model given as `files` (the same `Map`
/// the generator loaded) and saves the result as a new version of `store`.
/// `on_progress({ phase, step, total, loss })` follows the lesson (`phase`: `base-memory`,
/// `lesson`, `memory`, `saving`). Resolves to `{ version, firstLoss, lastLoss, seconds }`.
#[wasm_bindgen]
pub fn teach(store: &ConceptStore, model_name: String, files: Map, name: String, pictures: Array, options_json: String, on_progress: Function) -> Promise {
    let store = store.clone();
    future_to_promise(async move {
        let started = js_sys::Date::now();
        let (version, first, last) = lesson(&store, &model_name, &files, &name, &pictures, &options_json, &on_progress).await?;
        Ok(object(&[
            ("version", version.into()),
            ("firstLoss", first.into()),
            ("lastLoss", last.into()),
            ("seconds", ((js_sys::Date::now() - started) / 1000.0).into()),
        ]))
    })
}

/// One progress update to the page.
fn report(on_progress: &Function, phase: &str, step: usize, total: usize, loss: f32) {
    let p = object(&[("phase", phase.into()), ("step", step.into()), ("total", total.into()), ("loss", loss.into())]);
    // A throwing callback must not abort the lesson; the page only loses one update.
    let _ = on_progress.call1(&JsValue::NULL, &p);
}

async fn lesson(
    store: &ConceptStore,
    model_name: &str,
    files: &Map,
    name: &str,
    pictures: &Array,
    options_json: &str,
    on_progress: &Function,
) -> Result<(u32, f32, f32), WebError> {
    validate_concept_name(name).map_err(|e| WebError::InvalidOptions(e.to_string()))?;
    let count = pictures.length() as usize;
    if count == 0 || count > MAX_PICTURES {
        return Err(WebError::InvalidOptions(format!("give 1 to {MAX_PICTURES} pictures (3-5 work best), got {count}")));
    }
    let (options, mut lesson_options, memory, base_count) = TeachOptions::parse(options_json, count)?;
    let manifest = store.read_manifest().await?;
    let previous = manifest.current_entry().map(|e| e.concepts.clone()).unwrap_or_default();
    if previous.iter().any(|c| c.name == name) {
        return Err(WebError::InvalidOptions(format!("the concept {} already exists; remove it first or pick another name", concept_token(name))));
    }
    let mut learner = open_learner(model_name, files)?;
    if manifest.current.is_some() {
        let (entry, blobs) = store.load(None).await?;
        state::load(&mut learner, &entry.concepts, &blobs)?;
    }
    let method = match options.method.as_deref() {
        None => learner.default_method(),
        Some("l2dm") => Method::L2dm,
        Some("routed") => Method::Routed,
        Some(other) => return Err(WebError::InvalidOptions(format!("method must be \"l2dm\" or \"routed\", got {other:?}"))),
    };
    lesson_options.steps = options.steps.unwrap_or(method.default_steps());
    let [size, _] = Pipeline::new(learner.base.clone(), learner.device.clone()).image_size();
    let mut taught = Vec::with_capacity(count);
    for (i, picture) in pictures.iter().enumerate() {
        let words = options.words.get(i).or(options.words.first()).cloned();
        taught.push(Picture { image: read_picture(&picture, i, size, &learner.device)?, words });
    }
    if method.keeps_memory() && !method.gated() && !learner.memories.iter().any(|m| m.concept.is_none()) {
        report(on_progress, "base-memory", 0, lesson_options.steps, f32::NAN);
        learner.remember_base(&base_prompts(model_name == "builtin", base_count), &memory, options.seed)?;
    }
    let lesson = learner.lesson(name, &taught, method, &lesson_options, &memory, &mut |p| {
        report(on_progress, "lesson", p.step, p.total, p.loss);
        if p.step == p.total {
            report(on_progress, "memory", p.step, p.total, p.loss);
        }
    })?;
    report(on_progress, "saving", lesson_options.steps, lesson_options.steps, lesson.last_loss);
    let (mut concepts, blobs) = state::save(&learner, &previous, manifest.next_version())?;
    let thumbnail = thumbnail(&learner, name, &memory, options.seed)?;
    for c in concepts.iter_mut().filter(|c| c.name == name) {
        c.meta = serde_json::json!({ "thumbnail": thumbnail, "pictures": count });
    }
    let record = serde_json::json!({
        "concept": name, "method": method, "steps": lesson.steps, "first_loss": lesson.first_loss,
        "last_loss": lesson.last_loss, "images": count, "where": "browser",
    });
    let pending = manifest
        .plan_new_version(&format!("teach {}", concept_token(name)), concepts, &blobs, record, js_sys::Date::now())
        .map_err(|e| WebError::Store(e.to_string()))?;
    let version = store.commit(pending).await?;
    Ok((version, lesson.first_loss, lesson.last_loss))
}

/// The model files as the loader takes them.
pub fn memory_files(name: &str, files: &Map) -> Result<MemoryFiles, WebError> {
    let mut map = HashMap::new();
    for entry in files.entries() {
        let pair: Array = entry?.unchecked_into();
        let path = pair.get(0).as_string().ok_or_else(|| WebError::InvalidOptions("file paths must be strings".into()))?;
        let bytes = pair.get(1).dyn_into::<Uint8Array>().map_err(|_| WebError::InvalidOptions(format!("{path}: bytes must be a Uint8Array")))?;
        map.insert(path, bytes.to_vec());
    }
    Ok(MemoryFiles { name: name.to_string(), files: map })
}

/// The model twice on the CPU: plain (generation of memory) and under autodiff (the lesson).
fn open_learner(model_name: &str, files: &Map) -> Result<Learner, WebError> {
    let files = memory_files(model_name, files)?;
    let device = Device::flex();
    let base = loader::load(&files, &device)?;
    let trained = loader::load(&files, &device.clone().autodiff())?;
    Ok(Learner::new(base, device, trained, AdapterConfig::default())?)
}

/// `{ rgba, width, height }` -> the model's input (centre crop + resize, as the CLI).
fn read_picture(value: &JsValue, index: usize, size: usize, device: &Device) -> Result<Tensor<4>, WebError> {
    let field = |key: &str| Reflect::get(value, &key.into()).unwrap_or(JsValue::UNDEFINED);
    let bad = || WebError::InvalidOptions(format!("picture {} must be {{ rgba, width, height }} with width * height * 4 bytes", index + 1));
    let (w, h) = (field("width").as_f64().ok_or_else(bad)? as usize, field("height").as_f64().ok_or_else(bad)? as usize);
    let rgba = field("rgba");
    let bytes = match rgba.dyn_ref::<js_sys::Uint8ClampedArray>() {
        Some(c) => c.to_vec(),
        None => rgba.dyn_into::<Uint8Array>().map_err(|_| bad())?.to_vec(),
    };
    if w == 0 || h == 0 || w.checked_mul(h).and_then(|n| n.checked_mul(4)) != Some(bytes.len()) {
        return Err(bad());
    }
    let rgb: Vec<u8> = bytes.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    Ok(fit_rgb8(&rgb, w, h, size, device)?)
}

/// The card's picture: what the model now draws for `<name>` (the first memory sample of the new
/// concept, or for a routed lesson, which keeps no memory, one sample drawn now), decoded, as a
/// PNG data URL. Never a user picture: those are not kept.
fn thumbnail(learner: &Learner, name: &str, memory: &MemoryOptions, seed: u64) -> Result<Option<String>, WebError> {
    let kept = learner.memories.iter().find(|m| m.concept.as_deref() == Some(name)).and_then(|m| m.items.first());
    let latents = match kept {
        Some(item) => item.latents.clone(),
        None => {
            let prompt = format!("a {}", concept_token(name));
            let options = GenerateOptions { prompt: prompt.clone(), steps: memory.steps, guidance: memory.guidance, seed, ..GenerateOptions::default() };
            learner.pipeline_for(&prompt)?.generate(&options, &mut |_| {})?.latents
        }
    };
    let pipeline = Pipeline::new(learner.base.clone(), learner.device.clone());
    let image = pipeline.decode(latents);
    let [_, _, h, w] = image.dims();
    let side = THUMB.min(w).min(h);
    let small = fit_rgb8(&image_to_rgb8(&image)?, w, h, side, &learner.device)?;
    let png = crate::world::render::png_bytes(&image_to_rgb8(&small)?, side, side, 1)?;
    Ok(Some(format!("data:image/png;base64,{}", base64(&png))))
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            let c = if i <= chunk.len() { ABC[(n >> (18 - 6 * i) & 63) as usize] } else { b'=' };
            out.push(c as char);
        }
    }
    out
}
