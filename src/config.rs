//! diffusers / transformers `config.json` files as data, with presets.
//!
//! Field names are the JSON keys. Missing keys take diffusers' defaults (from the constructors of
//! `UNet2DConditionModel`, `AutoencoderKL` and transformers' `CLIPTextConfig`); unknown keys are
//! ignored; values we do not implement are rejected by `validate` with the key named.

use serde::Deserialize;

use crate::error::{Error, Result};

/// A JSON value that diffusers allows as either one value or one per level.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerLevel<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Copy> PerLevel<T> {
    /// The value for `level`, or `None` when a list is too short.
    pub fn get(&self, level: usize) -> Option<T> {
        match self {
            PerLevel::One(v) => Some(*v),
            PerLevel::Many(v) => v.get(level).copied(),
        }
    }

    fn check_len(&self, key: &str, levels: usize, file: &str) -> Result<()> {
        match self {
            PerLevel::Many(v) if v.len() != levels => {
                Err(Error::config(file, format!("`{key}` has {} entries but the model has {levels} levels", v.len())))
            }
            _ => Ok(()),
        }
    }
}

fn d_true() -> bool { true }
fn d_groups() -> usize { 32 }
fn d_eps() -> f64 { 1e-5 }
fn d_one() -> usize { 1 }
fn d_silu() -> String { "silu".into() }
fn d_heads() -> PerLevel<usize> { PerLevel::One(8) }
fn d_layers2() -> PerLevel<usize> { PerLevel::One(2) }
fn d_layers1() -> PerLevel<usize> { PerLevel::One(1) }
fn d_cross() -> PerLevel<usize> { PerLevel::One(1280) }
fn d_scale() -> f64 { 0.18215 }
fn d_default() -> String { "default".into() }
fn d_positional() -> String { "positional".into() }
fn d_mid() -> Option<String> { Some("UNetMidBlock2DCrossAttn".into()) }

/// `unet/config.json` for `UNet2DConditionModel` (SD-1.x / SD-2.x family).
#[derive(Debug, Clone, Deserialize)]
pub struct UNetConfig {
    #[serde(default)]
    pub sample_size: Option<usize>,
    pub in_channels: usize,
    pub out_channels: usize,
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    pub down_block_types: Vec<String>,
    #[serde(default = "d_mid")]
    pub mid_block_type: Option<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_layers2")]
    pub layers_per_block: PerLevel<usize>,
    #[serde(default = "d_one")]
    pub downsample_padding: usize,
    #[serde(default = "d_silu")]
    pub act_fn: String,
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    #[serde(default = "d_cross")]
    pub cross_attention_dim: PerLevel<usize>,
    #[serde(default = "d_layers1")]
    pub transformer_layers_per_block: PerLevel<usize>,
    /// Legacy meaning in diffusers: when `num_attention_heads` is absent this is the *head count*
    /// (unet_2d_condition.py: `num_attention_heads = num_attention_heads or attention_head_dim`).
    #[serde(default = "d_heads")]
    pub attention_head_dim: PerLevel<usize>,
    #[serde(default)]
    pub num_attention_heads: Option<PerLevel<usize>>,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub only_cross_attention: serde_json::Value,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default)]
    pub upcast_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default = "d_default")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "d_positional")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
}

impl UNetConfig {
    pub fn levels(&self) -> usize {
        self.block_out_channels.len()
    }

    /// Heads at `level`, following diffusers' legacy rule (see `attention_head_dim`).
    pub fn heads(&self, level: usize) -> usize {
        let heads = self.num_attention_heads.as_ref().unwrap_or(&self.attention_head_dim);
        heads.get(level).unwrap_or(1)
    }

    pub fn layers(&self, level: usize) -> usize {
        self.layers_per_block.get(level).unwrap_or(1)
    }

    pub fn transformer_layers(&self, level: usize) -> usize {
        self.transformer_layers_per_block.get(level).unwrap_or(1)
    }

    pub fn cross_dim(&self, level: usize) -> usize {
        self.cross_attention_dim.get(level).unwrap_or(768)
    }

    pub fn time_embed_dim(&self) -> usize {
        self.block_out_channels[0] * 4
    }

    /// Rejects configurations this runtime does not implement, naming the key.
    pub fn validate(&self, file: &str) -> Result<()> {
        let levels = self.levels();
        let bad = |reason: String| Err(Error::config(file, reason));
        if levels == 0 || self.down_block_types.len() != levels || self.up_block_types.len() != levels {
            return bad(format!(
                "down_block_types ({}), up_block_types ({}) and block_out_channels ({levels}) must have the same non-zero length",
                self.down_block_types.len(), self.up_block_types.len()
            ));
        }
        for (key, list) in [("down_block_types", &self.down_block_types), ("up_block_types", &self.up_block_types)] {
            let known = ["CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"];
            if let Some(t) = list.iter().find(|t| !known.contains(&t.as_str())) {
                return bad(format!("`{key}` contains unsupported block type `{t}` (supported: {known:?})"));
            }
        }
        match self.mid_block_type.as_deref() {
            None | Some("UNetMidBlock2DCrossAttn") => {}
            Some(other) => return bad(format!("mid_block_type `{other}` is not supported (UNetMidBlock2DCrossAttn only)")),
        }
        self.layers_per_block.check_len("layers_per_block", levels, file)?;
        self.transformer_layers_per_block.check_len("transformer_layers_per_block", levels, file)?;
        self.cross_attention_dim.check_len("cross_attention_dim", levels, file)?;
        self.attention_head_dim.check_len("attention_head_dim", levels, file)?;
        if let Some(h) = &self.num_attention_heads {
            h.check_len("num_attention_heads", levels, file)?;
        }
        for (key, value) in [
            ("class_embed_type", &self.class_embed_type),
            ("addition_embed_type", &self.addition_embed_type),
        ] {
            if let Some(v) = value {
                return bad(format!("`{key}` = `{v}` is not supported (SD-1.x/2.x models have none)"));
            }
        }
        if self.time_cond_proj_dim.is_some() || self.dual_cross_attention {
            return bad("time_cond_proj_dim / dual_cross_attention are not supported".into());
        }
        if self.act_fn != "silu" || self.resnet_time_scale_shift != "default" || self.time_embedding_type != "positional" {
            return bad("only act_fn=silu, resnet_time_scale_shift=default, time_embedding_type=positional are supported".into());
        }
        if !matches!(self.only_cross_attention, serde_json::Value::Null | serde_json::Value::Bool(false)) {
            return bad("only_cross_attention is not supported".into());
        }
        for (level, &c) in self.block_out_channels.iter().enumerate() {
            let heads = self.heads(level);
            if heads == 0 || c % heads != 0 || c % self.norm_num_groups != 0 {
                return bad(format!("level {level}: {c} channels must divide by {heads} heads and norm_num_groups {}", self.norm_num_groups));
            }
        }
        Ok(())
    }

