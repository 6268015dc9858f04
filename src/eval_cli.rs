//! `lifelong-diffusion eval world|lifelong`: arguments, the loops and printing around
//! `lifelong_diffusion::world::eval` and `lifelong_diffusion::lifelong::eval` (the measuring lives
//! in the library).

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;

use lifelong_diffusion::lifelong::adapter::{AdapterConfig, Target};
use lifelong_diffusion::lifelong::learner::{MemoryOptions, Method};
use lifelong_diffusion::lifelong::lesson::LessonOptions;
use lifelong_diffusion::native::{self, Backend, Folder};
use lifelong_diffusion::pipeline::Pipeline;
use lifelong_diffusion::{loader, Error, Result};

use crate::teach_cli::model_dir;
use crate::{open_pipeline, AttendArgs, BackendArg};

/// How each image of an eval is sampled.
#[derive(clap::Args)]
pub struct SamplingArgs {
    /// Denoising steps per image.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(clap::Args)]
pub struct EvalWorldArgs {
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Prompts per category (4 categories).
    #[arg(long, default_value_t = 200)]
    pub n: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
    /// Score the VAE alone: render each prompt's scene, encode and decode it (the generator's ceiling).
    #[arg(long)]
    pub reconstruct: bool,
    /// Run the concept attention artist on prompts with two or more objects (default: off, the
    /// plain model's figures).
    #[arg(long)]
    pub attend: bool,
    /// Which categories: all, single or two-object.
    #[arg(long, default_value = "all")]
    pub categories: String,
    #[command(flatten)]
    pub tuning: AttendArgs,
    /// Orthogonal attention's strength on two-object prompts, as `generate` draws them (0: the
    /// model alone).
    #[arg(long, default_value_t = lifelong_diffusion::pipeline::GenerateOptions::default().orthogonal)]
    pub orthogonal: f32,
    /// Draw two-object relation prompts whole, as the model alone places their objects (default:
    /// composed, each object's one-object clause in its region, as `generate` draws them).
    #[arg(long)]
    pub no_compose: bool,
}

#[derive(clap::Args)]
pub struct EvalLifelongArgs {
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Concepts taught in sequence (1-10; the table uses 8; one is for tuning lessons).
    #[arg(long, default_value_t = 8)]
    pub concepts: usize,
    /// Concepts by name, comma-separated, taught in this order (overrides --concepts), e.g.
    /// crescent,arrow,hourglass,chevron.
    #[arg(long, value_delimiter = ',')]
    pub names: Vec<String>,
    #[arg(long, default_value_t = 4)]
    pub images: usize,
    /// Training steps per lesson.
    #[arg(long, default_value_t = 150)]
    pub lesson_steps: usize,
    /// Identification prompts per concept.
    #[arg(long, default_value_t = 8)]
    pub probes: usize,
    /// Two-concept and two-object prompts.
    #[arg(long, default_value_t = 16)]
    pub pairs: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Comma-separated rows: l2dm, finetune, ewc, lora-merge, routed, no-tame, no-ecd, no-oa,
    /// no-null-space (no-caa comes
    /// with l2dm: the same state generating without the artist).
    #[arg(long, default_value = "finetune,ewc,lora-merge,l2dm,no-tame,no-ecd,no-oa")]
    pub methods: String,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    /// Projections with a LoRA, comma-separated: k, v, q, out (cross-attention), self-q, self-k,
    /// self-v, self-out (self-attention), ff-in, ff-out (feed-forward), or all.
    #[arg(long, default_value = "all")]
    pub targets: String,
    /// Learning rates of the LoRA and of the concept embeddings.
    #[arg(long, default_value_t = 3e-3)]
    pub lr_lora: f64,
    #[arg(long, default_value_t = 1e-2)]
    pub lr_token: f64,
    /// The learning rates' share at a lesson's last step (half-cosine decay; 1 keeps them constant).
    #[arg(long, default_value_t = LessonOptions::default().lr_end)]
    pub lr_end: f64,
    /// Extra weight of the object's latent positions in a lesson's loss (0: none).
    #[arg(long, default_value_t = LessonOptions::default().object_weight)]
    pub object_weight: f32,
    /// Candidate states a routed or merged lesson keeps along its second half, the one whose
    /// samples best match the pictures kept (1: the last state).
    #[arg(long, default_value_t = LessonOptions::default().candidates)]
    pub candidates: usize,
    /// Share of a lesson's rows trained with the empty prompt (caption dropout).
    #[arg(long, default_value_t = LessonOptions::default().prompt_dropout)]
    pub prompt_dropout: f32,
    /// Decay of the moving average of the adapter a lesson ends with (0: the last step's).
    #[arg(long, default_value_t = LessonOptions::default().ema)]
    pub ema: f64,
    /// Start each concept's embedding at the mean embedding instead of the word that best
    /// explains its pictures.
    #[arg(long)]
    pub no_init_search: bool,
    /// Decoder steps that refine the teaching pictures' latents (0: the encoder's latents).
    #[arg(long, default_value_t = LessonOptions::default().refine_steps)]
    pub refine_steps: usize,
    /// Also teach each picture with its object moved to the other places (src/lifelong/augment.rs).
    #[arg(long)]
    pub place_views: bool,
    /// Also teach each picture under its shorter true captions (size, place, background left out).
    #[arg(long)]
    pub caption_views: bool,
    /// Do not also teach each large picture shrunk to the small size (src/lifelong/size_views.rs;
    /// on by default).
    #[arg(long)]
    pub no_size_views: bool,
    /// Null-space lessons (`l2dm`) adapt the cross-attention keys and values only, where the
    /// null space guards earlier prompts exactly (default: every projection).
    #[arg(long)]
    pub text_sites_only: bool,
    /// ECD's base distillation weight lambda_0 and elasticity kappa, and TAME's replay weight mu.
    #[arg(long, default_value_t = LessonOptions::default().distill)]
    pub distill: f32,
    #[arg(long, default_value_t = LessonOptions::default().kappa)]
    pub kappa: f32,
    #[arg(long, default_value_t = LessonOptions::default().mu)]
    pub mu: f32,
    /// Weight of the lessons' unconditional anchor (0 turns it off; routed and finetune lessons
    /// never carry it).
    #[arg(long, default_value_t = 1.0)]
    pub uncond: f32,
    /// Guidance of the prompts that name routed concepts (the generation's default for them).
    #[arg(long, default_value_t = lifelong_diffusion::lifelong::state::ROUTED_GUIDANCE)]
    pub routed_guidance: f32,
    /// How many times a composed two-concept prompt draws each concept's region, keeping the
    /// drawing closest to the concept's lesson pictures (`generate --tries`); 1 draws once.
    #[arg(long, default_value_t = lifelong_diffusion::lifelong::compose::TRIES as u64, value_parser = clap::value_parser!(u64).range(1..=lifelong_diffusion::lifelong::compose::MAX_TRIES as u64))]
    pub tries: u64,
    /// Write the teaching pictures, the final identification probes and the two-concept images of
    /// every row as PNGs into this folder.
    #[arg(long)]
    pub dump: Option<PathBuf>,
}

pub fn eval_lifelong(args: EvalLifelongArgs) -> Result<()> {
    use lifelong_diffusion::lifelong::eval::{run_method, table, taught_concepts, vae_ceiling, Drawer, Generation, LifelongEvalOptions};
    let model_dir = model_dir(args.model)?;
    let (device, _) = native::open_device(Some(Backend::Cpu))?;
    let base = loader::load(&Folder(model_dir.clone()), &device)?;
    let trained = loader::load(&Folder(model_dir), &device.clone().autodiff())?;
    let options = LifelongEvalOptions {
        concepts: args.concepts,
        names: args.names.clone(),
        images: args.images,
        lesson: LessonOptions { steps: args.lesson_steps, lr_lora: args.lr_lora, lr_token: args.lr_token, lr_end: args.lr_end, object_weight: args.object_weight, candidates: args.candidates, prompt_dropout: args.prompt_dropout, ema: args.ema, init_search: !args.no_init_search, refine_steps: args.refine_steps, place_views: args.place_views, caption_views: args.caption_views, size_views: !args.no_size_views, image_sites: !args.text_sites_only, uncond: args.uncond, distill: args.distill, kappa: args.kappa, mu: args.mu, ..LessonOptions::default() },
        memory: MemoryOptions::default(),
        probes: args.probes,
        pairs: args.pairs,
        steps: args.sampling.steps,
        guidance: args.sampling.guidance,
        routed_guidance: args.routed_guidance,
        tries: args.tries as usize,
        seed: args.sampling.seed,
        keep_samples: args.dump.is_some(),
        adapter: AdapterConfig { rank: args.rank, alpha: args.rank as f32, targets: parse_targets(&args.targets)? },
    };
    let full = Generation { attend: true, bind: true, compose: false };
    let composed = Generation { attend: false, bind: true, compose: true };
    let taught = taught_concepts(&options)?;
    let base_pipeline = Pipeline::new(base.clone(), device.clone());
    let ceiling = vae_ceiling(&base_pipeline, &taught, 16, args.sampling.seed)?;
    let ceiling_line = taught.iter().zip(&ceiling).map(|(c, r)| format!("{} {:.0}%", c.name, 100.0 * r)).collect::<Vec<_>>().join(", ");
    eprintln!("VAE ceiling (identified after an encode-decode round trip, 16 pictures each): {ceiling_line}");
    let base_figure = lifelong_diffusion::lifelong::eval::base_rate(&Drawer::One(Box::new(base_pipeline)), &options)?;
    eprintln!("base model, plain single-object prompts with colour and shape right: {}", lifelong_diffusion::lifelong::eval::percent(base_figure));
    let mut rows = Vec::new();
    for name in args.methods.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (method, variants) = match name {
            // L2DM's rows draw as the routed ones (the product's path since session 24: two named
            // concepts composed by region, OA on); "w/o caa" neither composes nor updates latents.
            "l2dm" => (Method::L2dm, vec![
                ("l2dm".to_string(), composed),
                ("l2dm w/o caa".to_string(), Generation { attend: false, bind: true, compose: false }),
            ]),
            "no-oa" => (Method::L2dmNoOa, vec![("l2dm w/o oa".to_string(), Generation { attend: false, bind: false, compose: true })]),
            "finetune" => (Method::Finetune, vec![(name.to_string(), full)]),
            "ewc" => (Method::Ewc, vec![(name.to_string(), full)]),
            "lora-merge" => (Method::LoraMerge, vec![(name.to_string(), full)]),
            "routed" => (
                Method::Routed,
                vec![
                    // As `generate --store` and the page draw: multi-concept prompts composed by
                    // region (src/lifelong/compose.rs), orthogonal attention on, no latent updates.
                    // (The artist's latent updates have no row: composition draws every step on
                    // the parts' own latents, where they do not act; src/pipeline/denoising.rs.)
                    (name.to_string(), Generation { attend: false, bind: true, compose: true }),
                    // OA at generation off (its attention edit, src/lifelong/orthogonal.rs, and the
                    // artist's binding term), the rest as the first row.
                    ("routed w/o oa".to_string(), Generation { attend: false, bind: false, compose: true }),
                    ("routed w/o caa".to_string(), Generation { attend: false, bind: true, compose: false }),
                ],
            ),
            "no-tame" => (Method::L2dmNoTame, vec![("l2dm w/o tame".to_string(), composed)]),
            "no-ecd" => (Method::L2dmNoEcd, vec![("l2dm w/o ecd".to_string(), composed)]),
            "no-null-space" => (Method::L2dmNoNullSpace, vec![("l2dm w/o null space or gates".to_string(), composed)]),
            "null-space" => (Method::L2dmNullSpace, vec![("l2dm, null space (session 24)".to_string(), composed)]),
            other => return Err(Error::InvalidInput(format!("unknown method `{other}`; use l2dm, finetune, ewc, lora-merge, routed, no-tame, no-ecd, no-oa, null-space, no-null-space"))),
        };
        let new_rows = run_method(&base, &trained, &device, method, &variants, &options, &mut |line| eprintln!("{line}"))?;
        if let Some(dir) = &args.dump {
            for row in &new_rows {
                dump_samples(dir, &row.name, &row.samples)?;
            }
        }
        rows.extend(new_rows);
        eprint!("{}", table(&rows));
    }
    print!("{}", table(&rows));
    println!("base model: {} of plain single-object prompts with colour and shape right", lifelong_diffusion::lifelong::eval::percent(base_figure));
    println!("VAE ceiling: {ceiling_line}");
    println!("{}", serde_json::json!({ "eval": "lifelong", "base_model_prompts": base_figure, "vae_ceiling": ceiling, "concepts": taught.iter().map(|c| c.name).collect::<Vec<_>>(), "lesson_steps": args.lesson_steps, "tries": args.tries, "probes": args.probes, "pairs": args.pairs, "rows": rows }));
    Ok(())
}

