//! Hand-written WGSL kernels (`shaders/`), each with its plain burn tensor-op twin.
//!
//! Model code calls one function per op ([`attention::attention`], [`group_norm::group_norm`],
//! [`geglu::geglu`]); it runs the WGSL kernel when the tensor lives on burn-wgpu, and the twin
//! (or, for plain attention, burn's own `module::attention`, the pre-kernel behaviour) on every
//! other backend.
//!
//! Dispatch goes through burn's backend extension ([`KernelOps`], implemented for
//! `CubeBackend` in `cube.rs`), so the kernels read and write burn's own buffers without copies.
//! Routing is decided here, by device, rather than by adding `Flex`/`Autodiff` arms to the
//! extension: the twins are written with the `Tensor` API, which is what the other backends need
//! anyway, and under **autodiff** the twin runs so gradients come from burn's differentiable ops
//! (the kernels have no backward pass; training code gets exact gradients at tensor-op speed).
//!
//! A process-wide switch ([`set_enabled`], default on natively) turns the kernels off for comparisons
//! and benchmarks; off means exactly the tensor-op code the model used before the kernels existed.
//! In the browser the default is off for now: Chromium's shader compiler (Tint, stricter than naga)
//! rejects attention.wgsl ("Invalid ShaderModule"), measured in the browser tests on 2026-11-26; the
//! page turns them on once the shaders pass there.

use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, DispatchDevice};
use burn::prelude::*;
use burn::tensor::DType;

pub mod attention;
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
mod cube;
pub mod geglu;
pub mod group_norm;

static ENABLED: AtomicBool = AtomicBool::new(!cfg!(target_arch = "wasm32"));

/// Turns the WGSL kernels on or off for the whole process (default: on natively, off in wasm32).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether the WGSL kernels are switched on (they still only run on burn-wgpu).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// True when `tensor` lives on burn-wgpu without autodiff and has a dtype our shaders cover:
/// f32 always, f16 when the adapter has `shader-f16`.
pub fn on_wgsl_device<const D: usize>(tensor: &Tensor<D>) -> bool {
    let device = tensor.device();
    let wgpu = matches!(device.as_dispatch(), DispatchDevice::Cube(burn_cubecl::CubeDevice::Wgpu(_)));
    wgpu && match tensor.dtype() {
        DType::F32 => true,
        DType::F16 => device.supports_dtype(DType::F16),
        _ => false,
    }
}

/// Whether model code should take the kernel path for `tensor` (switch on and a WGSL device).
pub fn use_kernels<const D: usize>(tensor: &Tensor<D>) -> bool {
    enabled() && on_wgsl_device(tensor)
}

/// Fills `{{name}}` placeholders of a shader template. Done here rather than by burn's
/// `SourceTemplate` so the naga test validates exactly the text the GPU compiles.
pub fn render(template: &str, values: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (name, value) in values {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    out
}

/// The template values every shader takes: element type (and the f16 enable) and workgroup size.
pub(crate) fn base_values(f16: bool, workgroup: u32) -> Vec<(&'static str, String)> {
    vec![
        ("enable", if f16 { "enable f16;".into() } else { String::new() }),
        ("elem", if f16 { "f16".into() } else { "f32".into() }),
        ("wg", workgroup.to_string()),
    ]
}

/// The backend extension: one method per kernel, implemented for `CubeBackend` in `cube.rs`.
/// Shapes and conditions are checked by the public wrappers before these are called.
#[backend_extension(Cube)]
pub trait KernelOps: Backend {
    /// Fused attention; returns the output `[b, h, n, d]` and, when `stats`, the row max/sum
    /// `[b*h, n, 2]` (f32) that [`KernelOps::ld_attention_probs`] needs (else a 1-row dummy).
    fn ld_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, scale: f32, stats: bool) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// [`KernelOps::ld_attention`] with a bias map `[b, m, bh, bw]` upsampled to the query
    /// `grid` and a key scale `[b, m]`. (Optional tensors do not cross burn 0.22's extension
    /// macro, so steering is its own method and absent parts come as neutral tensors.)
    #[allow(clippy::too_many_arguments)]
    fn ld_attention_steered(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        key_scale: FloatTensor<Self>,
        scale: f32,
        grid: (usize, usize),
        stats: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Probabilities averaged over heads `[b, n, m]` (f32) from the stats of `ld_attention*`,
    /// with the same (possibly neutral) bias map and key scale.
    #[allow(clippy::too_many_arguments)]
    fn ld_attention_probs(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        key_scale: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        scale: f32,
        grid: (usize, usize),
    ) -> FloatTensor<Self>;

    /// GroupNorm of `[n, c, h, w]`, with SiLU when `silu`.
    fn ld_group_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, groups: usize, eps: f64, silu: bool) -> FloatTensor<Self>;

    /// GEGLU of `[.., 2 * inner]` -> `[.., inner]`.
    fn ld_geglu(x: FloatTensor<Self>) -> FloatTensor<Self>;
}
