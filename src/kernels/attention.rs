//! Scaled-dot-product attention: the fused kernel (shaders/attention.wgsl, and
//! shaders/attention_probs.wgsl for exported maps) and its tensor-op twin.
//!
//! Besides plain attention it offers what the lifelong parts need: the probabilities averaged
//! over heads (`[b, n, m]`, e.g. per text token for cross-attention), and steering of the scores
//! by an additive low-resolution per-key bias map and a per-key scale:
//! `s_ij = scale * key_scale[b, j] * (q_i . k_j) + up(bias[b, j])(i)`, where `up` is bilinear
//! upsampling (align_corners = false) of the map to the query grid.

use burn::backend::Dispatch;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::DType;
use std::sync::atomic::{AtomicU8, Ordering};

use super::{base_values, render, use_kernels, KernelOps};

const TEMPLATE: &str = include_str!("../../shaders/attention.wgsl");
const PROBS_TEMPLATE: &str = include_str!("../../shaders/attention_probs.wgsl");

/// Invocations per workgroup of attention_probs.wgsl (one per key).
pub const WORKGROUP: u32 = 64;
/// Largest head dim the fused kernel takes (its q and accumulator live in registers); larger
/// ones (e.g. SD's VAE, 512) use the tensor-op path.
pub const MAX_HEAD_DIM: usize = 160;
/// Workgroup memory budget for one K tile plus one V tile (WebGPU's default limit).
const TILE_BYTES: usize = 16 * 1024;

/// Keys per tile for head dim `d`: as many as fit K and V in 16 KiB of vec4<f32>, at most 64,
/// a multiple of [`KEYS_PER_STEP`].
pub fn tile_keys(d: usize) -> usize {
    let d4 = d.div_ceil(4);
    (TILE_BYTES / (2 * 16 * d4)).clamp(KEYS_PER_STEP, 64) / KEYS_PER_STEP * KEYS_PER_STEP
}

/// How the fused kernel spreads query rows over invocations: the one thing it does differently
/// per adapter kind (chosen in `cube.rs` from the adapter, or forced with [`set_layout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// CPU Vulkan/WebGPU drivers (lavapipe, SwiftShader) run eight invocations as the SIMD lanes
    /// of one thread, and lavapipe (Mesa 22.3) reads workgroup memory one lane at a time (a loop
    /// over the lanes, with a branch per lane, for every vec4 read of the K/V tile: profiled,
    /// it was most of the kernel's time). So each invocation takes many query rows, and each K/V
    /// value read from the tile serves all of them; and a workgroup takes up to 1024 rows, so one
    /// cooperative tile load serves them all. Register spills are plain stack moves, far cheaper
    /// than those reads. See [`Layout::tiling`] and README, Kernels, for the measurements.
    Cpu,
    /// GPUs: one row per invocation, 64-invocation workgroups (flash-attention v1's layout). The
    /// CPU layout keeps `2 * rows * ceil(d/4)` vec4 live per invocation, far over a GPU thread's
    /// ~255 registers: it ran 3-50x slower than the twin on an H100 (README, Kernels).
    Gpu,
}

/// Query rows per invocation and invocations per workgroup of one attention dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    pub rows: usize,
    pub invocations: u32,
}

impl Tiling {
    /// Query rows one workgroup covers.
    pub fn rows_per_workgroup(self) -> usize {
        self.rows * self.invocations as usize
    }
}

/// 0: from the adapter; 1: Cpu; 2: Gpu.
static FORCED: AtomicU8 = AtomicU8::new(0);

/// Forces a layout for the whole process (`None`: from the adapter). For benchmarks and tests,
/// which time or check both layouts on one adapter.
pub fn set_layout(layout: Option<Layout>) {
    FORCED.store(match layout { None => 0, Some(Layout::Cpu) => 1, Some(Layout::Gpu) => 2 }, Ordering::Relaxed);
}

/// The forced layout, if any.
pub fn forced_layout() -> Option<Layout> {
    match FORCED.load(Ordering::Relaxed) {
        1 => Some(Layout::Cpu),
        2 => Some(Layout::Gpu),
        _ => None,
    }
}

