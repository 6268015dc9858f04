//! diffusers' `Attention`, `FeedForward(geglu)`, `BasicTransformerBlock` and `Transformer2DModel`
//! (models/attention_processor.py, models/attention.py, models/transformers/transformer_2d.py).

use burn::prelude::*;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::nn::{Conv2d, GroupNorm, LayerNorm, Linear};
use super::gate::gates;
use crate::error::Result;
use crate::kernels::attention::{self as fused, AttentionControl, AttentionOutput};
use crate::kernels::geglu::geglu;
use crate::weights::VarBuilder;

/// Scaled dot-product attention over heads: the fused WGSL kernel on burn-wgpu when not causal
/// (src/kernels/attention.rs), burn's `module::attention` otherwise.
///
/// # Shapes
/// q: `[b, heads, n, d]`, k/v: `[b, heads, m, d]` -> `[b, heads, n, d]`
pub fn sdpa(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, causal: bool) -> Tensor<4> {
    if !causal {
        return fused::attention(q, k, v, &AttentionControl::default()).out;
    }
    let options = AttentionModuleOptions { is_causal: causal, ..Default::default() };
    attention(q, k, v, None, None, options)
}

/// `[b, n, heads*d]` -> `[b, heads, n, d]`
pub fn split_heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [b, n, c] = x.dims();
    x.reshape([b, n, heads, c / heads]).swap_dims(1, 2)
}

/// `[b, heads, n, d]` -> `[b, n, heads*d]`
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, n, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, n, h * d])
}

/// Multi-head attention with `to_q`, `to_k`, `to_v` and `to_out.0`.
#[derive(Module, Debug)]
pub struct Attention {
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    pub to_out: Linear,
    pub heads: usize,
}

impl Attention {
    /// `context_dim` is the key/value input width (the text width for cross-attention).
    pub fn load(vb: &VarBuilder, query_dim: usize, context_dim: usize, heads: usize, head_dim: usize, qkv_bias: bool) -> Result<Self> {
        let inner = heads * head_dim;
        Ok(Self {
            to_q: Linear::load(&vb.pp("to_q"), query_dim, inner, qkv_bias)?,
            to_k: Linear::load(&vb.pp("to_k"), context_dim, inner, qkv_bias)?,
            to_v: Linear::load(&vb.pp("to_v"), context_dim, inner, qkv_bias)?,
            to_out: Linear::load(&vb.pp("to_out.0"), inner, query_dim, true)?,
            heads,
        })
    }

    /// # Shapes
    /// x: `[b, n, query_dim]`, context: `[b, m, context_dim]` (None: self-attention) -> `[b, n, query_dim]`
    pub fn forward(&self, x: Tensor<3>, context: Option<&Tensor<3>>) -> Tensor<3> {
        self.forward_controlled(x, context, &AttentionControl::default()).0
    }

    /// [`Attention::forward`] with steering (score bias map, per-key scale) and, when
    /// `control.export_probs`, the probabilities averaged over heads `[b, n, m]`.
    pub fn forward_controlled(&self, x: Tensor<3>, context: Option<&Tensor<3>>, control: &AttentionControl) -> (Tensor<3>, Option<Tensor<3>>) {
        self.forward_gated(x, context, None, control)
    }

    /// [`Attention::forward_controlled`] with concept-gated LoRAs: `gates` are the gates of the
    /// queries' positions and of the keys' (`[b, n, blocks]`, `[b, m, blocks]`); `None` leaves
    /// gated LoRAs out.
    pub fn forward_gated(
        &self,
        x: Tensor<3>,
        context: Option<&Tensor<3>>,
        gates: Option<(&Tensor<3>, &Tensor<3>)>,
        control: &AttentionControl,
    ) -> (Tensor<3>, Option<Tensor<3>>) {
        let context = context.cloned().unwrap_or_else(|| x.clone());
        let (query_gate, key_gate) = (gates.map(|g| g.0), gates.map(|g| g.1));
        let q = split_heads(self.to_q.forward_gated(x, query_gate), self.heads);
        let k = split_heads(self.to_k.forward_gated(context.clone(), key_gate), self.heads);
        let v = split_heads(self.to_v.forward_gated(context, key_gate), self.heads);
        let AttentionOutput { out, probs } = fused::attention(q, k, v, control);
        (self.to_out.forward_gated(merge_heads(out), query_gate), probs)
    }
}

