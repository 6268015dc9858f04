//! `lifelong-diffusion bench kernels|unet`: each kernel against its twin on one device, and the
//! whole denoiser with kernels on and off. Native only (wall-clock timing).
//!
//! Time: median of `reps` runs after `warmup` runs, each ended by a device sync.
//! Bytes: peak extra device memory, read from burn's allocator (`Device::memory_pool_usage`,
//! bytes of live allocations): the baseline is taken with the inputs alive, then the path runs
//! stage by stage with a sync and a reading after each stage (twin attention: scores, softmax,
//! weighted sum; every other path: its single op), keeping stage outputs alive until the next
//! stage has run. The twin's figure is therefore a lower bound (temporaries inside one burn op are
//! not seen); the fused kernels have no temporaries. Backends that do not report usage give 0.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::Distribution;
use serde_json::{json, Value};

use super::attention::{attention_fused, forced_layout, attention_twin, twin_scores, AttentionControl};
use super::geglu::{geglu_kernel, geglu_twin};
use super::group_norm::{group_norm_kernel, group_norm_twin};
use crate::config::UNetConfig;

/// How many runs to time and how many to discard first.
#[derive(Debug, Clone, Copy)]
pub struct Repeats {
    pub warmup: usize,
    pub reps: usize,
}

/// One kernel-vs-twin measurement; `shape` describes the input.
#[derive(Debug, Clone)]
pub struct Row {
    pub shape: Value,
    pub fused_ms: f64,
    pub twin_ms: f64,
    pub fused_bytes: u64,
    pub twin_bytes: u64,
}

impl Row {
    pub fn ratio(&self) -> f64 {
        self.twin_ms / self.fused_ms
    }

    fn to_json(&self) -> Value {
        let mut v = self.shape.clone();
        let extra = json!({ "fused_ms": round3(self.fused_ms), "twin_ms": round3(self.twin_ms), "ratio": round3(self.ratio()),
            "fused_bytes": self.fused_bytes, "twin_bytes": self.twin_bytes });
        v.as_object_mut().expect("shape is an object").extend(extra.as_object().expect("object").clone());
        v
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Attention problem: queries, keys, heads, head dim (batch comes from [`Sizes`]).
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub seq: usize,
    pub keys: usize,
    pub heads: usize,
    pub dim: usize,
}

/// Everything `bench kernels` runs.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub batch: usize,
    pub attention: Vec<AttnShape>,
    /// `[n, c, h, w]` with 32 groups (or c when smaller).
    pub group_norm: Vec<[usize; 4]>,
    /// `[b, n, 2 * inner]`.
    pub geglu: Vec<[usize; 3]>,
}

impl Sizes {
    /// SD-1.5's attention levels (64x64 latent), `full` for a GPU; else a set a CPU adapter
    /// finishes in minutes, still with every SD-1.5 shape of seq >= 1024 (batch 1). 4096 x 4096
    /// runs with one head: its 64 MiB score matrix fits a WebGPU storage binding (128 MiB by
    /// default), eight heads' 512 MiB do not. `builtin` adds that model's shapes.
    pub fn new(full: bool, builtin: Option<&UNetConfig>) -> Self {
        let a = |seq, keys, heads, dim| AttnShape { seq, keys, heads, dim };
        let mut attention = if full {
            let mut rows = Vec::new();
            for (seq, dim) in [(4096, 40), (1024, 80), (256, 160), (64, 160)] {
                rows.push(a(seq, 77, 8, dim));
                rows.push(a(seq, seq, 8, dim));
            }
            rows
        } else {
            vec![a(4096, 77, 8, 40), a(4096, 4096, 1, 40), a(1024, 1024, 8, 40), a(1024, 1024, 8, 80), a(1024, 77, 8, 80), a(256, 256, 8, 160), a(256, 77, 8, 160), a(64, 64, 8, 160)]
        };
        if let Some(config) = builtin {
            let size = config.sample_size.unwrap_or(64);
            for level in 0..config.levels() {
                let (seq, heads) = ((size >> level).pow(2), config.heads(level));
                let dim = config.block_out_channels[level] / heads;
                attention.extend([a(seq, seq, heads, dim), a(seq, 77, heads, dim)]);
            }
        }
        let (group_norm, geglu) = if full {
            (vec![[2, 320, 64, 64], [2, 640, 32, 32], [2, 1280, 16, 16]], vec![[2, 4096, 2560], [2, 1024, 5120], [2, 256, 10240]])
        } else {
            (vec![[1, 320, 64, 64], [1, 640, 32, 32], [2, 64, 16, 16]], vec![[1, 1024, 2560], [1, 256, 10240], [2, 256, 512]])
        };
        Self { batch: if full { 2 } else { 1 }, attention, group_norm, geglu }
    }
}

