//! transformers' `CLIPTextModel` (models/clip/modeling_clip.py): token + position embeddings,
//! pre-norm causal transformer layers, final layer norm. Its `last_hidden_state` is SD's context.

use burn::prelude::*;
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::module::embedding;
use burn::module::Param;

use super::attention::{merge_heads, sdpa, split_heads};
use super::nn::{LayerNorm, Linear};
use crate::config::ClipConfig;
use crate::error::Result;
use crate::weights::VarBuilder;

#[derive(Module, Debug)]
struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
}

impl ClipAttention {
    fn load(vb: &VarBuilder, dim: usize, heads: usize) -> Result<Self> {
        let lin = |name: &str| Linear::load(&vb.pp(name), dim, dim, true);
        Ok(Self { q_proj: lin("q_proj")?, k_proj: lin("k_proj")?, v_proj: lin("v_proj")?, out_proj: lin("out_proj")?, heads })
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let q = split_heads(self.q_proj.forward(x.clone()), self.heads);
        let k = split_heads(self.k_proj.forward(x.clone()), self.heads);
        let v = split_heads(self.v_proj.forward(x), self.heads);
        self.out_proj.forward(merge_heads(sdpa(q, k, v, true)))
    }
}

#[derive(Module, Debug)]
struct ClipLayer {
    layer_norm1: LayerNorm,
    self_attn: ClipAttention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    quick_gelu: bool,
}

impl ClipLayer {
    fn load(vb: &VarBuilder, cfg: &ClipConfig) -> Result<Self> {
        let (d, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        Ok(Self {
            layer_norm1: LayerNorm::load(&vb.pp("layer_norm1"), d, eps)?,
            self_attn: ClipAttention::load(&vb.pp("self_attn"), d, cfg.num_attention_heads)?,
            layer_norm2: LayerNorm::load(&vb.pp("layer_norm2"), d, eps)?,
            fc1: Linear::load(&vb.pp("mlp.fc1"), d, cfg.intermediate_size, true)?,
            fc2: Linear::load(&vb.pp("mlp.fc2"), cfg.intermediate_size, d, true)?,
            quick_gelu: cfg.hidden_act == "quick_gelu",
        })
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = self.self_attn.forward(self.layer_norm1.forward(x.clone())) + x;
        let h = self.fc1.forward(self.layer_norm2.forward(x.clone()));
        // quick_gelu(x) = x * sigmoid(1.702 x) (activations.py QuickGELUActivation).
        let h = if self.quick_gelu { h.clone() * sigmoid(h.mul_scalar(1.702)) } else { gelu(h) };
        self.fc2.forward(h) + x
    }
}

/// The text encoder.
#[derive(Module, Debug)]
pub struct ClipTextModel {
    pub token_embedding: Param<Tensor<2>>,
    position_embedding: Param<Tensor<2>>,
    layers: Vec<ClipLayer>,
    final_layer_norm: LayerNorm,
}

impl ClipTextModel {
    /// Accepts keys with or without the `text_model.` prefix (the Hub's SD-1.5 has it;
    /// transformers 5 saves without it).
    pub fn load(vb: &VarBuilder, cfg: &ClipConfig) -> Result<Self> {
        let vb = if vb.contains_prefix("text_model") { vb.pp("text_model") } else { vb.clone() };
        let emb = vb.pp("embeddings");
        // Older exports carry the `position_ids` buffer; it is arange(77) and not a weight.
        emb.skip("position_ids");
        let layers = (0..cfg.num_hidden_layers).map(|i| ClipLayer::load(&vb.pp("encoder.layers").pp(i), cfg)).collect::<Result<_>>()?;
        Ok(Self {
            token_embedding: emb.param("token_embedding.weight", [cfg.vocab_size, cfg.hidden_size])?,
            position_embedding: emb.param("position_embedding.weight", [cfg.max_position_embeddings, cfg.hidden_size])?,
            layers,
            final_layer_norm: LayerNorm::load(&vb.pp("final_layer_norm"), cfg.hidden_size, cfg.layer_norm_eps)?,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.token_embedding.dims()[0]
    }

    /// `last_hidden_state` for token ids (every id must be < `vocab_size`; the tokenizer guarantees it).
    ///
    /// # Shapes
    /// ids `[b, n]` (n <= max_position_embeddings) -> `[b, n, hidden]`
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.forward_embeds(self.embed(ids))
    }

    /// The token embeddings of `ids` (`[b, n]` -> `[b, n, hidden]`), so that a caller can replace
    /// some of them (learned concept tokens) before [`Self::forward_embeds`].
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        embedding(self.token_embedding.val(), ids)
    }

    /// `last_hidden_state` from token embeddings `[b, n, hidden]` (positions are added here).
    pub fn forward_embeds(&self, tokens: Tensor<3>) -> Tensor<3> {
        let [_, n, _] = tokens.dims();
        let positions = self.position_embedding.val().narrow(0, 0, n).unsqueeze::<3>();
        let mut x = tokens + positions;
        for layer in &self.layers {
            x = layer.forward(x);
        }
        self.final_layer_norm.forward(x)
    }
}