/// `FeedForward(activation_fn="geglu")`: `net.0.proj` to twice the inner width, GEGLU, `net.2`.
#[derive(Module, Debug)]
pub struct FeedForward {
    pub proj: Linear,
    pub out: Linear,
}

impl FeedForward {
    pub fn load(vb: &VarBuilder, dim: usize) -> Result<Self> {
        let inner = dim * 4;
        Ok(Self {
            proj: Linear::load(&vb.pp("net.0.proj"), dim, inner * 2, true)?,
            out: Linear::load(&vb.pp("net.2"), inner, dim, true)?,
        })
    }

    /// GEGLU is one fused kernel on burn-wgpu (src/kernels/geglu.rs).
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.forward_gated(x, None)
    }

    /// [`Self::forward`] with concept-gated LoRAs (`gate` `[b, n, blocks]`).
    pub fn forward_gated(&self, x: Tensor<3>, gate: Option<&Tensor<3>>) -> Tensor<3> {
        self.out.forward_gated(geglu(self.proj.forward_gated(x, gate)), gate)
    }
}

/// Self-attention, cross-attention and feed-forward, each pre-normed with a residual.
#[derive(Module, Debug)]
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    pub attn1: Attention,
    norm2: LayerNorm,
    pub attn2: Attention,
    norm3: LayerNorm,
    pub ff: FeedForward,
}

impl BasicTransformerBlock {
    pub fn load(vb: &VarBuilder, dim: usize, heads: usize, head_dim: usize, context_dim: usize) -> Result<Self> {
        Ok(Self {
            norm1: LayerNorm::load(&vb.pp("norm1"), dim, 1e-5)?,
            attn1: Attention::load(&vb.pp("attn1"), dim, dim, heads, head_dim, false)?,
            norm2: LayerNorm::load(&vb.pp("norm2"), dim, 1e-5)?,
            attn2: Attention::load(&vb.pp("attn2"), dim, context_dim, heads, head_dim, false)?,
            norm3: LayerNorm::load(&vb.pp("norm3"), dim, 1e-5)?,
            ff: FeedForward::load(&vb.pp("ff"), dim)?,
        })
    }

    pub fn forward(&self, x: Tensor<3>, context: &Tensor<3>) -> Tensor<3> {
        self.forward_controlled(x, context, &AttentionControl::default()).0
    }

    /// [`Self::forward`] with attn2 under `control` (score bias, exported maps); returns attn2's
    /// head-averaged probabilities `[b, n, m]` when `control.export_probs`. A context wider than
    /// attn2's keys carries concept gates ([`gates`]); without them every op is the plain one.
    pub fn forward_controlled(&self, x: Tensor<3>, context: &Tensor<3>, control: &AttentionControl) -> (Tensor<3>, Option<Tensor<3>>) {
        let (text, gates) = gates(&self.attn2, context);
        let image = gates.as_ref().map(|g| (&g.image, &g.image));
        let x = self.attn1.forward_gated(self.norm1.forward(x.clone()), None, image, &AttentionControl::default()).0 + x;
        let cross = gates.as_ref().map(|g| (&g.image, &g.text));
        let (attn, probs) = self.attn2.forward_gated(self.norm2.forward(x.clone()), Some(&text), cross, control);
        let x = attn + x;
        let ff = self.ff.forward_gated(self.norm3.forward(x.clone()), gates.as_ref().map(|g| &g.image));
        (ff + x, probs)
    }
}

/// Which cross-attention (attn2) maps a UNet forward collects: those whose query grid is one of
/// `grids`. The default collects nothing, and the forward runs exactly the plain ops.
#[derive(Debug, Clone, Default)]
pub struct AttnHook {
    pub grids: Vec<[usize; 2]>,
    /// A score bias `[b, m, bias_h, bias_w]` every attn2 adds (upsampled to its query grid):
    /// orthogonal attention's edit, src/lifelong/orthogonal.rs.
    pub bias: Option<Tensor<4>>,
}

impl AttnHook {
    /// Collect the maps of every attn2 whose query grid is in `grids`.
    pub fn at(grids: &[[usize; 2]]) -> Self {
        Self { grids: grids.to_vec(), bias: None }
    }

