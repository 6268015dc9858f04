//! The lifelong learner: a base model, the adapter state and the memories, and what a lesson does
//! end to end (encode images, train, rebuild memory). No I/O: callers load and save through a
//! store (src/native_store.rs natively, IndexedDB in the browser).

use burn::prelude::*;

use super::adapter::{Adapter, AdapterConfig};
use super::lesson::{teach, Example, LessonOptions, LessonProgress, LessonReport, Prior, Replay, Trainer};
use super::gate;
use super::null_space;
pub use super::method::{Method, StateKind};
use super::protect::accumulate_fisher;
use super::selfcheck::{best_candidate, signature, SampleOptions, Signature};
use super::init::{self, Scored};
use super::invert::picture_latents;
use super::memory::{features, generate_items, Memory};
use super::store::{concept_token, validate_concept_name};
use crate::error::{Error, Result};
use crate::world::{prompt_at, SceneKind, Split};
use crate::loader::LoadedModel;
use crate::pipeline::{image_to_rgb8, Pipeline};


/// One teaching image: RGB in [0, 1] at the model's resolution `[1, 3, H, W]`, and optional
/// words: appended to "a <name>", or a template where `{}` stands for the token.
#[derive(Debug, Clone)]
pub struct Picture {
    pub image: Tensor<4>,
    pub words: Option<String>,
}

/// Settings of memory building after a lesson.
#[derive(Debug, Clone)]
pub struct MemoryOptions {
    /// Samples kept per concept.
    pub keep: usize,
    /// Candidates generated for the new concept (the best `keep` stay).
    pub candidates: usize,
    /// Candidates regenerated per earlier concept at each lesson (rainbow refresh).
    pub refresh: usize,
    pub steps: usize,
    pub guidance: f32,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self { keep: 4, candidates: 6, refresh: 1, steps: 20, guidance: 7.5 }
    }
}

/// Builds the prompt of a picture.
pub fn picture_prompt(token: &str, words: Option<&str>) -> String {
    match words.map(str::trim).filter(|w| !w.is_empty()) {
        Some(w) if w.contains("{}") => w.replace("{}", token),
        Some(w) => format!("a {token} {w}"),
        None => format!("a {token}"),
    }
}

/// `n` prompts whose base-model samples protect plain prompts during lessons: shapes-world
/// captions for the built-in model (its whole language), generic ones (cycled) otherwise. The
/// CLI, the page and `eval lifelong` all draw their base memory from here.
pub fn base_prompts(world: bool, n: usize) -> Vec<String> {
    if world {
        (0..n as u64).map(|i| prompt_at(7, i, Split::Train, if i % 2 == 0 { SceneKind::Single } else { SceneKind::Pair }).caption).collect()
    } else {
        let generic = ["a photo of a dog", "a landscape with mountains", "a red car on a street", "a bowl of fruit on a table"];
        generic.iter().cycle().take(n).map(|s| s.to_string()).collect()
    }
}

/// What a lesson's candidate states are checked against (src/lifelong/selfcheck.rs).
struct SelfCheck {
    taught: Vec<Signature>,
    sample: SampleOptions,
}

/// Base model (for generation, on a plain device), trainer (same model on an autodiff device),
/// the adapter and the memories.
pub struct Learner {
    pub base: LoadedModel,
    pub device: Device,
    pub trainer: Trainer,
    pub adapter: Adapter,
    pub memories: Vec<Memory>,
    /// The configured adapter: rank and alpha of each new block of `lora-merge` and `routed`
    /// (the adapter's own rank grows by one block per concept).
    pub block: AdapterConfig,
}

impl Learner {
    /// A learner with an empty adapter. `base` and `trained` are the same model loaded on
    /// `device` and on `device.autodiff()`.
    pub fn new(base: LoadedModel, device: Device, trained: LoadedModel, config: AdapterConfig) -> Result<Self> {
        let ad = device.clone().autodiff();
        let mut trainer = Trainer::new(trained, ad.clone())?;
        let adapter = Adapter::new(&mut trainer.model.unet, config.clone(), 0, &ad)?;
        Ok(Self { base, device, trainer, adapter, memories: Vec::new(), block: config })
    }