impl Layout {
    /// The layout for an adapter: CPU drivers report no physical device (wgpu's device type
    /// `Cpu`); in a browser every adapter reports one, so SwiftShader is known by its name.
    pub fn for_adapter(name: &str, physical: bool) -> Layout {
        let name = name.to_ascii_lowercase();
        let software = ["llvmpipe", "lavapipe", "swiftshader", "basic render"].iter().any(|s| name.contains(s));
        if physical && !software {
            Layout::Gpu
        } else {
            Layout::Cpu
        }
    }

    /// The tiling for `n` queries of head dim `d`.
    ///
    /// Cpu, measured on lavapipe (1024 x 1024, 8 heads; twin / fused): 8 rows per invocation in
    /// 64-row workgroups 2.8x (d 40) / 2.2x (d 80); 8 rows in 1024-row workgroups 3.7x / 2.6x;
    /// 16 rows in 1024-row workgroups 5.0x / 3.6x; 32 rows 6.1x / 3.7x; 4 rows always slower.
    /// Sixteen rows cost a long first compile (on lavapipe with a cold shader cache, the d 40 and
    /// d 80 shaders together: 85 s against 8 s for eight rows), so they are kept for large
    /// attention (n >= 1024, SD's 64x64 and 32x32 levels), where the time is won back at once. Workgroups are the largest power of two
    /// of invocations (8 to 64: one SIMD batch to 1024 rows) that `n` fills, so padding rows
    /// (computed on a clamped row, never written) stay under half.
    pub fn tiling(self, n: usize, d: usize) -> Tiling {
        match self {
            Layout::Gpu => Tiling { rows: 1, invocations: 64 },
            Layout::Cpu => {
                let rows = if n >= 1024 && d <= 80 { 16 } else { 8 };
                let fill = (n / rows).max(1);
                let invocations = (1u32 << fill.ilog2().min(6)).clamp(8, 64);
                Tiling { rows, invocations }
            }
        }
    }
}

/// `line(r, c)` for every row r and slice c, one statement per line.
fn each(rows: usize, d4: usize, line: impl Fn(usize, usize) -> String) -> String {
    (0..rows).flat_map(|r| (0..d4).map(move |c| (r, c))).map(|(r, c)| format!("    {}\n", line(r, c))).collect()
}

/// Per-row set-up: clamped row, q slices `q{r}_{c}`, accumulators `a{r}_{c}`, running max/sum.
fn init_block(rows: usize, d4: usize) -> String {
    let mut out = String::new();
    for r in 0..rows {
        out += &format!("    let row{r} = first + lid + {r}u * WG;\n    let rr{r} = min(row{r}, n - 1u);\n");
        out += &format!("    let qb{r} = b * params[P_Q] + h * params[P_Q + 1u] + rr{r} * params[P_Q + 2u];\n");
        out += &format!("    var taps{r} = Taps(0u, 0u, 0u, 0u, 0.0, 0.0, 0.0, 0.0);\n    if ((flags & 1u) != 0u) {{ taps{r} = bias_taps(rr{r}); }}\n");
        out += &format!("    var max{r} = NEG;\n    var sum{r} = 0.0;\n");
    }
    out += &each(rows, d4, |r, c| format!("let q{r}_{c} = load_q(qb{r}, {c}u) * scale;"));
    out += &each(rows, d4, |r, c| format!("var a{r}_{c} = vec4<f32>(0.0);"));
    out
}

/// Keys scored per inner step (one vec4 of scores per row; `tile_block` writes four): each row's
/// running max and sum are rescaled once per step. Eight (fewer rescales, more live values) ran
/// 5-10% slower on lavapipe.
pub const KEYS_PER_STEP: usize = 4;

/// Indentation of the generated loop body.
const PAD: &str = "            ";

