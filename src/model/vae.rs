//! `AutoencoderKL` (diffusers models/autoencoders/autoencoder_kl.py and vae.py): the encoder that
//! turns images into latents (for teaching concepts) and the decoder that turns latents into images.

use burn::prelude::*;

use super::attention::{merge_heads, sdpa, split_heads};
use super::nn::{Conv2d, GroupNorm, Linear};
use super::resnet::{Downsample2D, ResnetBlock2D, ResnetSpec, Upsample2D};
use crate::config::VaeConfig;
use crate::error::Result;
use crate::weights::VarBuilder;

/// The VAE mid-block's single-head spatial self-attention (`Attention` with
/// `residual_connection=True` and a group norm in front).
#[derive(Module, Debug)]
pub struct VaeAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
}

impl VaeAttention {
    fn load(vb: &VarBuilder, c: usize, groups: usize) -> Result<Self> {
        // Checkpoints saved before diffusers 0.14 name the projections query/key/value/proj_attn.
        let legacy = vb.contains("query.weight");
        let name = |new: &'static str, old: &'static str| if legacy { old } else { new };
        Ok(Self {
            group_norm: GroupNorm::load(&vb.pp("group_norm"), groups, c, 1e-6)?,
            to_q: Linear::load(&vb.pp(name("to_q", "query")), c, c, true)?,
            to_k: Linear::load(&vb.pp(name("to_k", "key")), c, c, true)?,
            to_v: Linear::load(&vb.pp(name("to_v", "value")), c, c, true)?,
            to_out: Linear::load(&vb.pp(name("to_out.0", "proj_attn")), c, c, true)?,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let seq = self.group_norm.forward(x.clone()).reshape([b, c, h * w]).swap_dims(1, 2);
        let q = split_heads(self.to_q.forward(seq.clone()), 1);
        let k = split_heads(self.to_k.forward(seq.clone()), 1);
        let v = split_heads(self.to_v.forward(seq), 1);
        let out = self.to_out.forward(merge_heads(sdpa(q, k, v, false)));
        out.swap_dims(1, 2).reshape([b, c, h, w]) + x
    }
}

/// `UNetMidBlock2D` without time embedding: resnet, attention, resnet.
#[derive(Module, Debug)]
struct VaeMidBlock {
    resnets: Vec<ResnetBlock2D>,
    attention: Option<VaeAttention>,
}

impl VaeMidBlock {
    fn load(vb: &VarBuilder, c: usize, spec: ResnetSpec, attention: bool) -> Result<Self> {
        let resnets = (0..2).map(|i| ResnetBlock2D::load(&vb.pp("resnets").pp(i), c, c, spec)).collect::<Result<_>>()?;
        let attention = if attention { Some(VaeAttention::load(&vb.pp("attentions.0"), c, spec.groups)?) } else { None };
        Ok(Self { resnets, attention })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.resnets[0].forward(x, None);
        if let Some(attn) = &self.attention {
            x = attn.forward(x);
        }
        self.resnets[1].forward(x, None)
    }
}

/// `DownEncoderBlock2D` / `UpDecoderBlock2D`: resnets then an optional resampler.
#[derive(Module, Debug)]
struct VaeBlock {
    resnets: Vec<ResnetBlock2D>,
    down: Option<Downsample2D>,
    up: Option<Upsample2D>,
}

impl VaeBlock {
    fn forward(&self, mut x: Tensor<4>) -> Tensor<4> {
        for resnet in &self.resnets {
            x = resnet.forward(x, None);
        }
        if let Some(down) = &self.down {
            x = down.forward(x);
        }
        if let Some(up) = &self.up {
            x = up.forward(x, None);
        }
        x
    }
}

fn load_resnets(vb: &VarBuilder, n: usize, c_in: usize, c_out: usize, spec: ResnetSpec) -> Result<Vec<ResnetBlock2D>> {
    (0..n).map(|i| ResnetBlock2D::load(&vb.pp("resnets").pp(i), if i == 0 { c_in } else { c_out }, c_out, spec)).collect()
}

/// Image -> latent distribution parameters.
#[derive(Module, Debug)]
pub struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<VaeBlock>,
    mid_block: VaeMidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    fn load(vb: &VarBuilder, cfg: &VaeConfig, spec: ResnetSpec) -> Result<Self> {
        let c = &cfg.block_out_channels;
        let last = c.len() - 1;
        let mut down_blocks = Vec::new();
        for i in 0..c.len() {
            let block = vb.pp("down_blocks").pp(i);
            let resnets = load_resnets(&block, cfg.layers_per_block, if i == 0 { c[0] } else { c[i - 1] }, c[i], spec)?;
            let down = if i < last { Some(Downsample2D::load(&block.pp("downsamplers.0"), c[i], 0)?) } else { None };
            down_blocks.push(VaeBlock { resnets, down, up: None });
        }
        Ok(Self {
            conv_in: Conv2d::load(&vb.pp("conv_in"), cfg.in_channels, c[0], 3, 1, 1)?,
            down_blocks,
            mid_block: VaeMidBlock::load(&vb.pp("mid_block"), c[last], spec, cfg.mid_block_add_attention)?,
            conv_norm_out: GroupNorm::load(&vb.pp("conv_norm_out"), cfg.norm_num_groups, c[last], 1e-6)?,
            conv_out: Conv2d::load(&vb.pp("conv_out"), c[last], 2 * cfg.latent_channels, 3, 1, 1)?,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.conv_in.forward(x);
        for block in &self.down_blocks {
            x = block.forward(x);
        }
        self.conv_out.forward(self.conv_norm_out.forward_silu(self.mid_block.forward(x)))
    }
}

/// Latents -> image.
#[derive(Module, Debug)]
pub struct Decoder {
    conv_in: Conv2d,
    mid_block: VaeMidBlock,
    up_blocks: Vec<VaeBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    fn load(vb: &VarBuilder, cfg: &VaeConfig, spec: ResnetSpec) -> Result<Self> {
        let c = &cfg.block_out_channels;
        let last = c.len() - 1;
        let mut up_blocks = Vec::new();
        for i in 0..c.len() {
            let block = vb.pp("up_blocks").pp(i);
            let (c_prev, c_out) = (c[last - i.saturating_sub(1)], c[last - i]);
            let resnets = load_resnets(&block, cfg.layers_per_block + 1, c_prev, c_out, spec)?;
            let up = if i < last { Some(Upsample2D::load(&block.pp("upsamplers.0"), c_out)?) } else { None };
            up_blocks.push(VaeBlock { resnets, down: None, up });
        }
        Ok(Self {
            conv_in: Conv2d::load(&vb.pp("conv_in"), cfg.latent_channels, c[last], 3, 1, 1)?,
            mid_block: VaeMidBlock::load(&vb.pp("mid_block"), c[last], spec, cfg.mid_block_add_attention)?,
            up_blocks,
            conv_norm_out: GroupNorm::load(&vb.pp("conv_norm_out"), cfg.norm_num_groups, c[0], 1e-6)?,
            conv_out: Conv2d::load(&vb.pp("conv_out"), c[0], cfg.out_channels, 3, 1, 1)?,
        })
    }

    fn forward(&self, z: Tensor<4>) -> Tensor<4> {
        let mut x = self.mid_block.forward(self.conv_in.forward(z));
        for block in &self.up_blocks {
            x = block.forward(x);
        }
        self.conv_out.forward(self.conv_norm_out.forward_silu(x))
    }
}

/// The mean and log-variance of the encoder's diagonal Gaussian.
#[derive(Debug, Clone)]
pub struct LatentDistribution {
    pub mean: Tensor<4>,
    pub logvar: Tensor<4>,
}

/// The variational autoencoder.
#[derive(Module, Debug)]
pub struct AutoencoderKL {
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
}

impl AutoencoderKL {
    pub fn load(vb: &VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        let spec = ResnetSpec { groups: cfg.norm_num_groups, eps: 1e-6, temb_channels: None };
        let l = cfg.latent_channels;
        let quant_conv = if cfg.use_quant_conv { Some(Conv2d::load(&vb.pp("quant_conv"), 2 * l, 2 * l, 1, 1, 0)?) } else { None };
        let post_quant_conv = if cfg.use_post_quant_conv { Some(Conv2d::load(&vb.pp("post_quant_conv"), l, l, 1, 1, 0)?) } else { None };
        Ok(Self {
            encoder: Encoder::load(&vb.pp("encoder"), cfg, spec)?,
            decoder: Decoder::load(&vb.pp("decoder"), cfg, spec)?,
            quant_conv,
            post_quant_conv,
        })
    }

    /// # Shapes
    /// image `[b, 3, H, W]` in [-1, 1] -> mean/logvar `[b, latent, H/f, W/f]` (unscaled latents)
    pub fn encode(&self, image: Tensor<4>) -> LatentDistribution {
        let mut moments = self.encoder.forward(image);
        if let Some(conv) = &self.quant_conv {
            moments = conv.forward(moments);
        }
        let mut halves = moments.chunk(2, 1);
        let logvar = halves.pop().expect("two halves").clamp(-30.0, 20.0);
        let mean = halves.pop().expect("two halves");
        LatentDistribution { mean, logvar }
    }

    /// # Shapes
    /// latents `[b, latent, h, w]` (unscaled) -> image `[b, 3, h*f, w*f]`, roughly in [-1, 1]
    pub fn decode(&self, latents: Tensor<4>) -> Tensor<4> {
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(latents),
            None => latents,
        };
        self.decoder.forward(z)
    }
}