/// Median wall time in ms of `f` (which must end with a device sync).
fn time(repeats: Repeats, mut f: impl FnMut()) -> f64 {
    for _ in 0..repeats.warmup {
        f();
    }
    let mut times: Vec<f64> = (0..repeats.reps.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

fn sync(device: &Device) {
    device.sync().expect("device sync");
}

fn in_use(device: &Device) -> u64 {
    sync(device);
    device.memory_pool_usage().map(|u| u.bytes_in_use).unwrap_or(0)
}

/// Tracks the peak of live bytes above the baseline taken at creation.
struct Peak<'a> {
    device: &'a Device,
    base: u64,
    peak: u64,
}

impl<'a> Peak<'a> {
    fn new(device: &'a Device) -> Self {
        Self { device, base: in_use(device), peak: 0 }
    }

    fn sample(&mut self) {
        self.peak = self.peak.max(in_use(self.device).saturating_sub(self.base));
    }
}

fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

fn attention_row(shape: AttnShape, batch: usize, device: &Device, repeats: Repeats) -> Row {
    let AttnShape { seq, keys, heads, dim } = shape;
    let q = random([batch, heads, seq, dim], device);
    let k = random([batch, heads, keys, dim], device);
    let v = random([batch, heads, keys, dim], device);
    let plain = AttentionControl::default();
    let fused = || attention_fused(q.clone(), k.clone(), v.clone(), &plain).out;
    let twin = || attention_twin(q.clone(), k.clone(), v.clone(), &plain).out;
    let layout = forced_layout().map_or("adapter".to_string(), |l| format!("{l:?}").to_lowercase());
    let shape = json!({ "seq": seq, "keys": keys, "heads": heads, "dim": dim, "batch": batch, "layout": layout });
    let mut row = op_row(shape, device, repeats, fused, twin);
    // The twin's peak is inside it: read after each of its stages.
    let mut peak = Peak::new(device);
    let scores = twin_scores(q.clone(), k.clone(), &plain);
    peak.sample();
    let probs = softmax(scores, 3);
    peak.sample();
    let out = probs.clone().matmul(v.clone());
    peak.sample();
    drop((probs, out));
    row.twin_bytes = row.twin_bytes.max(peak.peak);
    row
}

/// Times `fused` and `twin` (both single ops) and reads their extra bytes.
fn op_row<const D: usize>(shape: Value, device: &Device, repeats: Repeats, fused: impl Fn() -> Tensor<D>, twin: impl Fn() -> Tensor<D>) -> Row {
    let fused_ms = time(repeats, || {
        let _out = fused();
        sync(device);
    });
    let twin_ms = time(repeats, || {
        let _out = twin();
        sync(device);
    });
    let bytes = |f: &dyn Fn() -> Tensor<D>| {
        let mut peak = Peak::new(device);
        let out = f();
        peak.sample();
        drop(out);
        peak.peak
    };
    Row { shape, fused_ms, twin_ms, fused_bytes: bytes(&fused), twin_bytes: bytes(&twin) }
}

/// Every row of `bench kernels`; `progress` hears each row's name before it runs.
pub fn kernels(sizes: &Sizes, device: &Device, repeats: Repeats, progress: &mut dyn FnMut(&str)) -> Report {
    let mut report = Report::default();
    for &shape in &sizes.attention {
        progress(&format!("attention {shape:?}"));
        report.attention.push(attention_row(shape, sizes.batch, device, repeats));
    }
    for &[n, c, h, w] in &sizes.group_norm {
        progress(&format!("group_norm_silu [{n}, {c}, {h}, {w}]"));
        let (x, weight, bias) = (random([n, c, h, w], device), random([c], device), random([c], device));
        let groups = 32.min(c);
        let run = |kernel: bool| {
            let f = if kernel { group_norm_kernel } else { group_norm_twin };
            f(x.clone(), weight.clone(), bias.clone(), groups, 1e-5, true)
        };
        let shape = json!({ "shape": [n, c, h, w], "groups": groups });
        report.group_norm_silu.push(op_row(shape, device, repeats, || run(true), || run(false)));
    }
    for &[b, n, c2] in &sizes.geglu {
        progress(&format!("geglu [{b}, {n}, {c2}]"));
        let x = random([b, n, c2], device);
        let shape = json!({ "shape": [b, n, c2] });
        report.geglu.push(op_row(shape, device, repeats, || geglu_kernel(x.clone()), || geglu_twin(x.clone())));
    }
    report
}

/// The result of `bench kernels`.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub attention: Vec<Row>,
    pub group_norm_silu: Vec<Row>,
    pub geglu: Vec<Row>,
}