/// Four keys for every row: scores, online-softmax update, weighted sum of V. Both products run
/// slice by slice over the head dim, each slice of the four K (or V) rows read from the tile once
/// and used for every row while it is in registers: reading all four K rows first and then each
/// row's dot products kept `4 * ceil(d/4)` K slices live, which spilled and ran 15% slower on
/// lavapipe (d 80, 16 rows: 93 -> 79 ms).
fn tile_block(rows: usize, d4: usize) -> String {
    let mut out = String::new();
    for r in 0..rows {
        out += &format!("{PAD}var s{r} = vec4<f32>(0.0);\n");
    }
    out += &by_slice("k", rows, d4, |r, c| format!("s{r} += vec4<f32>(dot(q{r}_{c}, k0), dot(q{r}_{c}, k1), dot(q{r}_{c}, k2), dot(q{r}_{c}, k3));"));
    for r in 0..rows {
        out += &format!("{PAD}s{r} = steer(s{r}, flags, taps{r}, b, t0 + t, t0 + count);\n");
        out += &format!("{PAD}let new{r} = max(max{r}, max(max(s{r}.x, s{r}.y), max(s{r}.z, s{r}.w)));\n");
        out += &format!("{PAD}let corr{r} = exp(max{r} - new{r});\n{PAD}let p{r} = exp(s{r} - vec4<f32>(new{r}));\n");
        out += &format!("{PAD}sum{r} = sum{r} * corr{r} + (p{r}.x + p{r}.y) + (p{r}.z + p{r}.w);\n{PAD}max{r} = new{r};\n");
    }
    out += &by_slice("v", rows, d4, |r, c| format!("a{r}_{c} = a{r}_{c} * corr{r} + (p{r}.x * v0 + p{r}.y * v1) + (p{r}.z * v2 + p{r}.w * v3);"));
    out
}

/// For each head-dim slice c: a scope that reads slice c of the step's four rows of `tile` ("k" or
/// "v": `k0`..`k3` from `k_tile`) and then runs `line(r, c)` for every row; one scope per slice, so
/// its four values do not outlive their use.
fn by_slice(tile: &str, rows: usize, d4: usize, line: impl Fn(usize, usize) -> String) -> String {
    let mut out = String::new();
    for c in 0..d4 {
        let reads = (0..4).map(|i| format!("let {tile}{i} = {tile}_tile[o + {}u];", i * d4 + c)).collect::<Vec<_>>().join(" ");
        out += &format!("{PAD}{{\n{PAD}{reads}\n");
        for r in 0..rows {
            out += &format!("{PAD}{}\n", line(r, c));
        }
        out += &format!("{PAD}}}\n");
    }
    out
}

/// Normalised rows written out, and the row stats when asked.
fn finish_block(rows: usize, d4: usize) -> String {
    let mut out = String::new();
    for r in 0..rows {
        out += &format!("    if (row{r} < n) {{\n        let ob = (bh * n + row{r}) * D;\n        let inv = 1.0 / sum{r};\n");
        for c in 0..d4 {
            out += &format!("        store(ob, {c}u, a{r}_{c} * inv);\n");
        }
        out += &format!("        if ((flags & 4u) != 0u) {{ stats[2u * (bh * n + row{r})] = max{r}; stats[2u * (bh * n + row{r}) + 1u] = sum{r}; }}\n    }}\n");
    }
    out
}

fn values(f16: bool, d: usize, tiling: Tiling, steered: bool) -> Vec<(&'static str, String)> {
    let (d4, rows) = (d.div_ceil(4), tiling.rows);
    let mut v = base_values(f16, tiling.invocations);
    v.extend([("d", d.to_string()), ("d4", d4.to_string()), ("tk", tile_keys(d).to_string()), ("rows", rows.to_string())]);
    v.extend([("kb", KEYS_PER_STEP.to_string()), ("steered", steered.to_string())]);
    v.extend([("init", init_block(rows, d4)), ("tile", tile_block(rows, d4)), ("finish", finish_block(rows, d4))]);
    v
}

