//! `Generator`: the wasm API that `www/worker.js` drives. Model files come in as bytes; images go
//! out as RGBA and PNG bytes. Generation awaits the GPU after every step, so the progress
//! callback sees true milliseconds per step and a preview of the latents.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use burn::prelude::*;
use js_sys::{Function, Object, Reflect, Uint8Array};
use serde::Deserialize;
use wasm_bindgen::prelude::*;

use super::error::WebError;
use super::store::ConceptStore;
use super::teach::memory_files;
use crate::lifelong::adapter::Adapter;
use crate::lifelong::compose::{composes_objects_by_default, Composer};
use crate::lifelong::state;
use crate::loader::{self, LoadedModel};
use crate::pipeline::{self, GenerateOptions, Pipeline};
use crate::scheduler::SchedulerKind;

/// What the page asks for (JSON from `JSON.stringify`, so field names are the page's).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Options {
    prompt: String,
    #[serde(default)]
    negative: String,
    #[serde(default = "default_steps")]
    steps: usize,
    /// Absent: 7.5, or 3 for a prompt naming routed concepts (`state::ROUTED_GUIDANCE`).
    #[serde(default)]
    guidance: Option<f32>,
    #[serde(default)]
    seed: u64,
    /// `ddim`, `euler`, `euler-a`, `dpm++2m`; absent or empty: the model's own.
    #[serde(default)]
    scheduler: Option<String>,
    /// Reserved for the attention-map export of the kernels (the page's per-word viewer reads
    /// `result.attention` when it is present); ignored until the kernels provide the maps.
    #[serde(default)]
    attention: bool,
    /// Orthogonal attention's strength on prompts with two or more subjects (0 turns it off).
    #[serde(default)]
    orthogonal: Option<f32>,
    /// Draw a relation prompt of two plain objects as two one-object prompts, each in its region;
    /// absent: as the CLI's `generate` decides (on for shapes-world models).
    #[serde(default)]
    compose: Option<bool>,
    /// How many times a composed prompt draws each learned concept's region, keeping the drawing
    /// closest to the concept's lesson pictures (1 to `compose::MAX_TRIES`; absent: `compose::TRIES`).
    #[serde(default)]
    tries: Option<usize>,
}

/// What [`Options::parse`] gives: the generation's options, the guidance asked for, whether to
/// compose plain relation prompts and how many drawings a composed concept makes.
struct Parsed {
    options: GenerateOptions,
    guidance: Option<f32>,
    compose: Option<bool>,
    tries: usize,
}

fn default_steps() -> usize {
    20
}

/// Most steps a page may ask for: beyond this a typo (e.g. 10000) would hang the tab for hours.
const MAX_STEPS: usize = 1000;

impl Options {
    /// The generation's options (their guidance the plain default when none is asked for), the
    /// guidance asked for, and whether to compose plain relation prompts (`None`: the default).
    fn parse(json: &str) -> Result<Parsed, WebError> {
        let o: Options = serde_json::from_str(json).map_err(|e| WebError::InvalidOptions(e.to_string()))?;
        if o.steps == 0 || o.steps > MAX_STEPS {
            return Err(WebError::InvalidOptions(format!("steps must be between 1 and {MAX_STEPS}, got {}", o.steps)));
        }
        let scheduler = match o.scheduler.as_deref() {
            None | Some("") => None,
            Some(name) => Some(name.parse::<SchedulerKind>().map_err(|e| WebError::InvalidOptions(e.to_string()))?),
        };
        let _ = o.attention;
        let orthogonal = o.orthogonal.unwrap_or(GenerateOptions::default().orthogonal);
        if !orthogonal.is_finite() || orthogonal < 0.0 {
            return Err(WebError::InvalidOptions(format!("orthogonal must be a non-negative number (0 turns it off), got {orthogonal}")));
        }
        let tries = o.tries.unwrap_or(crate::lifelong::compose::TRIES);
        let max = crate::lifelong::compose::MAX_TRIES;
        if !(1..=max).contains(&tries) {
            return Err(WebError::InvalidOptions(format!("tries must be between 1 and {max} (1 draws each concept once), got {tries}")));
        }
        let options = GenerateOptions {
            prompt: o.prompt,
            negative_prompt: o.negative,
            steps: o.steps,
            guidance: o.guidance.unwrap_or(GenerateOptions::default().guidance),
            seed: o.seed,
            scheduler,
            init_latents: None,
            orthogonal,
        };
        Ok(Parsed { options, guidance: o.guidance, compose: o.compose, tries })
    }
}

