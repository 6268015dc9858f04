//! The lifelong state on top of a frozen base model: one shared low-rank adapter (LoRA on the
//! UNet's cross-attention projections by default, optionally self-attention and feed-forward;
//! PEFT names) and one token embedding per concept.
//!
//! Cross-attention keys and values are where text meets image, which is why Custom Diffusion
//! (Kumari et al. 2023, Sec. 3.1) and L2DM's lessons adapt `attn2.to_k`/`to_v` first.

use burn::module::Param;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::selfcheck::Signature;
use crate::error::{Error, Result};
use crate::loader::LoadedModel;
use crate::model::attention::{Attention, BasicTransformerBlock, Transformer2DModel};
use crate::model::clip::ClipTextModel;
use crate::model::gate::gate_channels;
use crate::model::nn::{Linear, Lora};
use crate::model::unet::UNet2DConditionModel;
use crate::rng::Rng;

/// A tensor as a trainable leaf on an autodiff device; unchanged elsewhere (generation only).
pub fn leaf(t: Tensor<2>) -> Tensor<2> {
    if t.is_autodiff() {
        t.require_grad()
    } else {
        t
    }
}

/// Which linear projections of each transformer block carry a LoRA: the cross-attention
/// (`attn2`, the default `to_k`/`to_v`), the self-attention (`attn1`) and the feed-forward (`ff`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    ToK,
    ToV,
    ToQ,
    ToOut,
    SelfQ,
    SelfK,
    SelfV,
    SelfOut,
    FfIn,
    FfOut,
}

impl Target {
    pub const ALL: [Target; 10] = [
        Target::ToK,
        Target::ToV,
        Target::ToQ,
        Target::ToOut,
        Target::SelfQ,
        Target::SelfK,
        Target::SelfV,
        Target::SelfOut,
        Target::FfIn,
        Target::FfOut,
    ];

    /// The projection's key under its transformer block (diffusers / PEFT naming).
    pub fn key(self) -> &'static str {
        match self {
            Target::ToK => "attn2.to_k",
            Target::ToV => "attn2.to_v",
            Target::ToQ => "attn2.to_q",
            Target::ToOut => "attn2.to_out.0",
            Target::SelfQ => "attn1.to_q",
            Target::SelfK => "attn1.to_k",
            Target::SelfV => "attn1.to_v",
            Target::SelfOut => "attn1.to_out.0",
            Target::FfIn => "ff.net.0.proj",
            Target::FfOut => "ff.net.2",
        }
    }

    fn linear(self, block: &mut BasicTransformerBlock) -> &mut Linear {
        match self {
            Target::ToK => &mut block.attn2.to_k,
            Target::ToV => &mut block.attn2.to_v,
            Target::ToQ => &mut block.attn2.to_q,
            Target::ToOut => &mut block.attn2.to_out,
            Target::SelfQ => &mut block.attn1.to_q,
            Target::SelfK => &mut block.attn1.to_k,
            Target::SelfV => &mut block.attn1.to_v,
            Target::SelfOut => &mut block.attn1.to_out,
            Target::FfIn => &mut block.ff.proj,
            Target::FfOut => &mut block.ff.out,
        }
    }
}

/// Shape of the adapter (stored with every version so a state reloads exactly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub rank: usize,
    pub alpha: f32,
    pub targets: Vec<Target>,
}

/// Rank 8 on every projection of every transformer block: on the built-in model, teaching the
/// crescent (150 steps, 16 probes) identified it in 31-44% of samples this way against 12-25%
/// with `attn2.to_k/to_v` alone, and 62-69% once the unconditional anchor held guidance's
/// baseline (README, "Lessons").
impl Default for AdapterConfig {
    fn default() -> Self {
        Self { rank: 8, alpha: 8.0, targets: Target::ALL.to_vec() }
    }
}

impl AdapterConfig {
    pub fn scale(&self) -> f64 {
        f64::from(self.alpha) / self.rank as f64
    }
}

/// A concept the adapter knows: the prompt token and the tokenizer id it was given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Concept {
    pub name: String,
    pub token: String,
    pub token_id: i64,
    /// What its lesson's pictures showed: each picture's subject as a coarse silhouette and a
    /// mean colour (src/lifelong/selfcheck.rs), not the picture. Composition draws each concept's
    /// region a few times and keeps the drawing closest to these ([`super::compose::Composer::tries`]);
    /// empty for concepts stored before they were kept.
    #[serde(skip)]
    pub looks: Vec<Signature>,
}