/// attention.wgsl rendered for an element type, head dim, tiling and whether it takes a bias map
/// and key scale: (cache key, source).
pub fn shader(f16: bool, d: usize, tiling: Tiling, steered: bool) -> (String, String) {
    let Tiling { rows, invocations } = tiling;
    (format!("attention/{f16}/{d}/{rows}x{invocations}/{steered}"), render(TEMPLATE, &values(f16, d, tiling, steered)))
}

/// attention_probs.wgsl rendered for an element type and head dim: (cache key, source).
pub fn probs_shader(f16: bool, d: usize) -> (String, String) {
    let mut v = base_values(f16, WORKGROUP);
    v.extend([("d", d.to_string()), ("d4", d.div_ceil(4).to_string())]);
    (format!("attention_probs/{f16}/{d}"), render(PROBS_TEMPLATE, &v))
}

/// Optional steering and map export. `Default` is plain attention.
#[derive(Debug, Clone, Default)]
pub struct AttentionControl {
    /// Additive score bias per key as a low-resolution map `[b, m, bias_h, bias_w]`.
    pub bias: Option<Tensor<4>>,
    /// Multiplies each key's scaled score `[b, m]`.
    pub key_scale: Option<Tensor<2>>,
    /// The query grid `[h, w]` (`h * w = n`) the bias map is upsampled to; required with `bias`.
    pub grid: Option<[usize; 2]>,
    /// Also return the probabilities averaged over heads `[b, n, m]`.
    pub export_probs: bool,
}

impl AttentionControl {
    fn is_plain(&self) -> bool {
        self.bias.is_none() && self.key_scale.is_none() && !self.export_probs
    }

    fn grid(&self, n: usize) -> [usize; 2] {
        match (self.grid, &self.bias) {
            (Some(g), _) => {
                assert_eq!(g[0] * g[1], n, "attention: grid {g:?} does not cover {n} queries");
                g
            }
            (None, Some(_)) => panic!("attention: a bias map needs the query grid"),
            (None, None) => [1, n],
        }
    }
}

/// Attention output `[b, h, n, d]` and, when asked, the head-averaged probabilities `[b, n, m]`.
#[derive(Debug, Clone)]
pub struct AttentionOutput {
    pub out: Tensor<4>,
    pub probs: Option<Tensor<3>>,
}

/// Attention as the model uses it: the fused kernel on burn-wgpu (kernels on, head dim <=
/// [`MAX_HEAD_DIM`]); elsewhere burn's `module::attention` for plain calls, the twin otherwise.
///
/// # Shapes
/// q: `[b, h, n, d]`, k/v: `[b, h, m, d]` (any strides) -> out `[b, h, n, d]`, probs `[b, n, m]`
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, control: &AttentionControl) -> AttentionOutput {
    let d = q.dims()[3];
    if use_kernels(&q) && d <= MAX_HEAD_DIM {
        return attention_fused(q, k, v, control);
    }
    if control.is_plain() {
        let out = burn_attention(q, k, v, None, None, AttentionModuleOptions::default());
        return AttentionOutput { out, probs: None };
    }
    attention_twin(q, k, v, control)
}

/// The fused kernel, unconditionally (tests and benchmarks); the tensors must be on burn-wgpu.
pub fn attention_fused(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, control: &AttentionControl) -> AttentionOutput {
    let [b, _, n, d] = q.dims();
    let m = k.dims()[2];
    let grid = control.grid(n);
    let grid = (grid[0], grid[1]);
    let scale = 1.0 / (d as f32).sqrt();
    let steered = control.bias.is_some() || control.key_scale.is_some();
    // Neutral parts (zero bias, unit scale) stand in for what the caller left out.
    let steering = (steered || control.export_probs).then(|| {
        let (device, dtype) = (q.device(), q.dtype());
        let bias = control.bias.clone().unwrap_or_else(|| Tensor::zeros([b, m, 1, 1], &device)).cast(dtype);
        let key_scale = control.key_scale.clone().unwrap_or_else(|| Tensor::ones([b, m], &device)).cast(dtype);
        (bias.into_dispatch(), key_scale.into_dispatch())
    });
    let (qd, kd, vd) = (q.clone().into_dispatch(), k.clone().into_dispatch(), v.into_dispatch());
    let (out, stats) = match (&steering, steered) {
        (Some((bias, key_scale)), true) => {
            <Dispatch as KernelOps>::ld_attention_steered(qd, kd, vd, bias.clone(), key_scale.clone(), scale, grid, control.export_probs)
        }
        _ => <Dispatch as KernelOps>::ld_attention(qd, kd, vd, scale, control.export_probs),
    };
    let probs = steering.filter(|_| control.export_probs).map(|(bias, key_scale)| {
        let probs = <Dispatch as KernelOps>::ld_attention_probs(q.into_dispatch(), k.into_dispatch(), bias, key_scale, stats, scale, grid);
        Tensor::<3>::from_dispatch(probs)
    });
    AttentionOutput { out: Tensor::from_dispatch(out), probs }
}

