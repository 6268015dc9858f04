//! diffusers' `ResnetBlock2D`, `Downsample2D` and `Upsample2D` (models/resnet.py,
//! models/downsampling.py, models/upsampling.py), shared by the UNet and the VAE.

use burn::prelude::*;
use burn::tensor::activation::silu;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use super::nn::{Conv2d, GroupNorm, Linear};
use crate::error::Result;
use crate::weights::VarBuilder;

/// `ResnetBlock2D` with `time_embedding_norm="default"` and `output_scale_factor=1`.
#[derive(Module, Debug)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

/// What a resnet block needs to know beyond its channel counts.
#[derive(Debug, Clone, Copy)]
pub struct ResnetSpec {
    pub groups: usize,
    pub eps: f64,
    /// `None` in the VAE, which has no time embedding.
    pub temb_channels: Option<usize>,
}

impl ResnetBlock2D {
    pub fn load(vb: &VarBuilder, c_in: usize, c_out: usize, spec: ResnetSpec) -> Result<Self> {
        let time_emb_proj = match spec.temb_channels {
            Some(t) => Some(Linear::load(&vb.pp("time_emb_proj"), t, c_out, true)?),
            None => None,
        };
        let conv_shortcut = if c_in != c_out { Some(Conv2d::load(&vb.pp("conv_shortcut"), c_in, c_out, 1, 1, 0)?) } else { None };
        Ok(Self {
            norm1: GroupNorm::load(&vb.pp("norm1"), spec.groups, c_in, spec.eps)?,
            conv1: Conv2d::load(&vb.pp("conv1"), c_in, c_out, 3, 1, 1)?,
            time_emb_proj,
            norm2: GroupNorm::load(&vb.pp("norm2"), spec.groups, c_out, spec.eps)?,
            conv2: Conv2d::load(&vb.pp("conv2"), c_out, c_out, 3, 1, 1)?,
            conv_shortcut,
        })
    }

    /// # Shapes
    /// - x: `[n, c_in, h, w]`, temb: `[n, temb_channels]` (ignored in the VAE)
    /// - returns `[n, c_out, h, w]`
    pub fn forward(&self, x: Tensor<4>, temb: Option<&Tensor<2>>) -> Tensor<4> {
        let mut h = self.conv1.forward(self.norm1.forward_silu(x.clone()));
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let t = proj.forward(silu(temb.clone()));
            let [n, c] = t.dims();
            h = h + t.reshape([n, c, 1, 1]);
        }
        let h = self.conv2.forward(self.norm2.forward_silu(h));
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        shortcut + h
    }
}

/// `Downsample2D(use_conv=True)`: a stride-2 3x3 convolution.
#[derive(Module, Debug)]
pub struct Downsample2D {
    conv: Conv2d,
}

impl Downsample2D {
    /// `padding` 1 in the UNet; 0 in the VAE encoder, which pads right/bottom by one instead.
    pub fn load(vb: &VarBuilder, channels: usize, padding: usize) -> Result<Self> {
        let conv = Conv2d::load(&vb.pp("conv"), channels, channels, 3, 2, padding)?;
        let conv = if padding == 0 { conv.with_asymmetric_padding() } else { conv };
        Ok(Self { conv })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv.forward(x)
    }
}

/// `Upsample2D(use_conv=True)`: nearest-neighbour upsampling, then a 3x3 convolution.
#[derive(Module, Debug)]
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn load(vb: &VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self { conv: Conv2d::load(&vb.pp("conv"), channels, channels, 3, 1, 1)? })
    }

    /// Upsamples to `size` (the skip connection's size in the UNet, as diffusers' `upsample_size`
    /// does for odd latent sizes) or to twice the input.
    pub fn forward(&self, x: Tensor<4>, size: Option<[usize; 2]>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let size = size.unwrap_or([h * 2, w * 2]);
        let options = InterpolateOptions::new(InterpolateMode::Nearest).with_output_size(size);
        self.conv.forward(interpolate(x, options))
    }
}