fn dump_samples(dir: &Path, row: &str, samples: &[(String, Vec<u8>)]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write { path: dir.into(), source })?;
    let n = lifelong_diffusion::world::SIZE;
    for (i, (prompt, rgb)) in samples.iter().enumerate() {
        let image = lifelong_diffusion::pipeline::rgb8_to_image(rgb, n, &burn::prelude::Device::flex());
        let slug: String = prompt.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let row: String = row.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        native::write_png(&dir.join(format!("{row}-{i:02}-{slug}.png")), &image)?;
    }
    Ok(())
}

fn parse_targets(text: &str) -> Result<Vec<Target>> {
    if text.trim() == "all" {
        return Ok(Target::ALL.to_vec());
    }
    text.split(',')
        .map(|t| match t.trim() {
            "k" => Ok(Target::ToK),
            "v" => Ok(Target::ToV),
            "q" => Ok(Target::ToQ),
            "out" => Ok(Target::ToOut),
            "self-q" => Ok(Target::SelfQ),
            "self-k" => Ok(Target::SelfK),
            "self-v" => Ok(Target::SelfV),
            "self-out" => Ok(Target::SelfOut),
            "ff-in" => Ok(Target::FfIn),
            "ff-out" => Ok(Target::FfOut),
            other => Err(Error::InvalidInput(format!("unknown LoRA target `{other}`; use k, v, q, out (cross-attention), self-q, self-k, self-v, self-out, ff-in, ff-out"))),
        })
        .collect()
}