    /// A generation pipeline with the current state installed.
    pub fn pipeline(&self) -> Result<Pipeline> {
        let mut model = self.base.clone();
        self.adapter.install(&mut model)?;
        Ok(Pipeline::new(model, self.device.clone()))
    }

    /// The pipeline for `prompt`: the adapter routed to the concepts the prompt names (the
    /// whole adapter unless it is routed; see [`Adapter::routed`]).
    pub fn pipeline_for(&self, prompt: &str) -> Result<Pipeline> {
        let mut model = self.base.clone();
        self.adapter.routed(&self.adapter.concepts_in(prompt)).install(&mut model)?;
        Ok(Pipeline::new(model, self.device.clone()))
    }

    /// Teaches concept `name` from `pictures`; on return the adapter and memories hold the new
    /// state (the caller saves it as a new version, or drops the learner to keep the old one).
    pub fn lesson(
        &mut self,
        name: &str,
        pictures: &[Picture],
        method: Method,
        options: &LessonOptions,
        memory: &MemoryOptions,
        progress: &mut dyn FnMut(LessonProgress),
    ) -> Result<LessonReport> {
        validate_concept_name(name).map_err(|e| Error::InvalidInput(e.to_string()))?;
        if pictures.is_empty() {
            return Err(Error::InvalidInput("a lesson needs at least one picture (3-5 work best)".into()));
        }
        self.check_method(method)?;
        let token = concept_token(name);
        let token_id = self.trainer.model.tokenizer.add_token(&token)?;
        let (new, refined) = self.examples(&token, pictures, options.refine_steps)?;
        let mut replay = self.replay();
        if method.gated() {
            // The new block is closed on every memory prompt (none holds its token) and earlier
            // blocks and tokens are held (src/lifelong/gate.rs): replay and distillation would give
            // exactly zero gradient at twice a step's cost, so a gated lesson leaves them out.
            replay.clear();
        }
        let teacher = (!replay.is_empty()).then(|| self.adapter.frozen(&self.trainer.device));
        let (init, ranked) = self.initial_embedding(&token, &new, options)?;
        let options = LessonOptions { protection: method.protection(), uncond: method.uncond(options.uncond, options.image_sites), ..options.clone() };
        let views = self.views(&token, pictures, &new, &options)?;
        let taught_on: Vec<Example> = new.iter().cloned().chain(views).collect();
        // Kept with the concept (a silhouette and a colour per picture, not the picture), so that
        // composition can keep the drawing of its region that looks most like what it was taught.
        let mut looks = self.signatures(pictures)?;
        looks.truncate(super::store::MAX_LOOKS);
        let mut report = if matches!(method, Method::LoraMerge | Method::Routed) {
            // The self-check compares with the pictures' signatures; it needs two candidates.
            let taught = if options.candidates > 1 { looks.clone() } else { Vec::new() };
            // Candidates are drawn as the concept will be: a routed concept's prompts default to
            // their own guidance (at 7.5, seed 2's hourglass block drew its clause right 3 times
            // in 16, at 3 7 times: README, "Lessons", session 27).
            let guidance = if method == Method::Routed { super::state::ROUTED_GUIDANCE } else { memory.guidance };
            let check = SelfCheck { taught, sample: SampleOptions { steps: memory.steps, guidance, seed: options.seed ^ 0xC4EC } };
            self.lesson_merged(name, &token, token_id, init, (&taught_on, &new), &options, method == Method::Routed, &check, progress)?
        } else {
            let (mut student, guard) = if options.protection.gated { (gate::student(self, options.seed)?, None) } else { null_space::student(self, &options)? };
            student.add_concept(name, &token, token_id, init)?;
            let prior = Prior { teacher: teacher.as_ref(), guard: guard.as_ref() };
            let mut report = teach(&self.trainer, &mut student, prior, &taught_on, &replay, &options, progress)?;
            report.protected = guard.map(|g| g.dims);
            self.adapter = student;
            report
        };
        if let Some(concept) = self.adapter.concepts.iter_mut().find(|c| c.name == name) {
            concept.looks = looks;
        }
        report.init_words = ranked.into_iter().take(3).map(|s| (s.word, s.error)).collect();
        report.refined = refined;
        if method == Method::Ewc {
            accumulate_fisher(&self.trainer, &mut self.adapter, &new, 8, options.seed ^ 0xF15)?;
        }
        if method.keeps_memory() {
            self.remember(name, &token, &new, memory, options.seed)?;
        }
        Ok(report)
    }

