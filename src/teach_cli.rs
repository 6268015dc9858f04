//! `lifelong-diffusion teach` and `concepts`: argument parsing, image files, the store folder and
//! progress around `lifelong_diffusion::lifelong` (the learning lives in the library).

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use lifelong_diffusion::lifelong::adapter::AdapterConfig;
use lifelong_diffusion::lifelong::images::fit_rgb8;
use lifelong_diffusion::lifelong::learner::{self, Learner, MemoryOptions, Method, Picture};
use lifelong_diffusion::lifelong::lesson::LessonOptions;
use lifelong_diffusion::lifelong::state;
use lifelong_diffusion::native::{self, Backend, Folder};
use lifelong_diffusion::lifelong::compose::Composer;
use lifelong_diffusion::native_store::{default_store_dir, FolderStore};
use lifelong_diffusion::pipeline::Pipeline;
use lifelong_diffusion::{loader, Error, Result};

#[derive(Clone, Copy, ValueEnum)]
pub enum MethodArg {
    /// Concept-gated blocks of one shared adapter, held by replay (TAME) and distillation (ECD).
    L2dm,
    /// Session 24's L2DM: ungated blocks, the text side kept in a null space.
    L2dmNullSpace,
    Finetune,
    Ewc,
    LoraMerge,
    /// One LoRA block per concept; a prompt generates with the blocks of the concepts it names.
    Routed,
}

impl MethodArg {
    fn method(self) -> Method {
        match self {
            MethodArg::L2dm => Method::L2dm,
            MethodArg::L2dmNullSpace => Method::L2dmNullSpace,
            MethodArg::Finetune => Method::Finetune,
            MethodArg::Ewc => Method::Ewc,
            MethodArg::LoraMerge => Method::LoraMerge,
            MethodArg::Routed => Method::Routed,
        }
    }
}