    /// Collect nothing; bias every attn2's scores by `bias`.
    pub fn biased(bias: Tensor<4>) -> Self {
        Self { grids: Vec::new(), bias: Some(bias) }
    }

    pub fn wants(&self, grid: [usize; 2]) -> bool {
        self.grids.contains(&grid)
    }
}

/// One attn2's head-averaged cross-attention probabilities.
#[derive(Debug, Clone)]
pub struct CrossMap {
    /// `[b, h*w, m]`: query cell (row-major over `grid`) x text token; rows sum to 1.
    pub probs: Tensor<3>,
    /// The query grid `[h, w]`.
    pub grid: [usize; 2],
}

/// `proj_in`/`proj_out`: 1x1 convolutions (SD-1) or linear layers (SD-2, `use_linear_projection`).
#[derive(Module, Debug)]
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

impl Projection {
    fn load(vb: &VarBuilder, c_in: usize, c_out: usize, linear: bool) -> Result<Self> {
        Ok(if linear { Self::Linear(Linear::load(vb, c_in, c_out, true)?) } else { Self::Conv(Conv2d::load(vb, c_in, c_out, 1, 1, 0)?) })
    }
}

/// Settings of one `Transformer2DModel`.
#[derive(Debug, Clone, Copy)]
pub struct TransformerSpec {
    pub heads: usize,
    pub layers: usize,
    pub context_dim: usize,
    pub groups: usize,
    pub linear_projection: bool,
}

/// `Transformer2DModel` for continuous (latent) input.
#[derive(Module, Debug)]
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Projection,
    pub transformer_blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

impl Transformer2DModel {
    pub fn load(vb: &VarBuilder, channels: usize, spec: TransformerSpec) -> Result<Self> {
        let head_dim = channels / spec.heads;
        let blocks = (0..spec.layers)
            .map(|i| BasicTransformerBlock::load(&vb.pp("transformer_blocks").pp(i), channels, spec.heads, head_dim, spec.context_dim))
            .collect::<Result<_>>()?;
        Ok(Self {
            norm: GroupNorm::load(&vb.pp("norm"), spec.groups, channels, 1e-6)?,
            proj_in: Projection::load(&vb.pp("proj_in"), channels, channels, spec.linear_projection)?,
            transformer_blocks: blocks,
            proj_out: Projection::load(&vb.pp("proj_out"), channels, channels, spec.linear_projection)?,
        })
    }

    /// # Shapes
    /// x: `[b, c, h, w]`, context: `[b, m, context_dim]` -> `[b, c, h, w]`
    pub fn forward(&self, x: Tensor<4>, context: &Tensor<3>) -> Tensor<4> {
        self.forward_with_maps(x, context, &AttnHook::default(), &mut Vec::new())
    }

    /// [`Self::forward`] that appends each block's attn2 map to `maps` when `hook` wants this
    /// grid; with nothing wanted it runs exactly the ops of the plain forward.
    pub fn forward_with_maps(&self, x: Tensor<4>, context: &Tensor<3>, hook: &AttnHook, maps: &mut Vec<CrossMap>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let export = hook.wants([h, w]);
        let normed = self.norm.forward(x.clone());
        let to_seq = |t: Tensor<4>| t.reshape([b, c, h * w]).swap_dims(1, 2);
        let mut seq = match &self.proj_in {
            Projection::Conv(conv) => to_seq(conv.forward(normed)),
            Projection::Linear(lin) => lin.forward(to_seq(normed)),
        };
        let control = AttentionControl { export_probs: export, bias: hook.bias.clone(), grid: hook.bias.as_ref().map(|_| [h, w]), ..Default::default() };
        for block in &self.transformer_blocks {
            seq = if export || control.bias.is_some() {
                let (out, probs) = block.forward_controlled(seq, context, &control);
                maps.extend(probs.map(|probs| CrossMap { probs, grid: [h, w] }));
                out
            } else {
                block.forward(seq, context)
            };
        }
        let to_map = |t: Tensor<3>| t.swap_dims(1, 2).reshape([b, c, h, w]);
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(to_map(seq)),
            Projection::Linear(lin) => to_map(lin.forward(seq)),
        };
        out + x
    }
}
