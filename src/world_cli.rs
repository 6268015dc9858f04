//! `lifelong-diffusion world`: export the procedural world's scenes as a dataset, or render
//! captions and sampled scenes to a PNG contact sheet.

use std::path::PathBuf;

use clap::Subcommand;
use indicatif::ProgressBar;

use lifelong_diffusion::{Error, Result};

use crate::check_writable;

#[derive(Subcommand)]
pub enum WorldCommand {
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

pub fn world(command: WorldCommand) -> Result<()> {
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