/// One WebGPU device and at most one loaded model.
#[wasm_bindgen]
pub struct Generator {
    device: Device,
    /// The model as loaded, without concepts: `useConcepts` installs a store's state on a copy.
    base: Rc<RefCell<Option<LoadedModel>>>,
    pipeline: Rc<RefCell<Option<Rc<Pipeline>>>>,
    /// The current store version's adapter (on the CPU) and, for a routed store, the concepts the
    /// current pipeline has installed: each prompt generates with the blocks of the concepts it
    /// names. A shared adapter is installed whole; it is kept to compose concepts by region.
    stored: Rc<RefCell<Option<(Adapter, Vec<usize>)>>>,
    /// The last composition planned and its prompt: drawing the same prompt again (a new seed,
    /// more steps) reuses it rather than merging each concept's block into a copy of the UNet
    /// again. Cleared with the model or the concepts it was planned on.
    composed: Rc<RefCell<Option<(String, Composer)>>>,
    busy: Rc<Cell<bool>>,
    lost: Rc<RefCell<Option<String>>>,
}

#[wasm_bindgen]
impl Generator {
    /// Opens the WebGPU device. Rejects with `NoWebGpuError` when the browser has no adapter.
    pub async fn create() -> Result<Generator, JsValue> {
        install_panic_hook();
        let has_gpu = Reflect::get(&js_sys::global(), &"navigator".into())
            .and_then(|nav| Reflect::get(&nav, &"gpu".into()))
            .map(|gpu| !gpu.is_undefined())
            .unwrap_or(false);
        if !has_gpu {
            return Err(WebError::NoWebGpu("navigator.gpu is missing".into()).into());
        }
        let device = Device::wgpu_options().init_async().await.map_err(|e| WebError::NoWebGpu(e.to_string()))?;
        Ok(Generator { device, base: Rc::default(), pipeline: Rc::default(), stored: Rc::default(), composed: Rc::default(), busy: Rc::default(), lost: Rc::default() })
    }

    /// Loads a diffusers pipeline from `files` (a `Map` of relative path -> `Uint8Array`, e.g.
    /// `unet/diffusion_pytorch_model.safetensors`). Returns `{ width, height }` of its images.
    pub fn load(&self, name: String, files: js_sys::Map) -> Result<JsValue, JsValue> {
        self.check_usable()?;
        if self.busy.get() {
            return Err(WebError::Busy("a generation is running").into());
        }
        let files = memory_files(&name, &files)?;
        // Drop the old model first: two models at once may not fit the adapter's memory.
        self.pipeline.replace(None);
        self.stored.replace(None);
        self.composed.replace(None);
        self.base.replace(None);
        let model = loader::load(&files, &self.device).map_err(WebError::Model)?;
        self.base.replace(Some(model.clone()));
        let pipeline = Pipeline::new(model, self.device.clone());
        let [height, width] = pipeline.image_size();
        self.pipeline.replace(Some(Rc::new(pipeline)));
        Ok(object(&[("width", width.into()), ("height", height.into())]))
    }

    /// Generates from `options_json` (`{ prompt, negative, steps, guidance, seed, scheduler,
    /// orthogonal, compose, tries }`).
    /// `on_progress({ step, total, timestep, msPerStep, preview, previewWidth, previewHeight })`
    /// is called after every step (`preview`: RGBA `Uint8ClampedArray` at latent resolution).
    /// Resolves to `{ rgba, png, width, height, warnings, regions, msPerStep, totalMs }`
    /// (`regions`: for a composed prompt, two or more of the store's concepts or a relation of two plain
    /// objects, the clause each region was drawn from).
    pub fn generate(&self, options_json: String, on_progress: Function) -> js_sys::Promise {
        let this = self.handle();
        wasm_bindgen_futures::future_to_promise(async move {
            this.check_usable()?;
            let Parsed { mut options, guidance, compose, tries } = Options::parse(&options_json)?;
            options.guidance = state::guidance_for(this.stored.borrow().as_ref().map(|(a, _)| a), &options.prompt, guidance, options.guidance);
            if this.pipeline.borrow().is_none() {
                return Err(WebError::NoModel.into());
            }
            if this.busy.replace(true) {
                return Err(WebError::Busy("another generation is running").into());
            }
            let pipeline = this.route(&options.prompt).and_then(|()| this.pipeline.borrow().clone().ok_or(WebError::NoModel));
            let planned = pipeline.and_then(|p| Ok((this.compose(&p, &options.prompt, compose)?, p)));
            let result = match planned {
                Ok((mut composer, pipeline)) => {
                    if let Some(c) = composer.as_mut() {
                        c.tries = tries;
                    }
                    run(&pipeline, &options, composer, &on_progress).await
                }
                Err(e) => Err(e),
            };
            this.busy.set(false);
            if let Err(WebError::DeviceLost(why)) = &result {
                this.lost.replace(Some(why.clone()));
            }
            result.map_err(JsValue::from)
        })
    }