/// Every transformer block of the UNet with its PEFT module path, in checkpoint order.
pub fn transformer_blocks(unet: &mut UNet2DConditionModel) -> Vec<(String, &mut BasicTransformerBlock)> {
    let mut out = Vec::new();
    for (i, b) in unet.down_blocks.iter_mut().enumerate() {
        visit(format!("unet.down_blocks.{i}"), &mut b.attentions, &mut out);
    }
    visit("unet.mid_block".into(), &mut unet.mid_block.attentions, &mut out);
    for (i, b) in unet.up_blocks.iter_mut().enumerate() {
        visit(format!("unet.up_blocks.{i}"), &mut b.attentions, &mut out);
    }
    out
}

/// Every cross-attention of the UNet with its PEFT module path, in checkpoint order.
pub fn cross_attentions(unet: &mut UNet2DConditionModel) -> Vec<(String, &mut Attention)> {
    transformer_blocks(unet).into_iter().map(|(path, block)| (format!("{path}.attn2"), &mut block.attn2)).collect()
}

fn visit<'a>(prefix: String, transformers: &'a mut [Transformer2DModel], out: &mut Vec<(String, &'a mut BasicTransformerBlock)>) {
    for (j, t) in transformers.iter_mut().enumerate() {
        for (k, block) in t.transformer_blocks.iter_mut().enumerate() {
            out.push((format!("{prefix}.attentions.{j}.transformer_blocks.{k}"), block));
        }
    }
}

/// A fresh LoRA `A` (`[d_in, rank]`) as PEFT initialises it: `kaiming_uniform_(a=sqrt(5))` on
/// `[rank, in]`, which is U(-1/sqrt(in), 1/sqrt(in)).
pub(super) fn lora_down(d_in: usize, rank: usize, rng: &mut Rng, device: &Device) -> Tensor<2> {
    let bound = 1.0 / (d_in as f32).sqrt();
    let a: Vec<f32> = (0..d_in * rank).map(|_| (rng.uniform() as f32 * 2.0 - 1.0) * bound).collect();
    Tensor::from_data(TensorData::new(a, [d_in, rank]), device)
}

/// The trainable state. `down[i]`/`up[i]` belong to `sites[i]`; `embeddings[j]` (`[1, hidden]`)
/// to `concepts[j]`. On an autodiff device the tensors are leaves that require gradients.
#[derive(Debug, Clone)]
pub struct Adapter {
    pub config: AdapterConfig,
    pub sites: Vec<String>,
    pub down: Vec<Tensor<2>>,
    pub up: Vec<Tensor<2>>,
    pub concepts: Vec<Concept>,
    pub embeddings: Vec<Tensor<2>>,
    /// Diagonal Fisher information per tensor of [`Self::params`], summed over past lessons;
    /// only the EWC baseline keeps it.
    pub fisher: Option<Vec<Tensor<2>>>,
    /// Per concept (same order as `concepts`), the LoRA rank rows it owns, when each concept has
    /// its own LoRA block (the `routed` method); empty when every concept shares all of them.
    pub routes: Vec<std::ops::Range<usize>>,
    /// Whether each concept's block (its `routes` rows) is concept-gated (src/model/gate.rs):
    /// L2DM's shared adapter, every block in place for every prompt, each acting only where its
    /// concept's token reaches.
    pub gated: bool,
}

impl Adapter {
    /// A fresh adapter for `unet`: `A` Kaiming-uniform, `B` zero, as PEFT initialises LoRA
    /// (`reset_lora_parameters`), so the model starts exactly at the base.
    pub fn new(unet: &mut UNet2DConditionModel, config: AdapterConfig, seed: u64, device: &Device) -> Result<Self> {
        if config.rank == 0 || config.targets.is_empty() || !config.alpha.is_finite() {
            return Err(Error::InvalidInput("the adapter needs rank >= 1, a finite alpha and at least one target".into()));
        }
        let mut rng = Rng::new(seed);
        let (mut sites, mut down, mut up) = (Vec::new(), Vec::new(), Vec::new());
        for (path, block) in transformer_blocks(unet) {
            for &target in &config.targets {
                let [d_in, d_out] = target.linear(block).weight.dims();
                down.push(leaf(lora_down(d_in, config.rank, &mut rng, device)));
                up.push(leaf(Tensor::<2>::zeros([config.rank, d_out], device)));
                sites.push(format!("{path}.{}", target.key()));
            }
        }
        Ok(Self { config, sites, down, up, concepts: Vec::new(), embeddings: Vec::new(), fisher: None, routes: Vec::new(), gated: false })
    }