/// Tensor-op twin: scores, softmax, weighted sum (materialises `[b, h, n, m]`).
pub fn attention_twin(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, control: &AttentionControl) -> AttentionOutput {
    let probs = softmax(twin_scores(q, k, control), 3);
    let export = control.export_probs.then(|| head_mean(probs.clone()));
    AttentionOutput { out: probs.matmul(v), probs: export }
}

/// Twin step 1: steered scores `[b, h, n, m]`.
pub fn twin_scores(q: Tensor<4>, k: Tensor<4>, control: &AttentionControl) -> Tensor<4> {
    let [b, _, n, d] = q.dims();
    let m = k.dims()[2];
    let dtype = q.dtype();
    let mut scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(1.0 / (d as f64).sqrt());
    if let Some(scale) = &control.key_scale {
        scores = scores * scale.clone().cast(dtype).reshape([b, 1, 1, m]);
    }
    if let Some(bias) = &control.bias {
        let [gh, gw] = control.grid(n);
        let up = upsample_bilinear(bias.clone().cast(dtype), gh, gw);
        scores = scores + up.reshape([b, m, n]).swap_dims(1, 2).unsqueeze_dim::<4>(1);
    }
    scores
}

/// Probabilities `[b, h, n, m]` averaged over heads -> `[b, n, m]` (f32, as the kernel's).
pub fn head_mean(probs: Tensor<4>) -> Tensor<3> {
    let [b, _, n, m] = probs.dims();
    probs.mean_dim(1).reshape([b, n, m]).cast(DType::F32)
}

/// Bilinear upsampling `[b, m, h, w]` -> `[b, m, gh, gw]` with half-pixel centres
/// (torch's align_corners = false), as two small interpolation matrices: `Wy @ map @ Wx^T`.
pub fn upsample_bilinear(map: Tensor<4>, gh: usize, gw: usize) -> Tensor<4> {
    let [b, m, h, w] = map.dims();
    let device = map.device();
    let dtype = map.dtype();
    let wy = Tensor::<2>::from_data(TensorData::new(interp_matrix(gh, h), [gh, h]), &device).cast(dtype);
    let wx = Tensor::<2>::from_data(TensorData::new(interp_matrix(gw, w), [gw, w]), &device).cast(dtype);
    let wy = wy.unsqueeze::<4>().expand([b, m, gh, h]);
    let wxt = wx.transpose().unsqueeze::<4>().expand([b, m, w, gw]);
    wy.matmul(map).matmul(wxt)
}

/// Row `o` holds the weights of source cells for output cell `o` (the shader's `axis_taps`).
fn interp_matrix(dst: usize, src: usize) -> Vec<f32> {
    let mut weights = vec![0f32; dst * src];
    for o in 0..dst {
        let pos = (((o as f32) + 0.5) * src as f32 / dst as f32 - 0.5).max(0.0);
        let lo = (pos.floor() as usize).min(src - 1);
        let hi = (lo + 1).min(src - 1);
        let frac = pos - lo as f32;
        weights[o * src + lo] += 1.0 - frac;
        weights[o * src + hi] += frac;
    }
    weights
}
