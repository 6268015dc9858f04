//! The native CLI, `lifelong-diffusion`. The library does the work; this file parses arguments,
//! reads and writes files, and shows progress.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

mod bench_cli;

use lifelong_diffusion::native::{self, Backend, Folder};
use lifelong_diffusion::pipeline::{GenerateOptions, Pipeline};
use lifelong_diffusion::scheduler::SchedulerKind;
use lifelong_diffusion::{loader, Error, Result};

#[derive(Parser)]
#[command(name = "lifelong-diffusion", version, about = "Text-to-image diffusion on your own GPU or CPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an image from a text prompt.
    Generate(GenerateArgs),
    /// The procedural shapes world: export a training dataset, or render scenes to look at.
    World {
        #[command(subcommand)]
        command: WorldCommand,
    },
    /// Time the WGSL kernels against their tensor-op twins, or the denoiser with kernels on and off.
    Bench {
        #[command(subcommand)]
        command: bench_cli::BenchCommand,
    },
    /// Measure a model.
    Eval {
        #[command(subcommand)]
        command: EvalCommand,
    },
    /// Serve the web app (www/) on http://127.0.0.1:PORT.
    Serve {
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// The folder to serve; default: the repository's www/.
        #[arg(long)]
        root: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Generate for shapes-world prompts and score every attribute (single / two objects, seen / held-out).
    World(EvalWorldArgs),
}

#[derive(clap::Args)]
struct EvalWorldArgs {
    #[arg(long)]
    model: Option<PathBuf>,
    /// Prompts per category (4 categories).
    #[arg(long, default_value_t = 200)]
    n: usize,
    #[arg(long, default_value_t = 20)]
    steps: usize,
    #[arg(long, default_value_t = 7.5)]
    guidance: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum)]
    backend: Option<BackendArg>,
    /// Score the VAE alone: render each prompt's scene, encode and decode it (the generator's ceiling).
    #[arg(long)]
    reconstruct: bool,
}

#[derive(Subcommand)]
enum WorldCommand {
    /// Write OUT/images.u8, OUT/scenes.jsonl and OUT/meta.json (see src/world/dataset.rs).
    Export {
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        n: usize,
        #[arg(long)]
        out: PathBuf,
        /// train or heldout.
        #[arg(long, default_value = "train")]
        split: String,
    },
    /// Render a caption, or without one a grid of sampled scenes, to a PNG (captions on stderr).
    Render {
        #[arg(long)]
        caption: Option<String>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 16)]
        count: u64,
        #[arg(long, default_value = "train")]
        split: String,
        /// Nearest-neighbour upscaling factor.
        #[arg(long, default_value_t = 4)]
        scale: usize,
        #[arg(long)]
        out: PathBuf,
    },
}

fn world(command: WorldCommand) -> Result<()> {
    use lifelong_diffusion::world::{dataset, describe, parse, render, sample};
    match command {
        WorldCommand::Export { seed, n, out, split } => {
            let options = dataset::ExportOptions { seed, n, split: split.parse()? };
            let bar = ProgressBar::new(n as u64);
            dataset::export(&out, &options, &mut |done| bar.set_position(done as u64))?;
            bar.finish_and_clear();
            eprintln!("wrote {n} scenes to {}", out.display());
        }
        WorldCommand::Render { caption, seed, count, split, scale, out } => {
            check_writable(&out)?;
            let scenes = match caption {
                Some(caption) => vec![parse::scene_for_caption(&caption, seed)?],
                None => {
                    let split: sample::Split = split.parse()?;
                    (0..count).map(|i| sample::scene_at(seed, i, split)).collect()
                }
            };
            for (i, scene) in scenes.iter().enumerate() {
                eprintln!("{i}: {}", describe(&scene.spec(), Default::default()));
            }
            let images: Vec<Vec<u8>> = scenes.iter().map(render::render).collect();
            let (rgb, width, height) = render::contact_sheet(&images, 8);
            let png = render::png_bytes(&rgb, width, height, scale)?;
            std::fs::write(&out, png).map_err(|source| Error::Write { path: out.clone(), source })?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Wgpu,
    Cpu,
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// What to draw.
    #[arg(long)]
    prompt: String,
    /// What to steer away from.
    #[arg(long, default_value = "")]
    negative: String,
    /// A diffusers pipeline folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/).
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, default_value_t = 20)]
    steps: usize,
    #[arg(long, default_value_t = 7.5)]
    guidance: f32,
    /// ddim, euler, euler-a or dpm++2m; default: the model's scheduler_config.json.
    #[arg(long)]
    scheduler: Option<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Start from these latents (safetensors tensor `init_latents`, f32 [1,4,h,w]) instead of seeded noise.
    #[arg(long)]
    init_latents: Option<PathBuf>,
    /// Also save the final latents (tensor `final_latents`, before VAE scaling and decoding).
    #[arg(long)]
    out_latents: Option<PathBuf>,
    /// Compute backend; default: wgpu when a GPU adapter exists, else cpu.
    #[arg(long, value_enum)]
    backend: Option<BackendArg>,
    /// Where to write the PNG.
    #[arg(long)]
    out: PathBuf,
}