pub fn eval_world(args: EvalWorldArgs) -> Result<()> {
    use lifelong_diffusion::world::eval;
    let (pipeline, backend) = open_pipeline(args.model, args.backend.map(BackendArg::backend))?;
    use lifelong_diffusion::world::SceneKind;
    let kind = match args.categories.as_str() {
        "all" => None,
        "single" => Some(SceneKind::Single),
        "two-object" | "pair" => Some(SceneKind::Pair),
        other => return Err(Error::InvalidInput(format!("unknown --categories `{other}`; use all, single or two-object"))),
    };
    let categories: Vec<_> = eval::CATEGORIES.iter().copied().filter(|(k, _)| kind.is_none_or(|want| *k == want)).collect();
    let images = args.n * categories.len();
    let attend = args.attend.then(|| args.tuning.options()).transpose()?;
    let options =
        eval::EvalOptions { n: args.n, steps: args.sampling.steps, guidance: args.sampling.guidance, seed: args.sampling.seed, reconstruct: args.reconstruct, attend, orthogonal: args.orthogonal, compose: !args.no_compose, categories };
    let bar = ProgressBar::new(images as u64);
    bar.set_message(format!("{backend:?}"));
    let start = std::time::Instant::now();
    let results = eval::evaluate(&pipeline, &options, &mut |done, _| bar.set_position(done as u64));
    let per_image = start.elapsed().as_secs_f64() / images.max(1) as f64;
    bar.finish_and_clear();
    let results = results?;
    print!("{}", eval::table(&results));
    eprintln!("{images} images, {per_image:.2} s per image on {backend:?}");
    let rows: Vec<_> = results.iter().map(eval::CategoryResult::to_json).collect();
    println!(
        "{}",
        serde_json::json!({ "steps": args.sampling.steps, "guidance": args.sampling.guidance, "attend": args.attend, "orthogonal": args.orthogonal, "compose": !args.no_compose, "seconds_per_image": per_image, "categories": rows })
    );
    Ok(())
}