    /// The method a lesson takes when none is asked for: what the state already holds (a state
    /// is routed or shared, never both), `routed` for an empty one. Routed lessons are the ones
    /// that keep every concept on the built-in model (README, "Lessons": nothing forgotten over
    /// eight lessons, where the shared adapter under L2DM's replay and distillation still forgets).
    pub fn default_method(&self) -> Method {
        match self.adapter.kind() {
            _ if self.adapter.concepts.is_empty() => Method::Routed,
            StateKind::Routed => Method::Routed,
            StateKind::Gated => Method::L2dm,
            StateKind::Shared => Method::L2dmNullSpace,
        }
    }

    /// A state is routed (each concept its own block) or shared, never both: a shared lesson would
    /// train every concept's block, a routed one cannot isolate concepts that share rows.
    fn check_method(&self, method: Method) -> Result<()> {
        let kind = self.adapter.kind();
        if self.adapter.concepts.is_empty() || kind == StateKind::of(method) {
            return Ok(());
        }
        Err(Error::InvalidInput(match kind {
            StateKind::Routed => "this store's concepts were taught with the `routed` method (one LoRA block each); teach with `--method routed` or use another store".into(),
            StateKind::Gated => "this store's concepts were taught with `--method l2dm` (concept-gated blocks); teach with `--method l2dm` or use another store".into(),
            StateKind::Shared => format!("this store's concepts share one ungated adapter; `{}` needs an empty store or one taught the same way (`--method l2dm-null-space`)", method.name()),
        }))
    }

    /// Custom-Diffusion-style: a fresh rank-r LoRA learns the concept alone, then is appended to
    /// the shared one (the merged update is the sum of both), growing the rank.
    /// Trains a fresh LoRA for the concept alone, then appends it to the adapter's rank rows
    /// (Custom Diffusion-style merging); `route` records the block as the concept's own.
    #[allow(clippy::too_many_arguments)]
    fn lesson_merged(
        &mut self,
        name: &str,
        token: &str,
        token_id: i64,
        init: Tensor<2>,
        (new, pictures): (&[Example], &[Example]),
        options: &LessonOptions,
        route: bool,
        check: &SelfCheck,
        progress: &mut dyn FnMut(LessonProgress),
    ) -> Result<LessonReport> {
        let ad = self.trainer.device.clone();
        // Each block has the configured rank, on the projections the adapter already adapts (a
        // state loaded from a store keeps its own targets).
        let block = AdapterConfig { targets: self.adapter.config.targets.clone(), ..self.block.clone() };
        let mut fresh = Adapter::new(&mut self.trainer.model.unet, block, options.seed, &ad)?;
        fresh.add_concept(name, token, token_id, init)?;
        let mut report = teach(&self.trainer, &mut fresh, Prior::default(), new, &[], options, progress)?;
        if report.candidates.len() > 1 && !check.taught.is_empty() {
            let prompts: Vec<String> = pictures.iter().map(|e| e.prompt.clone()).collect();
            // The base model with the trainer's tokenizer: the earlier concepts' tokens keep
            // their ids, so the new one installs at the id it was trained with.
            let mut base = self.base.clone();
            base.tokenizer = self.trainer.model.tokenizer.clone();
            let (step, scores) = best_candidate(&base, &self.device, &fresh, &report.candidates, &prompts, &check.taught, &check.sample)?;
            if let Some((_, params)) = report.candidates.iter().find(|c| c.0 == step) {
                fresh.set_params(params.clone());
                report.kept_step = step;
            }
            report.scores = report.candidates.iter().map(|c| c.0).zip(scores).collect();
        }
        let old = self.adapter.frozen(&ad);
        let fresh = fresh.frozen(&ad);
        if old.concepts.is_empty() {
            // Nothing taught yet: the old adapter is zero (B = 0), so the fresh block alone is
            // the same model without rank rows that carry nothing.
            let routes = if route { std::iter::once(0..fresh.config.rank).collect() } else { Vec::new() };
            self.adapter = Adapter { routes, ..fresh }.trainable(&ad);
            return Ok(report);
        }
        let (old_rank, fresh_rank) = (old.config.rank, fresh.config.rank);
        let mut config = old.config.clone();
        config.rank += fresh_rank;
        // Each block keeps the strength it was trained (or merged) with: W + s * B A with
        // s = alpha / rank, so rows are rescaled by their own scale over the merged one.
        let (old_k, fresh_k) = (old.config.scale() / config.scale(), fresh.config.scale() / config.scale());
        let merged_down = old.down.iter().zip(&fresh.down).map(|(a, b)| Tensor::cat(vec![a.clone(), b.clone()], 1)).collect();
        let merged_up = old.up.iter().zip(&fresh.up).map(|(a, b)| Tensor::cat(vec![a.clone().mul_scalar(old_k), b.clone().mul_scalar(fresh_k)], 0)).collect();
        let mut routes = if route { old.routes.clone() } else { Vec::new() };
        if route {
            routes.push(old_rank..old_rank + fresh_rank);
        }
        let mut merged = Adapter { down: merged_down, up: merged_up, config, routes, ..old };
        merged.add_concept(name, token, token_id, fresh.embeddings[0].clone())?;
        self.adapter = merged.trainable(&ad);
        Ok(report)
    }