    /// Registers concept `name` (`token` in prompts, tokenizer id `token_id`), starting from `init`
    /// `[1, hidden]` (textual inversion starts from a related word's embedding).
    pub fn add_concept(&mut self, name: &str, token: &str, token_id: i64, init: Tensor<2>) -> Result<()> {
        if self.concepts.iter().any(|c| c.name == name || c.token_id == token_id) {
            return Err(Error::InvalidInput(format!("the concept `{name}` already exists; pick another name or remove it first")));
        }
        self.concepts.push(Concept { name: name.into(), token: token.into(), token_id, looks: Vec::new() });
        self.embeddings.push(leaf(init.detach()));
        Ok(())
    }

    /// The UNet with this adapter's LoRAs in place (the base is not changed; tensors are shared).
    pub fn apply_unet(&self, unet: &UNet2DConditionModel) -> Result<UNet2DConditionModel> {
        let mut out = unet.clone();
        let mut index = 0;
        for (path, block) in transformer_blocks(&mut out) {
            for &target in &self.config.targets {
                let site = format!("{path}.{}", target.key());
                if self.sites.get(index) != Some(&site) {
                    return Err(Error::InvalidInput(format!(
                        "the adapter does not fit this model (expected `{site}`, found {:?}); it was made for another base model",
                        self.sites.get(index)
                    )));
                }
                target.linear(block).lora = Some(Lora {
                    down: Param::from_tensor(self.down[index].clone()),
                    up: Param::from_tensor(self.up[index].clone()),
                    scale: self.config.scale(),
                    blocks: if self.gated { self.routes.len() } else { 0 },
                });
                index += 1;
            }
        }
        Ok(out)
    }

    /// Text encoder output for token ids (`ids[b]` of equal length), with every concept token's
    /// embedding taken from this adapter. Differentiable in the concept embeddings: the row is
    /// selected by a one-hot mask, `emb = base * (1 - m) + onehot @ E`.
    pub fn encode_ids(&self, text_encoder: &ClipTextModel, ids: &[Vec<i64>], device: &Device) -> Result<Tensor<3>> {
        let (b, n) = (ids.len(), ids.first().map_or(0, Vec::len));
        if b == 0 || ids.iter().any(|row| row.len() != n) {
            return Err(Error::InvalidInput("encode_ids needs at least one row and rows of equal length".into()));
        }
        let vocab = text_encoder.vocab_size() as i64;
        let k = self.concepts.len();
        let mut safe = Vec::with_capacity(b * n);
        let mut onehot = vec![0f32; b * n * k.max(1)];
        for (pos, &id) in ids.iter().flatten().enumerate() {
            match self.concepts.iter().position(|c| c.token_id == id) {
                Some(j) => {
                    onehot[pos * k + j] = 1.0;
                    safe.push(0); // any valid row: the mask replaces it
                }
                None if (0..vocab).contains(&id) => safe.push(id),
                None => return Err(Error::InvalidInput(format!("token id {id} is outside the text encoder's {vocab} rows and is no known concept"))),
            }
        }
        let ids_t = Tensor::<2, Int>::from_data(TensorData::new(safe, [b, n]), device);
        let base = text_encoder.embed(ids_t);
        if k == 0 {
            return Ok(text_encoder.forward_embeds(base));
        }
        let gates = self.gated.then(|| gate_channels(ids, &self.concepts.iter().map(|c| c.token_id).collect::<Vec<_>>(), device));
        let onehot = Tensor::<3>::from_data(TensorData::new(onehot, [b, n, k]), device);
        let keep = onehot.clone().sum_dim(2).neg().add_scalar(1.0);
        let table = Tensor::cat(self.embeddings.clone(), 0).unsqueeze::<3>().repeat_dim(0, b);
        let tokens = base * keep + onehot.matmul(table);
        let hidden = text_encoder.forward_embeds(tokens);
        Ok(match gates {
            Some(gates) => Tensor::cat(vec![hidden, gates], 2),
            None => hidden,
        })
    }

    /// Whether the LoRA tensors are leaves that require gradients (a student, not a teacher).
    pub fn is_trainable(&self) -> bool {
        self.down.first().is_some_and(|t| t.is_require_grad())
    }

    /// All trainable tensors, LoRA first then embeddings (the optimizer's order).
    pub fn params_mut(&mut self) -> Vec<&mut Tensor<2>> {
        self.down.iter_mut().chain(self.up.iter_mut()).chain(self.embeddings.iter_mut()).collect()
    }

    pub fn params(&self) -> Vec<Tensor<2>> {
        self.down.iter().chain(&self.up).chain(&self.embeddings).cloned().collect()
    }

    /// Replaces every trainable tensor (same order as [`Self::params`]).
    pub fn set_params(&mut self, params: Vec<Tensor<2>>) {
        let (l, e) = (self.down.len(), self.embeddings.len());
        let mut it = params.into_iter();
        self.down = it.by_ref().take(l).collect();
        self.up = it.by_ref().take(l).collect();
        self.embeddings = it.take(e).collect();
    }