    /// Makes generation use the current version of `store` (the path of the CLI's `generate
    /// --store`: `lifelong::state::install`), or the plain model when the store is empty.
    /// Resolves to the installed concept tokens (`["<cat>", ...]`).
    #[wasm_bindgen(js_name = useConcepts)]
    pub fn use_concepts(&self, store: &ConceptStore) -> js_sys::Promise {
        let (this, store) = (self.handle(), store.clone());
        wasm_bindgen_futures::future_to_promise(async move {
            this.check_usable()?;
            if this.busy.get() {
                return Err(WebError::Busy("a generation is running").into());
            }
            let mut model = this.base.borrow().clone().ok_or(WebError::NoModel)?;
            let manifest = store.read_manifest().await?;
            let mut tokens = Vec::new();
            this.stored.replace(None);
            this.composed.replace(None);
            if manifest.current.is_some() {
                let (entry, blobs) = store.load(None).await?;
                // Read the state on the CPU: install() moves it to the GPU with to_data(), which
                // WebGPU could only do asynchronously.
                let adapter = state::stored_adapter(&mut model, &entry.concepts, &blobs, &Device::flex()).map_err(WebError::Model)?;
                if let Some(adapter) = adapter {
                    state::install_for(&mut model, &adapter, "").map_err(WebError::Model)?;
                    let key = state::route_key(&adapter, "").unwrap_or_default();
                    this.stored.replace(Some((adapter, key)));
                }
                tokens = entry.concepts.iter().map(|c| JsValue::from_str(&c.token)).collect();
            }
            this.pipeline.replace(Some(Rc::new(Pipeline::new(model, this.device.clone()))));
            Ok(tokens.into_iter().collect::<js_sys::Array>().into())
        })
    }

    /// Whether a model is loaded.
    #[wasm_bindgen(getter)]
    pub fn loaded(&self) -> bool {
        self.pipeline.borrow().is_some()
    }
}

impl Generator {
    fn handle(&self) -> Generator {
        Generator {
            device: self.device.clone(),
            base: self.base.clone(),
            pipeline: self.pipeline.clone(),
            stored: self.stored.clone(),
            composed: self.composed.clone(),
            busy: self.busy.clone(),
            lost: self.lost.clone(),
        }
    }

    /// With a routed store, reinstalls the concepts `prompt` names when they differ from the
    /// installed ones (a copy of the base model with those blocks merged).
    fn route(&self, prompt: &str) -> Result<(), WebError> {
        let mut stored = self.stored.borrow_mut();
        let Some((adapter, installed)) = stored.as_mut() else { return Ok(()) };
        // A shared adapter stays installed whole for every prompt.
        let Some(key) = state::route_key(adapter, prompt) else { return Ok(()) };
        if key == *installed {
            return Ok(());
        }
        let mut model = self.base.borrow().clone().ok_or(WebError::NoModel)?;
        state::install_for(&mut model, adapter, prompt).map_err(WebError::Model)?;
        self.pipeline.replace(Some(Rc::new(Pipeline::new(model, self.device.clone()))));
        *installed = key;
        Ok(())
    }

    /// With a store and a prompt naming two or more of its concepts (routed blocks or a shared
    /// adapter), their composition by region (src/lifelong/compose.rs), as the CLI's `generate
    /// --store` draws them; else, for a
    /// relation prompt of two plain objects, theirs when `objects` asks or (absent) the model is a
    /// shapes-world one, as `generate` decides.
    fn compose(&self, pipeline: &Pipeline, prompt: &str, objects: Option<bool>) -> Result<Option<Composer>, WebError> {
        let key = format!("{prompt}\u{0}{objects:?}");
        if let Some((planned_for, composer)) = self.composed.borrow().as_ref() {
            if *planned_for == key {
                return Ok(Some(composer.clone()));
            }
        }
        let [_, h, w] = pipeline.latent_shape();
        let stored = self.stored.borrow();
        let base = self.base.borrow();
        let composer = match (stored.as_ref(), base.as_ref()) {
            (Some((adapter, _)), Some(base)) if adapter.concepts_in(prompt).len() >= 2 => Composer::plan(adapter, base, prompt, [h, w]).map_err(WebError::Model)?,
            _ if objects.unwrap_or_else(|| composes_objects_by_default(&pipeline.model)) => {
                Composer::plan_objects(&pipeline.model, prompt, [h, w]).map_err(WebError::Model)?
            }
            _ => None,
        };
        self.composed.replace(composer.clone().map(|c| (key, c)));
        Ok(composer)
    }

