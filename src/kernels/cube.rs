//! `KernelOps` on burn's cubecl backend: renders a shader, binds burn's own buffers and
//! launches it on the tensor's wgpu client. Only reached for wgpu devices (see `mod.rs`).

use burn::backend::tensor::FloatTensor;
use burn::tensor::{DType, Shape};
use burn_cubecl::cubecl::prelude::KernelId;
use burn_cubecl::cubecl::server::{BufferBinding, KernelArguments};
use burn_cubecl::cubecl::{CubeCount, CubeDim};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::template::{KernelSource, SourceKernel, SourceTemplate};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeBackend;

use super::{attention, geglu, group_norm, KernelOps};

/// A rendered WGSL shader; `key` names the template and its values for the pipeline cache.
struct Wgsl {
    key: String,
    source: String,
}

impl KernelSource for Wgsl {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(self.source.clone())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info(self.key.clone())
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Launches `source` with `buffers` bound in order at group 0.
fn launch(like: &CubeTensor, key: String, source: String, workgroup: u32, count: (u32, u32, u32), buffers: Vec<BufferBinding>) {
    let kernel = SourceKernel::new(Wgsl { key, source }, CubeDim::new_1d(workgroup));
    let args = KernelArguments::new().with_buffers(buffers);
    like.client.launch(Box::new(kernel), CubeCount::Static(count.0, count.1, count.2), args);
}

/// A small device buffer of u32 words (shader parameters, dummies for absent inputs).
fn words(like: &CubeTensor, values: &[u32]) -> BufferBinding {
    let bytes: Vec<u8> = values.iter().flat_map(|w| w.to_le_bytes()).collect();
    like.client.create_from_slice(&bytes).binding()
}

fn output(like: &CubeTensor, shape: Vec<usize>, dtype: DType) -> CubeTensor {
    empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), Shape::from(shape), dtype)
}

/// Unit stride on the last axis is all the attention kernel needs; anything else is copied.
fn unit_last_stride(t: CubeTensor) -> CubeTensor {
    let last = t.meta.strides().len() - 1;
    if t.meta.strides()[last] == 1 {
        t
    } else {
        into_contiguous(t)
    }
}

fn binding(t: &CubeTensor) -> BufferBinding {
    t.handle.clone().binding()
}

/// `[batch, head, row]` strides of a `[b, h, n, d]` tensor, as u32 words.
fn strides3(t: &CubeTensor) -> [u32; 3] {
    let s = t.meta.strides();
    [s[0] as u32, s[1] as u32, s[2] as u32]
}

/// Parameter words shared by attention.wgsl and attention_probs.wgsl (see their headers).
fn attention_params(q: &CubeTensor, k: &CubeTensor, v: &CubeTensor, flags: u32, scale: f32, grid: (usize, usize), bias_hw: (usize, usize)) -> Vec<u32> {
    let [_, heads, n, _] = dims4(q);
    let m = dims4(k)[2];
    let mut p = vec![n as u32, m as u32, heads as u32, flags, scale.to_bits()];
    p.extend(strides3(q));
    p.extend(strides3(k));
    p.extend(strides3(v));
    p.extend([grid.0 as u32, grid.1 as u32, bias_hw.0 as u32, bias_hw.1 as u32]);
    p
}

fn dims4(t: &CubeTensor) -> [usize; 4] {
    let s = t.meta.shape();
    [s[0], s[1], s[2], s[3]]
}

struct Steering {
    flags: u32,
    bias_hw: (usize, usize),
    bias: BufferBinding,
    key_scale: BufferBinding,
}

/// Bindings and flags for the optional bias map and key scale (1-word dummies when absent).
fn steering(q: &CubeTensor, bias: Option<CubeTensor>, key_scale: Option<CubeTensor>) -> Steering {
    let mut flags = 0;
    let mut bias_hw = (1, 1);
    let bias = match bias.map(into_contiguous) {
        Some(b) => {
            flags |= 1;
            bias_hw = (dims4(&b)[2], dims4(&b)[3]);
            binding(&b)
        }
        None => words(q, &[0]),
    };
    let key_scale = match key_scale.map(into_contiguous) {
        Some(s) => {
            flags |= 2;
            binding(&s)
        }
        None => words(q, &[0]),
    };
    Steering { flags, bias_hw, bias, key_scale }
}