impl Report {
    /// One JSON object with every row, in the form.
    pub fn to_json(&self) -> Value {
        let rows = |rows: &[Row]| rows.iter().map(Row::to_json).collect::<Vec<_>>();
        json!({ "attention": rows(&self.attention), "group_norm_silu": rows(&self.group_norm_silu), "geglu": rows(&self.geglu) })
    }

    /// A fixed-width table for people.
    pub fn table(&self) -> String {
        let mut out = format!("{:<44} {:>10} {:>10} {:>7} {:>13} {:>13}\n", "op", "fused ms", "twin ms", "ratio", "fused bytes", "twin bytes");
        for (name, rows) in [("attention", &self.attention), ("group_norm_silu", &self.group_norm_silu), ("geglu", &self.geglu)] {
            for r in rows.iter() {
                let label = format!("{name} {}", r.shape.to_string().replace('"', ""));
                out += &format!("{label:<44} {:>10.3} {:>10.3} {:>7.2} {:>13} {:>13}\n", r.fused_ms, r.twin_ms, r.ratio(), r.fused_bytes, r.twin_bytes);
            }
        }
        out
    }
}

/// The result of `bench unet`: one denoiser step (batch 2, as with guidance), kernels on vs off.
#[derive(Debug, Clone)]
pub struct UnetReport {
    pub latent: [usize; 4],
    pub on_ms: f64,
    pub off_ms: f64,
    /// Largest |on - off| over the largest |off|: the two paths agree.
    pub max_rel_diff: f32,
}

impl UnetReport {
    pub fn to_json(&self, model: &str) -> Value {
        json!({ "unet": { "model": model, "latent": self.latent, "on_ms": round3(self.on_ms), "off_ms": round3(self.off_ms),
            "ratio": round3(self.off_ms / self.on_ms), "max_rel_diff": self.max_rel_diff } })
    }
}

/// Times `unet.forward` with the kernels on and off on random latents and text features.
pub fn unet(unet: &crate::model::UNet2DConditionModel, config: &UNetConfig, device: &Device, repeats: Repeats) -> UnetReport {
    let size = config.sample_size.unwrap_or(64);
    let latent = [2, config.in_channels, size, size];
    let sample = random(latent, device);
    let context = random([2, 77, config.cross_dim(0)], device);
    let was = super::enabled();
    let run = |on: bool| {
        super::set_enabled(on);
        let mut last = None;
        let ms = time(repeats, || {
            last = Some(unet.forward(sample.clone(), 500.0, &context));
            sync(device);
        });
        (ms, last.expect("at least one run"))
    };
    let (on_ms, on_out) = run(true);
    let (off_ms, off_out) = run(false);
    super::set_enabled(was);
    let scale = off_out.clone().abs().max().into_scalar::<f32>().max(1e-12);
    let diff = (on_out - off_out).abs().max().into_scalar::<f32>();
    UnetReport { latent, on_ms, off_ms, max_rel_diff: diff / scale }
}