    fn check_usable(&self) -> Result<(), WebError> {
        match self.lost.borrow().as_ref() {
            Some(why) => Err(WebError::DeviceLost(why.clone())),
            None => Ok(()),
        }
    }
}

/// Steps the pipeline, awaiting a read-back after each step (the step's true GPU time and a preview).
async fn run(pipeline: &Pipeline, options: &GenerateOptions, composer: Option<Composer>, on_progress: &Function) -> Result<JsValue, WebError> {
    let start = js_sys::Date::now();
    // The one-object clauses each region was drawn from (empty when nothing was composed).
    let regions: js_sys::Array = composer.iter().flat_map(|c| c.clauses.iter()).map(|c| JsValue::from_str(&c.prompt)).collect();
    let mut run = pipeline.start(options)?;
    run.set_composer(composer).map_err(WebError::Model)?;
    let mut last = start;
    let mut steps_ms = 0.0;
    loop {
        let Some(step) = run.step()? else { break };
        let (step_no, total, timestep) = (step.step, step.total, step.timestep);
        let preview = pipeline::preview_rgb(step.latents);
        let [_, _, ph, pw] = preview.dims();
        let rgb = read_rgb8(&preview).await?;
        let now = js_sys::Date::now();
        let ms = now - last;
        steps_ms += ms;
        last = now;
        let progress = object(&[
            ("step", step_no.into()),
            ("total", total.into()),
            ("timestep", timestep.into()),
            ("msPerStep", ms.into()),
            ("preview", js_sys::Uint8ClampedArray::from(rgba(&rgb).as_slice()).into()),
            ("previewWidth", pw.into()),
            ("previewHeight", ph.into()),
        ]);
        // A throwing callback must not abort the generation; the page only loses one update.
        let _ = on_progress.call1(&JsValue::NULL, &progress);
    }
    // Each concept's region keeps its drawing that looks most like its lesson pictures, and the
    // composed objects move apart on their latents' values, all read back without blocking.
    if let Some(images) = run.to_choose() {
        let [_, _, h, w] = images[0].dims();
        let mut drawings = Vec::with_capacity(images.len());
        for image in &images {
            drawings.push(read_rgb8(image).await?);
        }
        run.choose(&drawings, w, h);
    }
    if let Some(parts) = run.to_settle() {
        let mut values = Vec::with_capacity(parts.len());
        for part in parts {
            values.push(read_f32(part).await?);
        }
        run.settle(&values);
    }
    let generation = run.finish();
    let [_, _, height, width] = generation.image.dims();
    let rgb = read_rgb8(&generation.image).await?;
    let png = crate::world::render::png_bytes(&rgb, width, height, 1)?;
    let warnings: js_sys::Array = generation.warnings.iter().map(|w| JsValue::from_str(w)).collect();
    Ok(object(&[
        ("rgba", js_sys::Uint8ClampedArray::from(rgba(&rgb).as_slice()).into()),
        ("png", Uint8Array::from(png.as_slice()).into()),
        ("width", width.into()),
        ("height", height.into()),
        ("warnings", warnings.into()),
        ("regions", regions.into()),
        ("msPerStep", (steps_ms / options.steps.max(1) as f64).into()),
        ("totalMs", (js_sys::Date::now() - start).into()),
    ]))
}

/// `[1, 3, h, w]` in [0, 1] -> RGB bytes, read back asynchronously (WebGPU cannot block).
/// A failed read-back means the device is gone: nothing else fails there.
async fn read_rgb8(image: &Tensor<4>) -> Result<Vec<u8>, WebError> {
    Ok(pipeline::quantize_rgb8(&read_f32(pipeline::image_hwc(image)).await?))
}

/// A tensor's values as f32, read back asynchronously; a failed read-back means the device is gone.
async fn read_f32<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>, WebError> {
    let data = tensor.into_data_async().await.map_err(|e| WebError::DeviceLost(format!("{e:?}")))?;
    data.convert::<f32>().try_to_vec::<f32>().map_err(|e| WebError::DeviceLost(format!("read-back gave {e:?}")))
}

fn rgba(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect()
}

pub(crate) fn object(fields: &[(&str, JsValue)]) -> JsValue {
    let obj = Object::new();
    for (key, value) in fields {
        // Setting a plain property on a fresh object cannot fail.
        let _ = Reflect::set(&obj, &JsValue::from_str(key), value);
    }
    obj.into()
}

/// Panics go to the console with their message instead of a bare `unreachable`; the instance is
/// dead afterwards and the page restarts the worker.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| web_sys::console::error_1(&format!("lifelong-diffusion panicked: {info}").into())));
    });
}