    /// Stable Diffusion 1.5 (runwayml/stable-diffusion-v1-5, unet/config.json).
    pub fn sd15() -> Self {
        let mut c = Self::tiny();
        c.sample_size = Some(64);
        c.block_out_channels = vec![320, 640, 1280, 1280];
        c.down_block_types = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"].map(String::from).to_vec();
        c.up_block_types = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"].map(String::from).to_vec();
        c.layers_per_block = PerLevel::One(2);
        c.cross_attention_dim = PerLevel::One(768);
        c.attention_head_dim = PerLevel::One(8);
        c.norm_num_groups = 32;
        c
    }

    /// A two-level toy configuration for unit tests.
    pub fn tiny() -> Self {
        serde_json::from_value(serde_json::json!({
            "sample_size": 8, "in_channels": 4, "out_channels": 4,
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
            "block_out_channels": [32, 64], "layers_per_block": 1, "cross_attention_dim": 32,
            "attention_head_dim": 4, "norm_num_groups": 8
        }))
        .expect("static tiny UNet config is valid")
    }
}

/// `vae/config.json` for `AutoencoderKL`.
#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "d_three")]
    pub in_channels: usize,
    #[serde(default = "d_three")]
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_one")]
    pub layers_per_block: usize,
    #[serde(default = "d_four")]
    pub latent_channels: usize,
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    #[serde(default)]
    pub sample_size: Option<usize>,
    #[serde(default = "d_scale")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "d_true")]
    pub use_quant_conv: bool,
    #[serde(default = "d_true")]
    pub use_post_quant_conv: bool,
    #[serde(default = "d_true")]
    pub mid_block_add_attention: bool,
    #[serde(default = "d_silu")]
    pub act_fn: String,
    #[serde(default)]
    pub down_block_types: Vec<String>,
    #[serde(default)]
    pub up_block_types: Vec<String>,
}

fn d_three() -> usize { 3 }
fn d_four() -> usize { 4 }

impl VaeConfig {
    /// Spatial factor between image and latents: 2^(levels-1).
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len().saturating_sub(1))
    }

    pub fn validate(&self, file: &str) -> Result<()> {
        if self.block_out_channels.is_empty() {
            return Err(Error::config(file, "block_out_channels is empty"));
        }
        if self.act_fn != "silu" {
            return Err(Error::config(file, format!("act_fn `{}` is not supported (silu only)", self.act_fn)));
        }
        if let Some(c) = self.block_out_channels.iter().find(|&&c| c % self.norm_num_groups != 0) {
            return Err(Error::config(file, format!("{c} channels do not divide into norm_num_groups {}", self.norm_num_groups)));
        }
        let known = ["DownEncoderBlock2D", "UpDecoderBlock2D"];
        if let Some(t) = self.down_block_types.iter().chain(&self.up_block_types).find(|t| !known.contains(&t.as_str())) {
            return Err(Error::config(file, format!("VAE block type `{t}` is not supported ({known:?})")));
        }
        Ok(())
    }

    /// SD-1.5's VAE (vae/config.json).
    pub fn sd15() -> Self {
        serde_json::from_value(serde_json::json!({
            "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "sample_size": 512,
            "latent_channels": 4, "norm_num_groups": 32, "scaling_factor": 0.18215
        }))
        .expect("static VAE config is valid")
    }
}

fn d_act() -> String { "quick_gelu".into() }
fn d_ln_eps() -> f64 { 1e-5 }
fn d_ctx() -> usize { 77 }

/// `text_encoder/config.json` for transformers' `CLIPTextModel`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "d_ctx")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default = "d_ln_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub eos_token_id: Option<i64>,
}

impl ClipConfig {
    pub fn validate(&self, file: &str) -> Result<()> {
        if !["quick_gelu", "gelu"].contains(&self.hidden_act.as_str()) {
            return Err(Error::config(file, format!("hidden_act `{}` is not supported (quick_gelu or gelu)", self.hidden_act)));
        }
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::config(file, "hidden_size must divide by num_attention_heads"));
        }
        Ok(())
    }

    /// openai/clip-vit-large-patch14's text tower, SD-1.5's text encoder.
    pub fn sd15() -> Self {
        Self {
            vocab_size: 49408, hidden_size: 768, intermediate_size: 3072, num_hidden_layers: 12,
            num_attention_heads: 12, max_position_embeddings: 77, hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5, eos_token_id: Some(2),
        }
    }
}

/// Parses `text` as a config of type `T`, naming `file` on failure.
pub fn parse<T: serde::de::DeserializeOwned>(text: &str, file: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::config(file, format!("invalid config: {e}")))
}
