//! Layers named like PyTorch's (`weight`, `bias`), loaded through a [`VarBuilder`].
//!
//! These are thin wrappers over burn's functional ops: the model code builds them from diffusers'
//! keys, so that loading is one path walk and LoRA adapters can later address the same names.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::module::{conv2d, layer_norm, linear};
use burn::tensor::ops::ConvOptions;

use crate::error::Result;
use crate::kernels::group_norm::group_norm;
use crate::weights::VarBuilder;

/// `torch.nn.Linear`; the weight is kept transposed (`[in, out]`) as burn's `linear` wants it.
#[derive(Module, Debug)]
pub struct Linear {
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
    /// A low-rank update set by the lifelong adapter (src/lifelong/adapter.rs); `None` when loaded.
    pub lora: Option<Lora>,
}

/// PEFT's LoRA on one linear layer: `y = W x + scale * B (A x)` with `lora_A.weight` `[r, in]` and
/// `lora_B.weight` `[out, r]` (peft/tuners/lora/layer.py `Linear.forward`), `scale = alpha / r`.
/// Both kept transposed, like [`Linear::weight`].
#[derive(Module, Debug)]
pub struct Lora {
    /// `A^T`: `[in, r]`.
    pub down: Param<Tensor<2>>,
    /// `B^T`: `[r, out]`.
    pub up: Param<Tensor<2>>,
    pub scale: f64,
    /// Concept-gated blocks (L2DM's lessons, src/lifelong/gate.rs): the rank rows split into this
    /// many equal blocks, block `k` scaled per position by gate `k`; 0: ungated (plain LoRA).
    pub blocks: usize,
}

impl Lora {
    /// # Shapes
    /// `[..., in]` -> `[..., out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        linear(linear(x, self.down.val(), None), self.up.val(), None).mul_scalar(self.scale)
    }

    /// [`Self::forward`] with each block's rank rows scaled by its gate: `gate` `[b, n, blocks]`
    /// (or `[b, 1, blocks]`, the same at every position) for input `[b, n, in]`. A gated LoRA without a gate adds nothing (no concept is present).
    pub fn forward_gated(&self, x: Tensor<3>, gate: Option<&Tensor<3>>) -> Option<Tensor<3>> {
        if self.blocks == 0 {
            return Some(self.forward(x));
        }
        let gate = gate?;
        let [b, n, k] = gate.dims();
        let rank = self.down.val().dims()[1];
        if k != self.blocks || !rank.is_multiple_of(k) {
            return None;
        }
        let rows = gate.clone().unsqueeze_dim::<4>(3).repeat_dim(3, rank / k).reshape([b, n, rank]);
        let z = linear(x, self.down.val(), None) * rows;
        Some(linear(z, self.up.val(), None).mul_scalar(self.scale))
    }
}

impl Linear {
    pub fn load(vb: &VarBuilder, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        let weight = vb.tensor("weight", [d_out, d_in])?.transpose();
        let bias = if bias { Some(vb.param("bias", [d_out])?) } else { None };
        Ok(Self { weight: Param::from_tensor(weight), bias, lora: None })
    }

    /// # Shapes
    /// `[..., d_in]` -> `[..., d_out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let out = linear(x.clone(), self.weight.val(), self.bias.as_ref().map(|b| b.val()));
        match &self.lora {
            // A gated LoRA acts only where its gate says (forward_gated); without one, nowhere.
            Some(lora) if lora.blocks == 0 => out + lora.forward(x),
            _ => out,
        }
    }

    /// [`Self::forward`] whose LoRA, when gated, is scaled per position by `gate`
    /// ([`Lora::forward_gated`]).
    pub fn forward_gated(&self, x: Tensor<3>, gate: Option<&Tensor<3>>) -> Tensor<3> {
        let out = linear(x.clone(), self.weight.val(), self.bias.as_ref().map(|b| b.val()));
        match self.lora.as_ref().and_then(|lora| lora.forward_gated(x, gate)) {
            Some(delta) => out + delta,
            None => out,
        }
    }

    /// The base projection alone, without any LoRA.
    pub fn forward_base<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()))
    }
}

/// `torch.nn.Conv2d` with square kernel, symmetric padding unless `pad_asym` is used.
#[derive(Module, Debug)]
pub struct Conv2d {
    pub weight: Param<Tensor<4>>,
    pub bias: Option<Param<Tensor<1>>>,
    stride: usize,
    /// Padding (top, bottom) = (left, right) per side; asymmetric for the VAE's downsampler.
    pad_before: usize,
    pad_after: usize,
}

impl Conv2d {
    pub fn load(vb: &VarBuilder, c_in: usize, c_out: usize, kernel: usize, stride: usize, padding: usize) -> Result<Self> {
        let weight = vb.param("weight", [c_out, c_in, kernel, kernel])?;
        let bias = Some(vb.param("bias", [c_out])?);
        Ok(Self { weight, bias, stride, pad_before: padding, pad_after: padding })
    }

    /// Pads (0 before, 1 after) on each axis, as diffusers' `Downsample2D(padding=0)` does
    /// with `F.pad(x, (0, 1, 0, 1))` before its stride-2 convolution.
    pub fn with_asymmetric_padding(mut self) -> Self {
        self.pad_before = 0;
        self.pad_after = 1;
        self
    }

    /// # Shapes
    /// `[n, c_in, h, w]` -> `[n, c_out, h', w']`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let pad = (self.pad_before, self.pad_after);
        let options = ConvOptions::new_with_padding([self.stride; 2], [pad; 2], [1, 1], 1);
        conv2d(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()), options)
    }
}

/// `torch.nn.GroupNorm` (affine); the WGSL kernel on burn-wgpu, its tensor-op twin elsewhere.
#[derive(Module, Debug)]
pub struct GroupNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn load(vb: &VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(crate::Error::InvalidInput(format!(
                "GroupNorm `{}`: {channels} channels are not divisible into {groups} groups (norm_num_groups in config.json)",
                vb.prefix()
            )));
        }
        Ok(Self { weight: vb.param("weight", [channels])?, bias: vb.param("bias", [channels])?, groups, eps })
    }

    /// # Shapes
    /// `[n, c, h, w]` -> same
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        group_norm(x, self.weight.val(), self.bias.val(), self.groups, self.eps, false)
    }

    /// GroupNorm followed by SiLU, the pair every resnet block opens with: one fused kernel on
    /// burn-wgpu (src/kernels/group_norm.rs).
    pub fn forward_silu(&self, x: Tensor<4>) -> Tensor<4> {
        group_norm(x, self.weight.val(), self.bias.val(), self.groups, self.eps, true)
    }
}

/// `torch.nn.LayerNorm` over the last axis.
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    eps: f64,
}

impl LayerNorm {
    pub fn load(vb: &VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self { weight: vb.param("weight", [dim])?, bias: vb.param("bias", [dim])?, eps })
    }

    /// # Shapes
    /// `[..., dim]` -> same
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        layer_norm(x, self.weight.val(), Some(self.bias.val()), self.eps)
    }
}
