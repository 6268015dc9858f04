//! `UNet2DConditionModel` for the SD-1.x / SD-2.x family (diffusers
//! models/unets/unet_2d_condition.py), with the checkpoint's key layout.

use burn::prelude::*;

use super::attention::{AttnHook, CrossMap, TransformerSpec};
use super::embeddings::{timestep_embedding, TimestepEmbedding};
use super::nn::{Conv2d, GroupNorm};
use super::resnet::ResnetSpec;
use super::unet_blocks::{BlockSpec, DownBlock, MidBlock, UpBlock};
use crate::config::UNetConfig;
use crate::error::Result;
use crate::weights::VarBuilder;

/// The denoiser.
#[derive(Module, Debug)]
pub struct UNet2DConditionModel {
    time_embedding: TimestepEmbedding,
    conv_in: Conv2d,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: MidBlock,
    pub up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    /// Timestep embedding settings, from the config.
    time_dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
}

impl UNet2DConditionModel {
    /// Builds the model from `vb`, checking every tensor against `config` (validated first).
    pub fn load(vb: &VarBuilder, config: &UNetConfig) -> Result<Self> {
        let c = &config.block_out_channels;
        let levels = config.levels();
        let resnet = ResnetSpec { groups: config.norm_num_groups, eps: config.norm_eps, temb_channels: Some(config.time_embed_dim()) };
        let transformer = |level: usize, cross: bool| {
            cross.then(|| TransformerSpec {
                heads: config.heads(level),
                layers: config.transformer_layers(level),
                context_dim: config.cross_dim(level),
                groups: config.norm_num_groups,
                linear_projection: config.use_linear_projection,
            })
        };
        let mut down_blocks = Vec::with_capacity(levels);
        for (i, kind) in config.down_block_types.iter().enumerate() {
            let spec = BlockSpec {
                c_in: if i == 0 { c[0] } else { c[i - 1] },
                c_out: c[i],
                c_prev: 0,
                layers: config.layers(i),
                resnet,
                transformer: transformer(i, kind == "CrossAttnDownBlock2D"),
                resample: i + 1 < levels,
                downsample_padding: config.downsample_padding,
            };
            down_blocks.push(DownBlock::load(&vb.pp("down_blocks").pp(i), spec)?);
        }
        let last = levels - 1;
        let mid_spec = transformer(last, true).expect("cross=true always gives a spec");
        let mid_block = MidBlock::load(&vb.pp("mid_block"), c[last], resnet, mid_spec)?;
        let mut up_blocks = Vec::with_capacity(levels);
        for (i, kind) in config.up_block_types.iter().enumerate() {
            // Up block i mirrors level `rev = levels-1-i` (diffusers reverses every per-level list).
            let rev = last - i;
            let spec = BlockSpec {
                c_in: c[rev.saturating_sub(1)],
                c_out: c[rev],
                c_prev: if i == 0 { c[last] } else { c[rev + 1] },
                layers: config.layers(rev) + 1,
                resnet,
                transformer: transformer(rev, kind == "CrossAttnUpBlock2D"),
                resample: i < last,
                downsample_padding: 0,
            };
            up_blocks.push(UpBlock::load(&vb.pp("up_blocks").pp(i), spec)?);
        }
        Ok(Self {
            time_embedding: TimestepEmbedding::load(&vb.pp("time_embedding"), c[0], config.time_embed_dim())?,
            conv_in: Conv2d::load(&vb.pp("conv_in"), config.in_channels, c[0], 3, 1, 1)?,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::load(&vb.pp("conv_norm_out"), config.norm_num_groups, c[0], config.norm_eps)?,
            conv_out: Conv2d::load(&vb.pp("conv_out"), c[0], config.out_channels, 3, 1, 1)?,
            time_dim: c[0],
            flip_sin_to_cos: config.flip_sin_to_cos,
            freq_shift: config.freq_shift,
        })
    }

    /// Predicts noise (or v) for `sample` at `timestep` given the text `context`.
    ///
    /// # Shapes
    /// - sample: `[b, in_channels, h, w]`, context: `[b, 77, cross_attention_dim]`
    /// - returns `[b, out_channels, h, w]`
    pub fn forward(&self, sample: Tensor<4>, timestep: f32, context: &Tensor<3>) -> Tensor<4> {
        let [b, _, _, _] = sample.dims();
        self.forward_timesteps(sample, &vec![timestep; b], context)
    }

    /// [`Self::forward`] with one timestep per sample (training draws them independently).
    pub fn forward_timesteps(&self, sample: Tensor<4>, timesteps: &[f32], context: &Tensor<3>) -> Tensor<4> {
        let t = timestep_embedding(timesteps, self.time_dim, self.flip_sin_to_cos, self.freq_shift as f32, &sample.device());
        let temb = self.time_embedding.forward(t);
        let mut x = self.conv_in.forward(sample);
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            x = block.forward(x, &temb, context, &mut skips);
        }
        x = self.mid_block.forward(x, &temb, context);
        for block in &self.up_blocks {
            x = block.forward(x, &temb, context, &mut skips);
        }
        self.conv_out.forward(self.conv_norm_out.forward_silu(x))
    }

    /// [`Self::forward`] that also returns the cross-attention (attn2) maps of every transformer
    /// block whose query grid `hook` wants, in UNet order (down, mid, up). Under autodiff the
    /// attention's tensor-op twin runs, so the maps are differentiable w.r.t. `sample` (the
    /// concept attention artist, src/lifelong/artist.rs, steers the latents with them).
    ///
    /// # Shapes
    /// as [`Self::forward`]; each map's probs are `[b, h*w, 77]` for its grid `[h, w]`
    pub fn forward_with_maps(&self, sample: Tensor<4>, timestep: f32, context: &Tensor<3>, hook: &AttnHook) -> (Tensor<4>, Vec<CrossMap>) {
        let [b, _, _, _] = sample.dims();
        let t = timestep_embedding(&vec![timestep; b], self.time_dim, self.flip_sin_to_cos, self.freq_shift as f32, &sample.device());
        let temb = self.time_embedding.forward(t);
        let mut maps = Vec::new();
        let mut x = self.conv_in.forward(sample);
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            x = block.forward_with_maps(x, &temb, context, &mut skips, hook, &mut maps);
        }
        x = self.mid_block.forward_with_maps(x, &temb, context, hook, &mut maps);
        for block in &self.up_blocks {
            x = block.forward_with_maps(x, &temb, context, &mut skips, hook, &mut maps);
        }
        (self.conv_out.forward(self.conv_norm_out.forward_silu(x)), maps)
    }

    /// The query grids `[h, w]` of the cross-attention layers for a latent of `[h, w]`, finest
    /// first, each once (diffusers' Downsample2D: stride 2, padding 1, so `ceil(h / 2)` per
    /// level; the mid block sits at the coarsest level).
    pub fn attention_grids(&self, latent: [usize; 2]) -> Vec<[usize; 2]> {
        let levels = self.down_blocks.len();
        let grid = |level: usize| (0..level).fold(latent, |g, _| [g[0].div_ceil(2), g[1].div_ceil(2)]);
        let mut out = Vec::new();
        for (level, block) in self.down_blocks.iter().enumerate() {
            let up = self.up_blocks.get(levels - 1 - level).is_some_and(|u| !u.attentions.is_empty());
            if !block.attentions.is_empty() || up {
                out.push(grid(level));
            }
        }
        let mid = grid(levels.saturating_sub(1));
        if !self.mid_block.attentions.is_empty() && !out.contains(&mid) {
            out.push(mid);
        }
        out
    }
}