fn default_model() -> Result<PathBuf> {
    let builtin = Path::new(env!("CARGO_MANIFEST_DIR")).join("www/models/builtin");
    if builtin.join("model_index.json").exists() {
        return Ok(builtin);
    }
    Err(Error::InvalidInput("no model given and no built-in model found; pass --model DIR (a diffusers pipeline folder)".into()))
}

fn check_writable(path: &Path) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        let source = std::io::Error::new(std::io::ErrorKind::NotFound, format!("folder {} does not exist", dir.display()));
        return Err(Error::Write { path: path.into(), source });
    }
    Ok(())
}

impl BackendArg {
    fn backend(self) -> Backend {
        match self {
            BackendArg::Wgpu => Backend::Wgpu,
            BackendArg::Cpu => Backend::Cpu,
        }
    }
}

/// Opens the device and loads the model (`--model`, else the built-in one).
fn open_pipeline(model: Option<PathBuf>, backend: Option<Backend>) -> Result<(Pipeline, Backend)> {
    let (device, backend) = native::open_device(backend)?;
    let model_dir = match model {
        Some(dir) => dir,
        None => default_model()?,
    };
    let model = loader::load(&Folder(model_dir), &device)?;
    Ok((Pipeline::new(model, device), backend))
}

fn eval_world(args: EvalWorldArgs) -> Result<()> {
    use lifelong_diffusion::world::eval;
    let (pipeline, backend) = open_pipeline(args.model, args.backend.map(BackendArg::backend))?;
    let options = eval::EvalOptions { n: args.n, steps: args.steps, guidance: args.guidance, seed: args.seed, reconstruct: args.reconstruct };
    let bar = ProgressBar::new((args.n * eval::CATEGORIES.len()) as u64);
    bar.set_message(format!("{backend:?}"));
    let results = eval::evaluate(&pipeline, &options, &mut |done, _| bar.set_position(done as u64));
    bar.finish_and_clear();
    let results = results?;
    print!("{}", eval::table(&results));
    let rows: Vec<_> = results.iter().map(eval::CategoryResult::to_json).collect();
    println!("{}", serde_json::json!({ "steps": args.steps, "guidance": args.guidance, "categories": rows }));
    Ok(())
}

fn generate(args: GenerateArgs) -> Result<()> {
    check_writable(&args.out)?;
    if let Some(p) = &args.out_latents {
        check_writable(p)?;
    }
    let scheduler = args.scheduler.as_deref().map(str::parse::<SchedulerKind>).transpose()?;
    let backend = args.backend.map(BackendArg::backend);
    let (pipeline, backend) = open_pipeline(args.model, backend)?;
    let device = pipeline.device.clone();
    let init_latents = args.init_latents.as_deref().map(|p| native::read_tensor4(p, "init_latents", &device)).transpose()?;
    let options = GenerateOptions {
        prompt: args.prompt,
        negative_prompt: args.negative,
        steps: args.steps,
        guidance: args.guidance,
        seed: args.seed,
        scheduler,
        init_latents,
    };
    let bar = ProgressBar::new(args.steps as u64);
    bar.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps {elapsed} ({per_sec})").expect("static template").progress_chars("=> "));
    bar.set_message(format!("{backend:?}"));
    let start = std::time::Instant::now();
    let result = pipeline.generate(&options, &mut |p| bar.set_position(p.step as u64));
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let generation = result?;
    for warning in &generation.warnings {
        eprintln!("warning: {warning}");
    }
    native::write_png(&args.out, &generation.image)?;
    if let Some(path) = &args.out_latents {
        native::write_tensor(path, "final_latents", &generation.latents)?;
    }
    eprintln!("wrote {} ({} steps in {seconds:.3} s, {:.1} ms/step, on {backend:?})", args.out.display(), args.steps, seconds * 1000.0 / args.steps.max(1) as f64);
    Ok(())
}

fn serve(port: u16, root: Option<PathBuf>) -> Result<()> {
    use lifelong_diffusion::serve::Server;
    let root = root.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("www"));
    let server = Server::bind(&root, ([127, 0, 0, 1], port).into())?;
    if let Some(missing) = server.missing_build() {
        eprintln!("warning: {missing}");
    }
    eprintln!("serving {} on http://{} (Ctrl-C stops)", root.display(), server.local_addr());
    server.run()
}

fn main() -> ExitCode {
    // Mesa's Vulkan loader probes Wayland and prints an error when XDG_RUNTIME_DIR is unset
    // (headless machines, CI); we never draw to a window, so point it somewhere harmless.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate(args),
        Command::World { command } => world(command),
        Command::Eval { command: EvalCommand::World(args) } => eval_world(args),
        Command::Bench { command } => bench_cli::run(command),
        Command::Serve { port, root } => serve(port, root),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