    /// A copy without gradients (a frozen teacher), on `device`.
    pub fn frozen(&self, device: &Device) -> Self {
        let move_ = |t: &Tensor<2>| Tensor::from_data(t.to_data(), device);
        Self {
            down: self.down.iter().map(move_).collect(),
            up: self.up.iter().map(move_).collect(),
            embeddings: self.embeddings.iter().map(move_).collect(),
            fisher: self.fisher.as_ref().map(|f| f.iter().map(move_).collect()),
            ..self.clone()
        }
    }

    /// A trainable copy on `device` (leaves requiring gradients).
    pub fn trainable(&self, device: &Device) -> Self {
        let mut out = self.frozen(device);
        let params = out.params().into_iter().map(leaf).collect();
        out.set_params(params);
        out
    }

    /// The adapter a prompt naming the concepts `present` (indices into `concepts`) generates
    /// with: for a routed adapter, only those concepts' LoRA blocks (the rest zeroed, so a prompt
    /// without concepts gets the base model); a shared adapter as it is.
    pub fn routed(&self, present: &[usize]) -> Self {
        let Some(device) = self.down.first().map(Tensor::device) else { return self.clone() };
        if self.routes.is_empty() {
            return self.clone();
        }
        let rank = self.config.rank;
        let mut keep = vec![0.0f32; rank];
        for range in present.iter().filter_map(|&i| self.routes.get(i)) {
            keep[range.start.min(rank)..range.end.min(rank)].iter_mut().for_each(|k| *k = 1.0);
        }
        let mask = Tensor::<2>::from_data(TensorData::new(keep, [rank, 1]), &device);
        let up = self.up.iter().map(|u| u.clone().detach() * mask.clone()).collect();
        Self { up, ..self.frozen(&device) }
    }

    /// Whether the concepts are routed blocks, concept-gated blocks or one shared adapter.
    pub fn kind(&self) -> super::method::StateKind {
        use super::method::StateKind;
        match (self.routes.is_empty(), self.gated) {
            (_, true) => StateKind::Gated,
            (false, false) => StateKind::Routed,
            (true, false) => StateKind::Shared,
        }
    }

    /// Indices of the concepts whose token occurs in `prompt`.
    pub fn concepts_in(&self, prompt: &str) -> Vec<usize> {
        self.concepts.iter().enumerate().filter(|(_, c)| prompt.contains(&c.token)).map(|(i, _)| i).collect()
    }

    /// Puts the adapter into `model` for generation: each LoRA is merged into its weight
    /// (`W' = W + scale * B A`, no extra cost per step), each concept's row is written into the
    /// text encoder's table (grown when the base has no spare rows), each token added to the
    /// tokenizer at its recorded id.
    pub fn install(&self, model: &mut LoadedModel) -> Result<()> {
        let this = self.frozen(&model.text_encoder.token_embedding.val().device());
        let merged = this.apply_unet(&model.unet)?;
        if this.gated {
            // A gate depends on the prompt and the position, so gated blocks stay beside their
            // weights, and the text encoding appends the gates (src/model/gate.rs).
            model.unet = merged;
            model.gate_tokens = this.concepts.iter().map(|c| c.token_id).collect();
            return install_tokens(&this, model);
        }
        model.gate_tokens.clear();
        let mut unet = merged;
        for (_, block) in transformer_blocks(&mut unet) {
            for target in Target::ALL {
                let linear = target.linear(block);
                if let Some(lora) = linear.lora.take() {
                    let delta = lora.down.val().matmul(lora.up.val()).mul_scalar(lora.scale);
                    linear.weight = Param::from_tensor(linear.weight.val() + delta);
                }
            }
        }
        model.unet = unet;
        install_tokens(&this, model)
    }
}

fn install_tokens(adapter: &Adapter, model: &mut LoadedModel) -> Result<()> {
    let mut table = model.text_encoder.token_embedding.val();
    for (concept, row) in adapter.concepts.iter().zip(&adapter.embeddings) {
        let id = model.tokenizer.add_token(&concept.token)?;
        if id != concept.token_id {
            return Err(Error::InvalidInput(format!(
                "concept `{}` was taught as token id {} but this tokenizer gives {id}; the store belongs to a different model",
                concept.name, concept.token_id
            )));
        }
        let [rows, hidden] = table.dims();
        let id = id as usize;
        if id >= rows {
            let grow = Tensor::<2>::zeros([id + 1 - rows, hidden], &table.device());
            table = Tensor::cat(vec![table, grow], 0);
        }
        table = table.slice_assign([id..id + 1, 0..hidden], row.clone());
    }
    model.text_encoder.token_embedding = Param::from_tensor(table);
    Ok(())
}