    /// The lesson's examples: each picture's latents (refined by `refine_steps` decoder steps
    /// when the VAE's round trip loses the pictures, see `invert`) with its prompt; and the share
    /// of pixels the round trip lost when the latents were refined. Pictures must already be at
    /// the model's resolution.
    pub fn examples(&self, token: &str, pictures: &[Picture], refine_steps: usize) -> Result<(Vec<Example>, Option<f32>)> {
        if pictures.is_empty() {
            return Ok((Vec::new(), None));
        }
        let model = &self.trainer.model;
        let [h, w] = Pipeline::new(self.base.clone(), self.device.clone()).image_size();
        let mut images = Vec::with_capacity(pictures.len());
        for p in pictures {
            let [b, c, ph, pw] = p.image.dims();
            if b != 1 || c != 3 || ph != h || pw != w {
                return Err(Error::InvalidInput(format!("teaching images must be RGB {h}x{w} after resizing, got {:?}", p.image.dims())));
            }
            images.push(Tensor::from_data(p.image.to_data(), &self.trainer.device));
        }
        // All pictures in one batch: the refinement's decoder passes cost less batched.
        let found = picture_latents(model, Tensor::cat(images, 0), refine_steps);
        let examples = pictures
            .iter()
            .enumerate()
            .map(|(i, p)| Example { latents: found.latents.clone().narrow(0, i, 1), prompt: picture_prompt(token, p.words.as_deref()) })
            .collect();
        Ok((examples, found.refined.then_some(found.far_share)))
    }

    /// The views of the `pictures` (their `examples`) that `options` asks for, when the model
    /// draws the shapes world, whose words they rewrite: place and caption views of the examples
    /// (src/lifelong/augment.rs; caption views are taken of place views too), then the size views
    /// of the pictures, encoded like them (src/lifelong/size_views.rs).
    fn views(&self, token: &str, pictures: &[Picture], examples: &[Example], options: &LessonOptions) -> Result<Vec<Example>> {
        if self.base.world.as_deref() != Some(crate::world::WORLD_NAME) {
            return Ok(Vec::new());
        }
        // `examples` checked every picture against the model's size.
        let side = pictures.first().map_or(0, |p| p.image.dims()[3]);
        let mut views = Vec::new();
        if options.place_views {
            for e in examples {
                views.extend(super::augment::place_views(e, side)?);
            }
        }
        if options.caption_views {
            let placed: Vec<Example> = examples.iter().chain(&views).flat_map(super::augment::caption_views).collect();
            views.extend(placed);
        }
        if options.size_views {
            views.extend(self.examples(token, &super::size_views::size_views(pictures)?, options.refine_steps)?.0);
        }
        Ok(views)
    }

    /// The teaching pictures' subjects, for the lesson's self-check and the concept's looks
    /// (pictures where nothing stands out from the border are left out).
    fn signatures(&self, pictures: &[Picture]) -> Result<Vec<Signature>> {
        let mut out = Vec::with_capacity(pictures.len());
        for p in pictures {
            let [_, _, h, w] = p.image.dims();
            out.extend(signature(&image_to_rgb8(&p.image)?, w, h));
        }
        Ok(out)
    }

