//! GEGLU, `hidden * gelu(gate)` over the two halves of the last axis: the kernel
//! (shaders/geglu.wgsl) and its twin.

use burn::backend::Dispatch;
use burn::prelude::*;
use burn::tensor::activation::gelu;

use super::{base_values, render, use_kernels, KernelOps};

const TEMPLATE: &str = include_str!("../../shaders/geglu.wgsl");

/// Invocations per workgroup.
pub const WORKGROUP: u32 = 256;

/// geglu.wgsl rendered for an element type: (cache key, source).
pub fn shader(f16: bool) -> (String, String) {
    (format!("geglu/{f16}"), render(TEMPLATE, &base_values(f16, WORKGROUP)))
}

/// GEGLU: the kernel on burn-wgpu, else the twin.
///
/// # Shapes
/// `[b, n, 2 * inner]` -> `[b, n, inner]`
pub fn geglu(x: Tensor<3>) -> Tensor<3> {
    if use_kernels(&x) {
        geglu_kernel(x)
    } else {
        geglu_twin(x)
    }
}

/// The kernel, unconditionally (tests and benchmarks); `x` must be on burn-wgpu.
pub fn geglu_kernel(x: Tensor<3>) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as KernelOps>::ld_geglu(x.into_dispatch()))
}

/// Tensor-op twin (diffusers' `GEGLU.forward`: chunk, then `hidden * gelu(gate)`).
pub fn geglu_twin(x: Tensor<3>) -> Tensor<3> {
    let mut halves = x.chunk(2, 2);
    let gate = halves.pop().expect("chunk(2) gives two halves");
    let hidden = halves.pop().expect("chunk(2) gives two halves");
    hidden * gelu(gate)
}
