//! `lifelong-diffusion bench kernels|unet`: argument parsing and printing around
//! `lifelong_diffusion::kernels::bench` (the measuring lives in the library).

use std::path::{Path, PathBuf};

use clap::Subcommand;
use indicatif::ProgressBar;

use lifelong_diffusion::config::UNetConfig;
use lifelong_diffusion::kernels::attention;
use lifelong_diffusion::kernels::bench::{self, Repeats, Sizes};
use lifelong_diffusion::native::{self, Backend, Folder};
use lifelong_diffusion::weights::VarBuilder;
use lifelong_diffusion::{loader, model::UNet2DConditionModel, Error, Result};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Each WGSL kernel against its tensor-op twin on the wgpu adapter: table, then one JSON line.
    Kernels {
        /// SD-1.5's full shapes at batch 2 (for a GPU); default: reduced sizes for a CPU adapter.
        #[arg(long)]
        full: bool,
        #[arg(long, default_value_t = 5)]
        reps: usize,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// The fused attention's layout: the adapter's own, or one forced (to compare both on one adapter).
        #[arg(long, value_enum, default_value_t = LayoutArg::Adapter)]
        layout: LayoutArg,
    },
    /// One denoiser step with kernels on vs off: table, then one JSON line.
    Unet {
        /// A diffusers pipeline folder; default: the built-in model.
        #[arg(long)]
        model: Option<PathBuf>,
        /// SD-1.5's UNet shapes with random weights instead of a model folder (for a GPU).
        #[arg(long)]
        sd15_random: bool,
        #[arg(long, default_value_t = 5)]
        reps: usize,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// The fused attention's layout (as for `bench kernels`).
        #[arg(long, value_enum, default_value_t = LayoutArg::Adapter)]
        layout: LayoutArg,
    },
}

/// `--layout`: see `kernels::attention::Layout`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LayoutArg {
    Adapter,
    Cpu,
    Gpu,
}

impl LayoutArg {
    fn apply(self) {
        attention::set_layout(match self {
            LayoutArg::Adapter => None,
            LayoutArg::Cpu => Some(attention::Layout::Cpu),
            LayoutArg::Gpu => Some(attention::Layout::Gpu),
        });
    }
}

fn builtin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("www/models/builtin")
}

fn builtin_config() -> Option<UNetConfig> {
    let text = std::fs::read_to_string(builtin_dir().join("unet/config.json")).ok()?;
    lifelong_diffusion::config::parse(&text, "unet/config.json").ok()
}

pub fn run(command: BenchCommand) -> Result<()> {
    let (device, backend) = native::open_device(Some(Backend::Wgpu))?;
    let _ = backend;
    match command {
        BenchCommand::Kernels { full, reps, warmup, layout } => {
            layout.apply();
            let sizes = Sizes::new(full, builtin_config().as_ref());
            let bar = ProgressBar::new_spinner();
            let report = bench::kernels(&sizes, &device, Repeats { warmup, reps }, &mut |row| bar.set_message(row.to_string()));
            bar.finish_and_clear();
            print!("{}", report.table());
            println!("{}", report.to_json());
        }
        BenchCommand::Unet { model, sd15_random, reps, warmup, layout } => {
            layout.apply();
            let (unet, config, name) = if sd15_random {
                let config = UNetConfig::sd15();
                let unet = UNet2DConditionModel::load(&VarBuilder::random(0, 0.02, &device), &config)?;
                (unet, config, "sd15 (random weights)".to_string())
            } else {
                let dir = model.unwrap_or_else(builtin_dir);
                if !dir.join("model_index.json").exists() {
                    return Err(Error::InvalidInput(format!("{} is not a diffusers pipeline folder", dir.display())));
                }
                let loaded = loader::load(&Folder(dir.clone()), &device)?;
                (loaded.unet, loaded.unet_config, dir.display().to_string())
            };
            let report = bench::unet(&unet, &config, &device, Repeats { warmup, reps });
            println!("{:<40} {:>12} {:>12} {:>7} {:>12}", "model", "on ms/step", "off ms/step", "ratio", "max rel diff");
            println!("{name:<40} {:>12.3} {:>12.3} {:>7.2} {:>12.2e}", report.on_ms, report.off_ms, report.off_ms / report.on_ms, report.max_rel_diff);
            println!("{}", report.to_json(&name));
        }
    }
    Ok(())
}
