//! The UNet's down, mid and up blocks (diffusers models/unets/unet_2d_blocks.py):
//! `DownBlock2D`/`CrossAttnDownBlock2D` and `UpBlock2D`/`CrossAttnUpBlock2D` are one struct each,
//! with `attentions` empty for the plain variants.

use burn::prelude::*;

use super::attention::{AttnHook, CrossMap, Transformer2DModel, TransformerSpec};
use super::resnet::{Downsample2D, ResnetBlock2D, ResnetSpec, Upsample2D};
use crate::error::Result;
use crate::weights::VarBuilder;

/// Channel plan and options of one block.
#[derive(Debug, Clone, Copy)]
pub struct BlockSpec {
    pub c_in: usize,
    pub c_out: usize,
    /// The previous up block's output width (up blocks only).
    pub c_prev: usize,
    pub layers: usize,
    pub resnet: ResnetSpec,
    /// `None` for blocks without cross-attention.
    pub transformer: Option<TransformerSpec>,
    /// Down/upsample at the end of the block (every level but the last/first).
    pub resample: bool,
    pub downsample_padding: usize,
}

fn load_attention(vb: &VarBuilder, i: usize, channels: usize, spec: &BlockSpec) -> Result<Option<Transformer2DModel>> {
    spec.transformer.map(|t| Transformer2DModel::load(&vb.pp("attentions").pp(i), channels, t)).transpose()
}

/// `DownBlock2D` or `CrossAttnDownBlock2D`.
#[derive(Module, Debug)]
pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock {
    pub fn load(vb: &VarBuilder, spec: BlockSpec) -> Result<Self> {
        let (mut resnets, mut attentions) = (Vec::new(), Vec::new());
        for i in 0..spec.layers {
            let c_in = if i == 0 { spec.c_in } else { spec.c_out };
            resnets.push(ResnetBlock2D::load(&vb.pp("resnets").pp(i), c_in, spec.c_out, spec.resnet)?);
            attentions.extend(load_attention(vb, i, spec.c_out, &spec)?);
        }
        let downsampler = if spec.resample {
            Some(Downsample2D::load(&vb.pp("downsamplers.0"), spec.c_out, spec.downsample_padding)?)
        } else {
            None
        };
        Ok(Self { resnets, attentions, downsampler })
    }

    /// Returns the block output and appends every intermediate state to `skips`.
    pub fn forward(&self, x: Tensor<4>, temb: &Tensor<2>, context: &Tensor<3>, skips: &mut Vec<Tensor<4>>) -> Tensor<4> {
        self.forward_with_maps(x, temb, context, skips, &AttnHook::default(), &mut Vec::new())
    }

    /// [`Self::forward`] collecting the attn2 maps `hook` wants into `maps`.
    pub fn forward_with_maps(
        &self,
        mut x: Tensor<4>,
        temb: &Tensor<2>,
        context: &Tensor<3>,
        skips: &mut Vec<Tensor<4>>,
        hook: &AttnHook,
        maps: &mut Vec<CrossMap>,
    ) -> Tensor<4> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(x, Some(temb));
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward_with_maps(x, context, hook, maps);
            }
            skips.push(x.clone());
        }
        if let Some(down) = &self.downsampler {
            x = down.forward(x);
            skips.push(x.clone());
        }
        x
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, then (transformer, resnet) per layer.
#[derive(Module, Debug)]
pub struct MidBlock {
    resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2DModel>,
}

impl MidBlock {
    pub fn load(vb: &VarBuilder, channels: usize, resnet: ResnetSpec, transformer: TransformerSpec) -> Result<Self> {
        let resnets = (0..2).map(|i| ResnetBlock2D::load(&vb.pp("resnets").pp(i), channels, channels, resnet)).collect::<Result<_>>()?;
        let attentions = vec![Transformer2DModel::load(&vb.pp("attentions.0"), channels, transformer)?];
        Ok(Self { resnets, attentions })
    }

    pub fn forward(&self, x: Tensor<4>, temb: &Tensor<2>, context: &Tensor<3>) -> Tensor<4> {
        self.forward_with_maps(x, temb, context, &AttnHook::default(), &mut Vec::new())
    }

    /// [`Self::forward`] collecting the attn2 maps `hook` wants into `maps`.
    pub fn forward_with_maps(&self, x: Tensor<4>, temb: &Tensor<2>, context: &Tensor<3>, hook: &AttnHook, maps: &mut Vec<CrossMap>) -> Tensor<4> {
        let mut x = self.resnets[0].forward(x, Some(temb));
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = resnet.forward(attn.forward_with_maps(x, context, hook, maps), Some(temb));
        }
        x
    }
}

/// `UpBlock2D` or `CrossAttnUpBlock2D`.
#[derive(Module, Debug)]
pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock {
    /// `spec.layers` is diffusers' `layers_per_block + 1`; resnet `i` takes the previous state
    /// concatenated with a skip of `c_in` channels (last resnet) or `c_out` channels.
    pub fn load(vb: &VarBuilder, spec: BlockSpec) -> Result<Self> {
        let (mut resnets, mut attentions) = (Vec::new(), Vec::new());
        for i in 0..spec.layers {
            let skip = if i == spec.layers - 1 { spec.c_in } else { spec.c_out };
            let c_in = if i == 0 { spec.c_prev } else { spec.c_out };
            resnets.push(ResnetBlock2D::load(&vb.pp("resnets").pp(i), c_in + skip, spec.c_out, spec.resnet)?);
            attentions.extend(load_attention(vb, i, spec.c_out, &spec)?);
        }
        let upsampler = if spec.resample { Some(Upsample2D::load(&vb.pp("upsamplers.0"), spec.c_out)?) } else { None };
        Ok(Self { resnets, attentions, upsampler })
    }

    /// Consumes this block's skips from the end of `skips`; upsamples to the next skip's size.
    pub fn forward(&self, x: Tensor<4>, temb: &Tensor<2>, context: &Tensor<3>, skips: &mut Vec<Tensor<4>>) -> Tensor<4> {
        self.forward_with_maps(x, temb, context, skips, &AttnHook::default(), &mut Vec::new())
    }

    /// [`Self::forward`] collecting the attn2 maps `hook` wants into `maps`.
    pub fn forward_with_maps(
        &self,
        mut x: Tensor<4>,
        temb: &Tensor<2>,
        context: &Tensor<3>,
        skips: &mut Vec<Tensor<4>>,
        hook: &AttnHook,
        maps: &mut Vec<CrossMap>,
    ) -> Tensor<4> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips.pop().expect("UNet down path pushes one skip per up resnet");
            x = resnet.forward(Tensor::cat(vec![x, skip], 1), Some(temb));
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward_with_maps(x, context, hook, maps);
            }
        }
        if let Some(up) = &self.upsampler {
            let size = skips.last().map(|s| {
                let [_, _, h, w] = s.dims();
                [h, w]
            });
            x = up.forward(x, size);
        }
        x
    }
}