#[derive(clap::Args)]
pub struct TeachArgs {
    /// The concept's name (a-z, 0-9, '_', '-'); prompts address it as `<name>`.
    #[arg(long)]
    pub name: String,
    /// 3-5 pictures of it (PNG, JPEG or WebP, any size: centre-cropped and resized).
    #[arg(long, num_args = 1.., required = true)]
    pub images: Vec<PathBuf>,
    /// Words for the pictures' prompts: one for all, or one per picture ("on the left", or a
    /// template such as "a large {} on a night background").
    #[arg(long)]
    pub words: Vec<String>,
    /// The concept store; default: the user's data folder.
    #[arg(long)]
    pub store: Option<PathBuf>,
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Lesson steps; default 300 for `routed` (about 63 s for the built-in model on two CPU
    /// cores; README, "Lessons": 500 identified less in the eight-concept run), 150 for the
    /// shared-adapter methods.
    #[arg(long)]
    pub steps: Option<usize>,
    /// routed: one LoRA block per concept, so nothing taught before changes; l2dm: one shared
    /// adapter, protected by replay and distillation (the paper), each lesson's block kept off
    /// earlier prompts' text directions (src/lifelong/null_space.rs); finetune, ewc, lora-merge: the
    /// baselines. A store's concepts are all routed or all shared; default: what the store
    /// holds, routed for an empty store.
    #[arg(long, value_enum)]
    pub method: Option<MethodArg>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu (default for lessons) or wgpu.
    #[arg(long, default_value = "cpu")]
    pub backend: String,
}

#[derive(Subcommand)]
pub enum ConceptsCommand {
    /// The store's concepts and versions.
    List(StoreArgs),
    /// A new version without the concept.
    Remove {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Make an earlier version current again.
    Restore {
        version: u32,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Write the current (or --version) state as one portable file.
    Export {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        version: Option<u32>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Import an exported file as a new version (checked against the model).
    Import {
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(clap::Args)]
pub struct StoreArgs {
    #[arg(long)]
    pub store: Option<PathBuf>,
    #[arg(long)]
    pub model: Option<PathBuf>,
}

/// `--model`, else the built-in model folder.
pub fn model_dir(model: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(dir) = model {
        return Ok(dir);
    }
    let builtin = Path::new(env!("CARGO_MANIFEST_DIR")).join("www/models/builtin");
    if builtin.join("model_index.json").exists() {
        return Ok(builtin);
    }
    Err(Error::InvalidInput("no model given and no built-in model found; pass --model DIR (a diffusers pipeline folder)".into()))
}

/// A store belongs to one base model: its id is the folder's name plus an FNV-1a hash of its
/// configs and of each weights file's size, head and tail (cheap even for multi-GB checkpoints).
pub fn model_id(dir: &Path) -> Result<String> {
    let mut files = Vec::new();
    for part in ["unet", "text_encoder", "vae"] {
        let folder = dir.join(part);
        for file in std::fs::read_dir(&folder).map_err(|source| Error::Read { path: folder.clone(), source })?.flatten().map(|e| e.path()) {
            if file.extension().is_some_and(|e| e == "json" || e == "safetensors") {
                let bytes = std::fs::read(&file).map_err(|source| Error::Read { path: file.clone(), source })?;
                let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                files.push((format!("{part}/{name}"), bytes));
            }
        }
    }
    let name = dir.canonicalize().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_else(|| "model".into());
    Ok(lifelong_diffusion::lifelong::store::model_id(&name, files.iter().map(|(p, b)| (p.as_str(), b.as_slice()))))
}

fn open_store(store: Option<PathBuf>, model: &Path) -> Result<FolderStore> {
    let dir = match store {
        Some(d) => d,
        None => default_store_dir()?,
    };
    FolderStore::open(dir, &model_id(model)?)
}

/// Decodes an image file (PNG, JPEG, WebP) to RGB8.
fn read_picture(path: &Path, size: usize, device: &burn::prelude::Device) -> Result<burn::prelude::Tensor<4>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read { path: path.into(), source })?;
    let image = image::load_from_memory(&bytes)
        .map_err(|e| Error::InvalidInput(format!("{}: not a PNG, JPEG or WebP image this program can read ({e})", path.display())))?
        .to_rgb8();
    let (w, h) = image.dimensions();
    fit_rgb8(image.as_raw(), w as usize, h as usize, size, device)
}

/// Loads the learner for `model_dir` with the store's current state.
pub fn open_learner(model_dir: &Path, store: &FolderStore, backend: Backend) -> Result<Learner> {
    let (device, _) = native::open_device(Some(backend))?;
    let base = loader::load(&Folder(model_dir.into()), &device)?;
    let trained = loader::load(&Folder(model_dir.into()), &device.clone().autodiff())?;
    let mut learner = Learner::new(base, device, trained, AdapterConfig::default())?;
    if store.manifest().current.is_some() {
        let (entry, blobs) = store.load(None)?;
        state::load(&mut learner, &entry.concepts, &blobs)?;
    }
    Ok(learner)
}

/// The base memory's prompts: six world captions for the built-in model, four generic ones otherwise.
fn base_prompts(model_dir: &Path) -> Vec<String> {
    let world = model_dir.ends_with("models/builtin");
    learner::base_prompts(world, if world { 6 } else { 4 })
}

pub fn teach(args: TeachArgs) -> Result<()> {
    let started = Instant::now();
    let model_dir = model_dir(args.model)?;
    let mut store = open_store(args.store, &model_dir)?;
    let backend = if args.backend == "wgpu" { Backend::Wgpu } else { Backend::Cpu };
    let mut learner = open_learner(&model_dir, &store, backend)?;
    let [size, _] = Pipeline::new(learner.base.clone(), learner.device.clone()).image_size();
    if args.words.len() > 1 && args.words.len() != args.images.len() {
        return Err(Error::InvalidInput(format!("give one --words for all pictures or one per picture ({} pictures, {} --words)", args.images.len(), args.words.len())));
    }
    let pictures = args
        .images
        .iter()
        .enumerate()
        .map(|(i, path)| Ok(Picture { image: read_picture(path, size, &learner.device)?, words: args.words.get(i).or(args.words.first()).cloned() }))
        .collect::<Result<Vec<_>>>()?;
    let method = args.method.map_or_else(|| learner.default_method(), MethodArg::method);
    let steps = args.steps.unwrap_or(method.default_steps());
    if steps == 0 {
        return Err(Error::InvalidInput("--steps must be at least 1".into()));
    }
    let memory = MemoryOptions::default();
    if method.keeps_memory() && !method.gated() && !learner.memories.iter().any(|m| m.concept.is_none()) {
        eprintln!("generating base-model memory (once per store)...");
        learner.remember_base(&base_prompts(&model_dir), &memory, args.seed)?;
    }
    let options = LessonOptions { steps, seed: args.seed, ..LessonOptions::default() };
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} loss {msg} [{elapsed_precise} < {eta}]").expect("static template"));
    let report = learner.lesson(&args.name, &pictures, method, &options, &memory, &mut |p| {
        bar.set_position(p.step as u64);
        bar.set_message(format!("{:.4}", p.loss));
    })?;
    bar.finish_and_clear();
    let previous = store.manifest().current_entry().map(|e| e.concepts.clone()).unwrap_or_default();
    let (concepts, blobs) = state::save(&learner, &previous, store.manifest().next_version())?;
    let lesson = serde_json::json!({
        "concept": args.name, "method": method, "steps": report.steps, "first_loss": report.first_loss,
        "last_loss": report.last_loss, "seconds": started.elapsed().as_secs_f64(), "images": args.images.len(),
        "started_from": report.init_words.first().map(|w| w.0.clone()),
    });
    let version = store.commit(&format!("teach <{}>", args.name), concepts, &blobs, lesson)?;
    eprintln!(
        "taught <{}> ({}) in {:.1} s (loss {:.4} -> {:.4}, started from {}); store {} is at version {version}",
        args.name,
        method.name(),
        started.elapsed().as_secs_f64(),
        report.first_loss,
        report.last_loss,
        report.init_words.first().map_or("the mean embedding".to_string(), |w| format!("the word \"{}\"", w.0)),
        store.dir().display()
    );
    Ok(())
}

pub fn concepts(command: ConceptsCommand) -> Result<()> {
    match command {
        ConceptsCommand::List(s) => {
            let store = open_store(s.store, &model_dir(s.model)?)?;
            let m = store.manifest();
            println!("store {} (model {}), current version {:?}", store.dir().display(), m.model_id, m.current);
            for v in &m.versions {
                let names: Vec<&str> = v.concepts.iter().map(|c| c.token.as_str()).collect();
                let bytes: u64 = v.files.iter().map(|f| f.bytes).sum();
                println!("  v{}{}: {} [{}] {} KB", v.version, if Some(v.version) == m.current { " (current)" } else { "" }, v.note, names.join(" "), bytes / 1024);
            }
        }
        ConceptsCommand::Remove { name, store } => {
            let mut s = open_store(store.store, &model_dir(store.model)?)?;
            let v = s.remove(&name)?;
            eprintln!("removed <{name}>: version {v}");
        }
        ConceptsCommand::Restore { version, store } => {
            let mut s = open_store(store.store, &model_dir(store.model)?)?;
            s.restore(version)?;
            eprintln!("version {version} is current again");
        }
        ConceptsCommand::Export { out, version, store } => {
            let s = open_store(store.store, &model_dir(store.model)?)?;
            s.export(version, &out)?;
            eprintln!("wrote {}", out.display());
        }
        ConceptsCommand::Import { file, store } => {
            let mut s = open_store(store.store, &model_dir(store.model)?)?;
            let v = s.import(&file)?;
            eprintln!("imported {}: version {v}", file.display());
        }
    }
    Ok(())
}

/// What [`apply_store`] installed: notes for the user, the concept tokens, and for a prompt that
/// names two or more routed concepts their composition by region.
#[derive(Default)]
pub struct Applied {
    pub notes: Vec<String>,
    pub tokens: Vec<String>,
    pub composer: Option<Composer>,
    /// The guidance the prompt draws with when the user asks for none: `Some` when it names
    /// routed concepts ([`state::ROUTED_GUIDANCE`]).
    pub guidance: Option<f32>,
}

/// Installs the concepts of `store` (or of the user's default store, when it exists and belongs
/// to this model) into `pipeline`, as `prompt` uses them (a routed store: the blocks of the
/// concepts it names; with two or more named, their composition is planned too).
pub fn apply_store(pipeline: &mut Pipeline, store: Option<PathBuf>, model: Option<PathBuf>, prompt: &str) -> Result<Applied> {
    let dir = model_dir(model)?;
    let explicit = store.is_some();
    let store_dir = match store {
        Some(d) => d,
        None => match default_store_dir() {
            Ok(d) if d.join("manifest.json").exists() => d,
            _ => return Ok(Applied::default()),
        },
    };
    let store = match FolderStore::open(&store_dir, &model_id(&dir)?) {
        Ok(s) => s,
        Err(e) if !explicit => return Ok(Applied { notes: vec![format!("note: not using the concept store {}: {e}", store_dir.display())], ..Applied::default() }),
        Err(e) => return Err(e),
    };
    if store.manifest().current.is_none() {
        return Ok(Applied::default());
    }
    let (entry, blobs) = store.load(None)?;
    let device = pipeline.device.clone();
    let (mut composer, mut guidance) = (None, None);
    if let Some(adapter) = state::stored_adapter(&mut pipeline.model, &entry.concepts, &blobs, &device)? {
        let [_, h, w] = pipeline.latent_shape();
        composer = Composer::plan(&adapter, &pipeline.model, prompt, [h, w])?;
        state::install_for(&mut pipeline.model, &adapter, prompt)?;
        guidance = state::names_routed(&adapter, prompt).then_some(state::ROUTED_GUIDANCE);
    }
    let tokens: Vec<String> = entry.concepts.iter().map(|c| c.token.clone()).collect();
    let notes = vec![format!("concepts from {} (version {}): {}", store_dir.display(), entry.version, tokens.join(" "))];
    Ok(Applied { notes, tokens, composer, guidance })
}
