//! Dataset export for training: `images.u8` (N x 64 x 64 x 3 bytes, row-major HWC, RGB),
//! `scenes.jsonl` (one `Record` per line) and `meta.json` (vocabulary, palette, held-out set).
//! Each file is written to a temporary name and renamed into place; `meta.json` comes last, so its
//! presence means the export is complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::caption::{captions, vocabulary};
use super::heldout::{HELD_OUT_COMBINATIONS, HELD_OUT_PAIRS};
use super::render::{render_into, IMAGE_BYTES};
use super::sample::{item_rng, scene_at, Split, CAPTION_STREAM};
use super::scene::Scene;
use super::vocab::{Background, Color, Place, Relation, Shape, Size};
use super::SIZE;
use crate::{Error, Result};

/// Captions written per scene: the fully specified one and three others.
pub const CAPTIONS_PER_SCENE: usize = 4;
/// Scenes rendered per batch (each batch is split across threads, then written in order).
const BATCH: usize = 4096;

/// What to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    pub seed: u64,
    pub n: usize,
    pub split: Split,
}

/// One line of `scenes.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub index: u64,
    /// The first states everything (sizes, place or relation, background); the others leave some
    /// of it out or reorder it.
    pub captions: Vec<String>,
    pub scene: Scene,
}

/// Record `index` of a seed: its scene and captions, independent of every other index.
pub fn record_at(seed: u64, index: u64, split: Split) -> Record {
    let scene = scene_at(seed, index, split);
    let captions = captions(&scene, &mut item_rng(seed, index, CAPTION_STREAM), CAPTIONS_PER_SCENE);
    Record { index, captions, scene }
}

/// The contents of `meta.json`.
pub fn meta(options: &ExportOptions) -> Value {
    let names = |items: Vec<&str>| items.into_iter().map(Value::from).collect::<Vec<_>>();
    let colors: serde_json::Map<String, Value> = Color::ALL.iter().map(|c| (c.name().to_string(), json!(c.rgb()))).collect();
    let backgrounds: serde_json::Map<String, Value> = Background::ALL.iter().map(|b| (b.name().to_string(), json!(b.rgb()))).collect();
    json!({
        "n": options.n,
        "seed": options.seed,
        "size": SIZE,
        "split": options.split.name(),
        "images": {"file": "images.u8", "dtype": "uint8", "shape": [options.n, SIZE, SIZE, 3], "layout": "NHWC", "channels": "RGB"},
        "scenes": "scenes.jsonl",
        "captions_per_scene": CAPTIONS_PER_SCENE,
        "vocabulary": names(vocabulary()),
        "colors": colors,
        "backgrounds": backgrounds,
        "shapes": names(Shape::ALL.iter().map(|s| s.name()).collect()),
        "shape_plurals": names(Shape::ALL.iter().map(|s| s.plural()).collect()),
        "sizes": names(Size::ALL.iter().map(|s| s.name()).collect()),
        "places": names(Place::ALL.iter().map(|p| p.name()).collect()),
        "relations": names(Relation::ALL.iter().map(|r| r.name()).collect()),
        "held_out": {"pairs": HELD_OUT_PAIRS, "combinations": HELD_OUT_COMBINATIONS},
    })
}

/// Renders a range of records into `images` (one slot per record) and their JSON lines.
fn render_range(options: &ExportOptions, start: usize, images: &mut [u8]) -> Result<String> {
    let mut lines = String::new();
    for (k, slot) in images.chunks_exact_mut(IMAGE_BYTES).enumerate() {
        let record = record_at(options.seed, (start + k) as u64, options.split);
        if let Ok(slot) = <&mut [u8; IMAGE_BYTES]>::try_from(slot) {
            render_into(&record.scene, slot);
        }
        let line = serde_json::to_string(&record).map_err(|e| Error::InvalidInput(format!("scene to JSON: {e}")))?;
        lines.push_str(&line);
        lines.push('\n');
    }
    Ok(lines)
}

/// Renders records `start..start + count` on every core, in order.
fn render_batch(options: &ExportOptions, start: usize, count: usize, images: &mut Vec<u8>) -> Result<String> {
    images.clear();
    images.resize(count * IMAGE_BYTES, 0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(count.max(1));
    if threads == 1 {
        // No spawning where there is one core (or no threads at all, as in a browser).
        return render_range(options, start, images);
    }
    let per_thread = count.div_ceil(threads);
    let parts: Vec<Result<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = images
            .chunks_mut(per_thread * IMAGE_BYTES)
            .enumerate()
            .map(|(t, chunk)| scope.spawn(move || render_range(options, start + t * per_thread, chunk)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(Error::InvalidInput("a render thread panicked".into())))).collect()
    });
    parts.into_iter().collect::<Result<Vec<String>>>().map(|p| p.concat())
}

/// A file written under a temporary name and renamed into place on `commit`.
struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    writer: BufWriter<File>,
}

impl AtomicFile {
    fn create(path: PathBuf) -> Result<Self> {
        let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("out")));
        let file = File::create(&tmp).map_err(|source| Error::Write { path: path.clone(), source })?;
        Ok(Self { path, tmp, writer: BufWriter::with_capacity(1 << 20, file) })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer.write_all(bytes).map_err(|source| Error::Write { path: self.path.clone(), source })
    }

    fn commit(self) -> Result<()> {
        let fail = |source| Error::Write { path: self.path.clone(), source };
        let file = self.writer.into_inner().map_err(|e| fail(e.into_error()))?;
        file.sync_all().map_err(fail)?;
        std::fs::rename(&self.tmp, &self.path).map_err(fail)
    }
}

/// Writes `n` scenes of `split` from `seed` into `dir` (created if missing). `progress` hears the
/// number of scenes written so far after each batch.
pub fn export(dir: &Path, options: &ExportOptions, progress: &mut dyn FnMut(usize)) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write { path: dir.into(), source })?;
    // An older export's meta.json must not vouch for the files being replaced.
    match std::fs::remove_file(dir.join("meta.json")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::Write { path: dir.join("meta.json"), source: e }),
        _ => {}
    }
    let mut images_file = AtomicFile::create(dir.join("images.u8"))?;
    let mut scenes_file = AtomicFile::create(dir.join("scenes.jsonl"))?;
    let mut images = Vec::new();
    let mut start = 0;
    while start < options.n {
        let count = BATCH.min(options.n - start);
        let lines = render_batch(options, start, count, &mut images)?;
        images_file.write(&images)?;
        scenes_file.write(lines.as_bytes())?;
        start += count;
        progress(start);
    }
    images_file.commit()?;
    scenes_file.commit()?;
    let meta = serde_json::to_vec_pretty(&meta(options)).map_err(|e| Error::InvalidInput(format!("meta.json: {e}")))?;
    let mut meta_file = AtomicFile::create(dir.join("meta.json"))?;
    meta_file.write(&meta)?;
    meta_file.commit()
}
