//! GroupNorm with optional SiLU: the kernel (shaders/group_norm_silu.wgsl) and its twin.

use burn::backend::Dispatch;
use burn::prelude::*;
use burn::tensor::activation::silu as silu_op;

use super::{base_values, render, use_kernels, KernelOps};

const TEMPLATE: &str = include_str!("../../shaders/group_norm_silu.wgsl");

/// Invocations per (sample, group); a power of two for the tree reduction.
pub const WORKGROUP: u32 = 256;

/// group_norm_silu.wgsl rendered for an element type: (cache key, source).
pub fn shader(f16: bool) -> (String, String) {
    (format!("group_norm_silu/{f16}"), render(TEMPLATE, &base_values(f16, WORKGROUP)))
}

/// `torch.nn.GroupNorm` (affine), then SiLU when `silu`: the kernel on burn-wgpu, else the twin.
///
/// # Shapes
/// x: `[n, c, h, w]`, weight/bias: `[c]` -> `[n, c, h, w]`
pub fn group_norm(x: Tensor<4>, weight: Tensor<1>, bias: Tensor<1>, groups: usize, eps: f64, silu: bool) -> Tensor<4> {
    if use_kernels(&x) {
        group_norm_kernel(x, weight, bias, groups, eps, silu)
    } else {
        group_norm_twin(x, weight, bias, groups, eps, silu)
    }
}

/// The kernel, unconditionally (tests and benchmarks); `x` must be on burn-wgpu.
pub fn group_norm_kernel(x: Tensor<4>, weight: Tensor<1>, bias: Tensor<1>, groups: usize, eps: f64, silu: bool) -> Tensor<4> {
    let out = <Dispatch as KernelOps>::ld_group_norm(x.into_dispatch(), weight.into_dispatch(), bias.into_dispatch(), groups, eps, silu);
    Tensor::from_dispatch(out)
}

/// Tensor-op twin (the model's GroupNorm before the kernel existed).
pub fn group_norm_twin(x: Tensor<4>, weight: Tensor<1>, bias: Tensor<1>, groups: usize, eps: f64, silu: bool) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let grouped = x.reshape([n, groups, (c / groups) * h * w]);
    let (var, mean) = grouped.clone().var_mean_bias(2);
    let normed = (grouped - mean).div(var.add_scalar(eps).sqrt()).reshape([n, c, h, w]);
    let out = normed * weight.reshape([1, c, 1, 1]) + bias.reshape([1, c, 1, 1]);
    if silu {
        silu_op(out)
    } else {
        out
    }
}
