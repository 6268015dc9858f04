//! The native CLI, `lifelong-diffusion`. The library does the work; this file parses arguments,
//! reads and writes files, and shows progress.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

mod bench_cli;
mod eval_cli;
mod teach_cli;
mod world_cli;

use lifelong_diffusion::lifelong::artist::AttendOptions;
use lifelong_diffusion::lifelong::compose;
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
        command: world_cli::WorldCommand,
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
    /// Teach the model a new concept from a few pictures (saved as a new version of the store).
    Teach(teach_cli::TeachArgs),
    /// List, remove, restore, export or import learned concepts.
    Concepts {
        #[command(subcommand)]
        command: teach_cli::ConceptsCommand,
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
    World(eval_cli::EvalWorldArgs),
    /// Teach novel shapes-world concepts in sequence and measure forgetting and neglect per method.
    Lifelong(eval_cli::EvalLifelongArgs),
}

/// Settings of the concept attention artist (src/lifelong/artist.rs; defaults follow
/// Attend-and-Excite).
#[derive(clap::Args)]
struct AttendArgs {
    /// Step size factor of the latent updates (A&E's scale_factor).
    #[arg(long, default_value_t = AttendOptions::default().scale_factor)]
    attend_scale: f32,
    /// Fraction of the steps whose latents are updated.
    #[arg(long, default_value_t = AttendOptions::default().alter_fraction)]
    attend_fraction: f32,
    /// Most refinement iterations at each threshold step (A&E: 20).
    #[arg(long, default_value_t = AttendOptions::default().max_refinement_steps)]
    attend_refine: usize,
    /// Weights of the unmix (anti-mixing) and binding (attribute to noun) losses.
    #[arg(long, default_value_t = AttendOptions::default().unmix_weight)]
    attend_unmix: f32,
    #[arg(long, default_value_t = AttendOptions::default().bind_weight)]
    attend_bind: f32,
}

impl AttendArgs {
    fn options(&self) -> Result<AttendOptions> {
        let values = [self.attend_scale, self.attend_fraction, self.attend_unmix, self.attend_bind];
        if values.iter().any(|v| !v.is_finite() || *v < 0.0) || self.attend_fraction > 1.0 {
            return Err(Error::InvalidInput("--attend-* values must be non-negative numbers (--attend-fraction at most 1)".into()));
        }
        Ok(AttendOptions {
            scale_factor: self.attend_scale,
            alter_fraction: self.attend_fraction,
            max_refinement_steps: self.attend_refine,
            unmix_weight: self.attend_unmix,
            bind_weight: self.attend_bind,
            ..Default::default()
        })
    }
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
    /// Classifier-free guidance scale; default 7.5, and 3 (`state::ROUTED_GUIDANCE`) for a prompt
    /// naming routed concepts (their blocks draw cleaner there: README, "Lessons").
    #[arg(long)]
    guidance: Option<f32>,
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
    /// The concept store whose concepts prompts may use (`<name>`); default: the user's store, when
    /// it exists and belongs to this model.
    #[arg(long)]
    store: Option<PathBuf>,
    /// Compute backend; default: wgpu when a GPU adapter exists, else cpu.
    #[arg(long, value_enum)]
    backend: Option<BackendArg>,
    /// Concept attention artist: for prompts with two or more subjects (shape words, <concepts>),
    /// steer the first steps' latents so every subject is drawn, apart, with its own colour.
    /// On by default when the prompt names two or more learned concepts of a shared adapter
    /// (routed concepts are composed by region instead); prompts with one subject are never
    /// changed.
    #[arg(long, overrides_with = "no_attend")]
    attend: bool,
    /// Turn the concept attention artist off: no latent updates and, for two or more routed
    /// concepts, no composition by region (their blocks are then summed over the whole image).
    #[arg(long, overrides_with = "attend")]
    no_attend: bool,
    /// Draw a relation prompt of two plain objects ("a red circle above a blue square") as two
    /// one-object prompts, each in its region (default for the built-in model and other
    /// shapes-world models; src/lifelong/compose.rs).
    #[arg(long, overrides_with = "no_compose")]
    compose: bool,
    /// Draw relation prompts whole (the model alone places the objects).
    #[arg(long, overrides_with = "compose")]
    no_compose: bool,
    /// How many times a composed prompt draws each learned concept's region (from different
    /// noise), keeping the drawing that looks most like the concept's lesson pictures; 1 draws
    /// each region once (faster). Concepts taught before looks were kept draw once.
    #[arg(long, default_value_t = compose::TRIES as u64, value_parser = clap::value_parser!(u64).range(1..=compose::MAX_TRIES as u64))]
    tries: u64,
    #[command(flatten)]
    tuning: AttendArgs,
    /// Orthogonal attention's edit on prompts with two or more subjects: each subject's words
    /// (its shape word or <concept> and their colour and size) attend only in the region the
    /// prompt's relation or place words give it. Its strength (score bias outside the region);
    /// 0 turns it off.
    #[arg(long, default_value_t = GenerateOptions::default().orthogonal)]
    orthogonal: f32,
    /// Where to write the PNG.
    #[arg(long)]
    out: PathBuf,
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
    let model_dir = teach_cli::model_dir(model)?;
    let model = loader::load(&Folder(model_dir), &device)?;
    Ok((Pipeline::new(model, device), backend))
}