#[allow(clippy::too_many_arguments)]
/// Launches attention.wgsl; `bias`/`key_scale` `None` leave their flags off.
fn attention(q: CubeTensor, k: CubeTensor, v: CubeTensor, bias: Option<CubeTensor>, key_scale: Option<CubeTensor>, scale: f32, grid: (usize, usize), stats: bool) -> (CubeTensor, CubeTensor) {
    let (q, k, v) = (unit_last_stride(q), unit_last_stride(k), unit_last_stride(v));
    let [b, h, n, d] = dims4(&q);
    let steer = steering(&q, bias, key_scale);
    let flags = steer.flags | if stats { 4 } else { 0 };
    let params = attention_params(&q, &k, &v, flags, scale, grid, steer.bias_hw);
    let out = output(&q, vec![b, h, n, d], q.dtype);
    let stats_out = output(&q, if stats { vec![b * h, n, 2] } else { vec![1, 1, 2] }, DType::F32);
    let layout = attention::forced_layout().unwrap_or_else(|| adapter_layout(&q));
    let tiling = layout.tiling(n, d);
    let (key, source) = attention::shader(q.dtype == DType::F16, d, tiling, steer.flags & 3 != 0);
    let count = (n.div_ceil(tiling.rows_per_workgroup()) as u32, (b * h) as u32, 1);
    let buffers = vec![binding(&q), binding(&k), binding(&v), binding(&out), steer.bias, steer.key_scale, binding(&stats_out), words(&q, &params)];
    launch(&q, key, source, tiling.invocations, count, buffers);
    (out, stats_out)
}

/// The attention layout for the tensor's adapter (see [`attention::Layout`]).
fn adapter_layout(like: &CubeTensor) -> attention::Layout {
    let identity = &like.client.properties().identity;
    attention::Layout::for_adapter(&identity.name, identity.physical.is_some())
}

impl KernelOps for CubeBackend {
    fn ld_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, scale: f32, stats: bool) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let n = dims4(&q)[2];
        attention(q, k, v, None, None, scale, (1, n), stats)
    }

    fn ld_attention_steered(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        key_scale: FloatTensor<Self>,
        scale: f32,
        grid: (usize, usize),
        stats: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        attention(q, k, v, Some(bias), Some(key_scale), scale, grid, stats)
    }

    fn ld_attention_probs(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        key_scale: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        scale: f32,
        grid: (usize, usize),
    ) -> FloatTensor<Self> {
        let (q, k) = (unit_last_stride(q), unit_last_stride(k));
        let [b, _, n, d] = dims4(&q);
        let m = dims4(&k)[2];
        let steer = steering(&q, Some(bias), Some(key_scale));
        // The probs shader reads no v: k's strides stand in for v's slot of the shared layout.
        let params = attention_params(&q, &k, &k, steer.flags, scale, grid, steer.bias_hw);
        let probs = output(&q, vec![b, n, m], DType::F32);
        let (key, source) = attention::probs_shader(q.dtype == DType::F16, d);
        let count = (m.div_ceil(attention::WORKGROUP as usize) as u32, n as u32, b as u32);
        let buffers = vec![binding(&q), binding(&k), steer.bias, steer.key_scale, binding(&stats), binding(&probs), words(&q, &params)];
        launch(&q, key, source, attention::WORKGROUP, count, buffers);
        probs
    }

    fn ld_group_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, groups: usize, eps: f64, silu: bool) -> FloatTensor<Self> {
        let (x, weight, bias) = (into_contiguous(x), into_contiguous(weight), into_contiguous(bias));
        let shape = x.meta.shape().to_vec();
        let (n, c) = (shape[0], shape[1]);
        let hw: usize = shape[2..].iter().product();
        let out = output(&x, shape, x.dtype);
        let params = [c as u32, hw as u32, groups as u32, silu as u32, (eps as f32).to_bits()];
        let (key, source) = group_norm::shader(x.dtype == DType::F16);
        let buffers = vec![binding(&x), binding(&weight), binding(&bias), binding(&out), words(&x, &params)];
        launch(&x, key, source, group_norm::WORKGROUP, (groups as u32, n as u32, 1), buffers);
        out
    }

    fn ld_geglu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let x = into_contiguous(x);
        let mut shape = x.meta.shape().to_vec();
        let inner = shape[shape.len() - 1] / 2;
        let rows: usize = shape[..shape.len() - 1].iter().product();
        *shape.last_mut().expect("rank >= 1") = inner;
        let out = output(&x, shape, x.dtype);
        let groups = (rows * inner).div_ceil(geglu::WORKGROUP as usize) as u32;
        let count = (groups.min(65535), groups.div_ceil(65535), 1);
        let (key, source) = geglu::shader(x.dtype == DType::F16);
        let buffers = vec![binding(&x), binding(&out), words(&x, &[rows as u32, inner as u32])];
        launch(&x, key, source, geglu::WORKGROUP, count, buffers);
        out
    }
}
