//! A diffusers pipeline folder (`model_index.json` + one folder per component) -> models.
//!
//! I/O-free: files come through [`ModelFiles`], which the CLI implements over a directory
//! ([`crate::native::Folder`]) and the browser over fetched or picked bytes.

use burn::prelude::*;

use crate::config::{self, ClipConfig, UNetConfig, VaeConfig};
use crate::error::{Error, Result};
use crate::model::{AutoencoderKL, ClipTextModel, UNet2DConditionModel};
use crate::scheduler::SchedulerConfig;
use crate::tokenizer::{ClipTokenizer, TokenizerFiles};
use crate::weights::VarBuilder;

/// Read access to the files of one pipeline, by path relative to its root (`unet/config.json`).
pub trait ModelFiles {
    /// The file's bytes, or `Ok(None)` when it does not exist.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>>;
    /// A name for the whole model in messages (its folder or URL).
    fn name(&self) -> String;
}

/// A pipeline held in memory, path -> bytes (what the browser hands over after fetching or
/// picking a folder).
#[derive(Debug, Default, Clone)]
pub struct MemoryFiles {
    pub name: String,
    pub files: std::collections::HashMap<String, Vec<u8>>,
}

impl ModelFiles for MemoryFiles {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.files.get(path).cloned())
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

fn read_text(files: &dyn ModelFiles, path: &str) -> Result<Option<String>> {
    files.read(path)?.map(|bytes| {
        String::from_utf8(bytes).map_err(|_| Error::config(format!("{}/{path}", files.name()), "not UTF-8 text"))
    }).transpose()
}

fn read_config<T: serde::de::DeserializeOwned>(files: &dyn ModelFiles, path: &str) -> Result<T> {
    let text = read_text(files, path)?.ok_or_else(|| {
        Error::config(format!("{}/{path}", files.name()), "file is missing; is this a complete diffusers pipeline folder?")
    })?;
    config::parse(&text, &format!("{}/{path}", files.name()))
}

/// Loads the weights of `component`, preferring full precision, then the `fp16` variant.
fn weights(files: &dyn ModelFiles, component: &str, stem: &str, device: &Device) -> Result<VarBuilder> {
    for name in [format!("{stem}.safetensors"), format!("{stem}.fp16.safetensors")] {
        let path = format!("{component}/{name}");
        if let Some(bytes) = files.read(&path)? {
            return VarBuilder::from_bytes(bytes, format!("{}/{path}", files.name()), device);
        }
    }
    Err(Error::config(
        format!("{}/{component}", files.name()),
        format!("no {stem}.safetensors (or .fp16.safetensors) found; only safetensors weights are supported, convert .bin files first"),
    ))
}

/// Checks `model_index.json` names the components we need; returns the world it declares
/// ([`LoadedModel::world`]).
fn check_index(files: &dyn ModelFiles) -> Result<Option<String>> {
    let index: serde_json::Value = read_config(files, "model_index.json")?;
    for component in ["text_encoder", "tokenizer", "unet", "vae", "scheduler"] {
        if index.get(component).is_none() {
            return Err(Error::config(format!("{}/model_index.json", files.name()), format!("has no `{component}` entry")));
        }
    }
    Ok(index.pointer("/_lifelong_diffusion/world").and_then(|w| w.as_str()).map(str::to_string))
}

/// Everything a pipeline is made of, loaded and validated. Cloning shares the weights.
#[derive(Clone)]
pub struct LoadedModel {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel,
    pub unet: UNet2DConditionModel,
    pub vae: AutoencoderKL,
    pub unet_config: UNetConfig,
    pub vae_config: VaeConfig,
    pub scheduler_config: SchedulerConfig,
    /// The procedural world the model was trained on, when its `model_index.json` says so
    /// (`"_lifelong_diffusion": {"world": "shapes"}`: the built-in model; diffusers skips keys
    /// with a leading underscore): its prompts follow that world's grammar (../shared/world.md).
    pub world: Option<String>,
    /// The concept tokens of an installed concept-gated adapter, one per block, in block order:
    /// the text encoding appends their gates (src/model/gate.rs). Empty for every other model.
    pub gate_tokens: Vec<i64>,
}

/// Loads and checks a whole pipeline.
pub fn load(files: &dyn ModelFiles, device: &Device) -> Result<LoadedModel> {
    let world = check_index(files)?;
    let name = files.name();
    let tokenizer_files = TokenizerFiles {
        tokenizer_json: read_text(files, "tokenizer/tokenizer.json")?,
        vocab_json: read_text(files, "tokenizer/vocab.json")?,
        merges_txt: read_text(files, "tokenizer/merges.txt")?,
        tokenizer_config_json: read_text(files, "tokenizer/tokenizer_config.json")?,
        special_tokens_map_json: read_text(files, "tokenizer/special_tokens_map.json")?,
    };
    let tokenizer = ClipTokenizer::from_files(&tokenizer_files, &format!("{name}/tokenizer"))?;

    let clip_config: ClipConfig = read_config(files, "text_encoder/config.json")?;
    clip_config.validate(&format!("{name}/text_encoder/config.json"))?;
    let vb = weights(files, "text_encoder", "model", device)?;
    let text_encoder = ClipTextModel::load(&vb, &clip_config)?;
    vb.finish()?;
    if tokenizer.context_length() > clip_config.max_position_embeddings {
        return Err(Error::config(
            format!("{name}/tokenizer/tokenizer_config.json"),
            format!(
                "model_max_length {} exceeds the text encoder's max_position_embeddings {}",
                tokenizer.context_length(),
                clip_config.max_position_embeddings
            ),
        ));
    }
    if tokenizer.vocab_size() > text_encoder.vocab_size() {
        return Err(Error::config(
            format!("{name}/tokenizer"),
            format!("has {} tokens but the text encoder embeds only {}", tokenizer.vocab_size(), text_encoder.vocab_size()),
        ));
    }

    let unet_config: UNetConfig = read_config(files, "unet/config.json")?;
    unet_config.validate(&format!("{name}/unet/config.json"))?;
    let vb = weights(files, "unet", "diffusion_pytorch_model", device)?;
    let unet = UNet2DConditionModel::load(&vb, &unet_config)?;
    vb.finish()?;

    let vae_config: VaeConfig = read_config(files, "vae/config.json")?;
    vae_config.validate(&format!("{name}/vae/config.json"))?;
    let vb = weights(files, "vae", "diffusion_pytorch_model", device)?;
    let vae = AutoencoderKL::load(&vb, &vae_config)?;
    vb.finish()?;

    let path = format!("{name}/scheduler/scheduler_config.json");
    let text = read_text(files, "scheduler/scheduler_config.json")?.ok_or_else(|| Error::config(&path, "file is missing"))?;
    let scheduler_config = SchedulerConfig::from_json(&text).map_err(|e| Error::config(&path, e.to_string()))?;
    Ok(LoadedModel { tokenizer, text_encoder, unet, vae, unet_config, vae_config, scheduler_config, world, gate_tokens: Vec::new() })
}