fn generate(args: GenerateArgs) -> Result<()> {
    check_writable(&args.out)?;
    if let Some(p) = &args.out_latents {
        check_writable(p)?;
    }
    let scheduler = args.scheduler.as_deref().map(str::parse::<SchedulerKind>).transpose()?;
    let backend = args.backend.map(BackendArg::backend);
    let (mut pipeline, backend) = open_pipeline(args.model.clone(), backend)?;
    let applied = teach_cli::apply_store(&mut pipeline, args.store.clone(), args.model.clone(), &args.prompt)?;
    let tokens = applied.tokens;
    for note in applied.notes {
        eprintln!("{note}");
    }
    let device = pipeline.device.clone();
    let init_latents = args.init_latents.as_deref().map(|p| native::read_tensor4(p, "init_latents", &device)).transpose()?;
    let options = GenerateOptions {
        prompt: args.prompt,
        negative_prompt: args.negative,
        steps: args.steps,
        guidance: args.guidance.or(applied.guidance).unwrap_or(GenerateOptions::default().guidance),
        seed: args.seed,
        scheduler,
        init_latents,
        orthogonal: args.orthogonal,
    };
    let bar = ProgressBar::new(args.steps as u64);
    bar.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps {elapsed} ({per_sec})").expect("static template").progress_chars("=> "));
    bar.set_message(format!("{backend:?}"));
    let start = std::time::Instant::now();
    // `--no-attend` turns the whole artist off: for routed concepts the composition by region too.
    let composer = applied.composer.filter(|_| !args.no_attend).map(|mut c| {
        c.tries = args.tries as usize;
        c
    });
    let compose_objects = args.compose || (!args.no_compose && compose::composes_objects_by_default(&pipeline.model));
    let composer = match composer {
        None if compose_objects => {
            let [_, h, w] = pipeline.latent_shape();
            compose::Composer::plan_objects(&pipeline.model, &options.prompt, [h, w])?
        }
        c => c,
    };
    // The latent updates are on by default for prompts with two or more learned concepts of a
    // shared adapter (issue 5). Not on composed prompts: in four eight-concept runs composition
    // drew both routed concepts apart as often or more often without them (25/25, 31.2/18.8,
    // 31.2/12.5, 50.0/31.2%: README, "Lessons"), and the page composes without them too. Not on
    // plain shapes-world prompts: there they lowered two-object "both right" from 7/100 to 2/100
    // (README, Figures). `--attend` asks for them anywhere.
    let concepts_in_prompt = tokens.iter().filter(|t| options.prompt.contains(t.as_str())).count();
    let by_default = concepts_in_prompt >= 2 && composer.is_none() && !args.no_attend;
    let attend = (args.attend || by_default).then(|| args.tuning.options()).transpose()?;
    print_layout(&pipeline, &options, composer.as_ref())?;
    if composer.as_ref().is_some_and(|c| c.private_share >= 1.0) && attend.is_some() {
        eprintln!("note: --attend's latent updates do not act on a composed prompt (each concept draws on latents of its own); --no-attend draws it uncomposed");
    }
    let result = run_generation(&pipeline, &options, attend.as_ref(), composer, &bar);
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let (generation, reports) = result?;
    for r in &reports {
        eprintln!(
            "attend: step {} loss {:.3} -> {:.3} (unmix {:.3}, bind {:.3}, {} refinements)",
            r.step, r.attend_before, r.attend_after, r.unmix_after, r.bind_after, r.iterations
        );
    }
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

/// Says how the prompt's subjects are laid out: the regions composition draws, else the regions
/// orthogonal attention keeps their words in.
fn print_layout(pipeline: &Pipeline, options: &GenerateOptions, composer: Option<&lifelong_diffusion::lifelong::compose::Composer>) -> Result<()> {
    if let Some(c) = composer {
        let clauses: Vec<&str> = c.clauses.iter().map(|c| c.prompt.as_str()).collect();
        eprintln!("composing by region: {}", clauses.join(" | "));
    } else if options.orthogonal > 0.0 {
        if let Some(r) = lifelong_diffusion::lifelong::orthogonal::token_regions(&pipeline.model.tokenizer.tokens(&options.prompt)?) {
            let parts: Vec<String> = r.clauses.iter().zip(&r.centers).map(|(c, [x, y])| format!("{c} at ({x:.2}, {y:.2})")).collect();
            eprintln!("orthogonal attention: {}", parts.join(" | "));
        }
    }
    Ok(())
}

/// Runs every step, advancing `bar`; returns the generation and what the artist did.
fn run_generation(
    pipeline: &Pipeline,
    options: &GenerateOptions,
    attend: Option<&AttendOptions>,
    composer: Option<lifelong_diffusion::lifelong::compose::Composer>,
    bar: &ProgressBar,
) -> Result<(lifelong_diffusion::pipeline::Generation, Vec<lifelong_diffusion::lifelong::artist::StepReport>)> {
    let mut run = pipeline.start_with(options, attend)?;
    run.set_composer(composer)?;
    while let Some(p) = run.step()? {
        bar.set_position(p.step as u64);
    }
    let reports = run.artist_reports().to_vec();
    run.settle_now()?;
    Ok((run.finish(), reports))
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
        Command::World { command } => world_cli::world(command),
        Command::Eval { command: EvalCommand::World(args) } => eval_cli::eval_world(args),
        Command::Bench { command } => bench_cli::run(command),
        Command::Serve { port, root } => serve(port, root),
        Command::Teach(args) => teach_cli::teach(args),
        Command::Eval { command: EvalCommand::Lifelong(args) } => eval_cli::eval_lifelong(args),
        Command::Concepts { command } => teach_cli::concepts(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