    fn replay(&self) -> Vec<Replay> {
        let mut out = Vec::new();
        for memory in &self.memories {
            let concept = match &memory.concept {
                Some(name) => match self.adapter.concepts.iter().position(|c| &c.name == name) {
                    Some(i) => Some(i),
                    None => continue,
                },
                None => None,
            };
            for item in &memory.items {
                let latents = Tensor::from_data(item.latents.to_data(), &self.trainer.device);
                out.push(Replay { concept, example: super::lesson::Example { latents, prompt: item.prompt.clone() } });
            }
        }
        out
    }

    /// Where the new token's embedding starts: the embedding of the vocabulary word that best
    /// explains the pictures (`init::rank`, when `options.init_search` and there are candidates),
    /// else the neutral mean; with the ranking, best first.
    fn initial_embedding(&self, token: &str, new: &[Example], options: &LessonOptions) -> Result<(Tensor<2>, Vec<Scored>)> {
        if options.init_search {
            let words = init::candidates(&self.trainer, token, new);
            let ranked = init::rank(&self.trainer, &self.adapter, token, new, &words, options.seed ^ 0x1417)?;
            if let Some(best) = ranked.first() {
                let table = self.trainer.model.text_encoder.token_embedding.val().detach();
                return Ok((table.narrow(0, best.id as usize, 1), ranked));
            }
        }
        Ok((self.init_embedding(), Vec::new()))
    }

    /// The mean token embedding, rescaled to the mean row norm: a neutral start.
    fn init_embedding(&self) -> Tensor<2> {
        let table = self.trainer.model.text_encoder.token_embedding.val().detach();
        let rows = self.trainer.model.tokenizer.vocab_size().min(table.dims()[0]).max(1);
        let table = table.narrow(0, 0, rows);
        let mean = table.clone().mean_dim(0);
        let norm = table.square().sum_dim(1).sqrt().mean().into_scalar::<f32>();
        let mean_norm = mean.clone().square().sum().sqrt().into_scalar::<f32>().max(1e-6);
        mean.mul_scalar(norm / mean_norm)
    }
}

impl Learner {
    /// TAME after a lesson: the new concept's long-term bank from the lesson latents, its
    /// short-term memory from generated candidates that best match the bank, and a rainbow
    /// refresh of every earlier memory with the new state.
    fn remember(&mut self, name: &str, token: &str, new: &[Example], options: &MemoryOptions, seed: u64) -> Result<()> {
        let bank = new.iter().map(|e| features(&e.latents)).collect::<Result<Vec<_>>>()?;
        let pipeline = self.pipeline()?;
        let prompts: Vec<String> = new.iter().map(|e| e.prompt.clone()).chain(std::iter::once(picture_prompt(token, None))).collect();
        let candidates = generate_items(&pipeline, &prompts, options.candidates, options, &bank, seed)?;
        let mut memory = Memory { concept: Some(name.into()), items: Vec::new(), bank };
        memory.refresh(candidates, options.keep);
        for old in self.memories.iter_mut().filter(|m| m.concept.is_some()) {
            let prompts: Vec<String> = old.items.iter().map(|i| i.prompt.clone()).collect();
            let fresh = generate_items(&pipeline, &prompts, options.refresh, options, &old.bank, seed.wrapping_add(17))?;
            old.refresh(fresh, options.keep);
        }
        self.memories.retain(|m| m.concept.as_deref() != Some(name));
        self.memories.push(memory);
        Ok(())
    }

    /// Adds base-model memory (prompts without concepts, generated by the base model), which
    /// distillation and replay use to keep plain prompts as they were.
    pub fn remember_base(&mut self, prompts: &[String], options: &MemoryOptions, seed: u64) -> Result<()> {
        let pipeline = Pipeline::new(self.base.clone(), self.device.clone());
        let items = generate_items(&pipeline, prompts, prompts.len(), options, &[], seed)?;
        self.memories.retain(|m| m.concept.is_some());
        self.memories.push(Memory { concept: None, items, bank: Vec::new() });
        Ok(())
    }
}
