//! The learner's state <-> the store's blobs: PEFT-named LoRA tensors, concept embeddings and
//! memories. The LoRA scale `alpha / r` is folded into `lora_B` on save (saved with alpha = r),
//! so a file reads the same in PEFT with `lora_alpha = r`.

use std::ops::Range;

use burn::prelude::*;

use super::adapter::{transformer_blocks, leaf, Adapter, AdapterConfig, Concept, Target};
use super::learner::Learner;
use super::memory::Memory;
use super::selfcheck::{Signature, SIGNATURE_LEN};
use super::store::{check_rank_rows, embedding_concept, embedding_name, looks_name, looks_shape_ok, ConceptEntry, NamedTensor, StateBlobs};
use crate::error::{Error, Result};
use crate::loader::LoadedModel;
use crate::model::unet::UNet2DConditionModel;
use crate::tokenizer::ClipTokenizer;

fn to_named(name: String, t: &Tensor<2>, transpose: bool) -> Result<NamedTensor> {
    let t = if transpose { t.clone().transpose() } else { t.clone() };
    let shape = t.dims().to_vec();
    let data = t.into_data().convert::<f32>().try_to_vec::<f32>().map_err(|e| Error::InvalidInput(format!("{name}: {e:?}")))?;
    Ok(NamedTensor::new(name, shape, data))
}

fn from_named(t: &NamedTensor, device: &Device) -> Result<Tensor<2>> {
    let shape: [usize; 2] = match t.shape.as_slice() {
        [a, b] => [*a, *b],
        [a] => [1, *a],
        other => return Err(Error::InvalidInput(format!("tensor `{}` has shape {other:?}; expected a matrix or a vector", t.name))),
    };
    if t.data.len() != shape[0] * shape[1] {
        return Err(Error::InvalidInput(format!("tensor `{}` holds {} values for shape {shape:?}", t.name, t.data.len())));
    }
    Ok(Tensor::from_data(TensorData::new(t.data.clone(), shape), device))
}

/// The adapter and memories as store blobs, and the concept entries (`added_in` from `versions`,
/// the version that first taught each concept, or `next` for new ones).
pub fn save(learner: &Learner, previous: &[ConceptEntry], next: u32) -> Result<(Vec<ConceptEntry>, StateBlobs)> {
    let a = &learner.adapter;
    let scale = a.config.scale() as f32;
    let mut adapter = Vec::new();
    for (i, site) in a.sites.iter().enumerate() {
        adapter.push(to_named(format!("{site}.lora_A.weight"), &a.down[i], true)?);
        adapter.push(to_named(format!("{site}.lora_B.weight"), &a.up[i].clone().mul_scalar(scale), true)?);
    }
    for (c, e) in a.concepts.iter().zip(&a.embeddings) {
        let mut t = to_named(embedding_name(&c.name), e, false)?;
        t.shape = vec![t.data.len()];
        adapter.push(t);
        if !c.looks.is_empty() {
            let values: Vec<f32> = c.looks.iter().flat_map(Signature::to_values).collect();
            adapter.push(NamedTensor::new(looks_name(&c.name), vec![c.looks.len(), SIGNATURE_LEN], values));
        }
    }
    let memories = learner.memories.iter().map(Memory::to_blob).collect::<Result<Vec<_>>>()?;
    let concepts = a
        .concepts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let old = previous.iter().find(|p| p.name == c.name);
            ConceptEntry {
                name: c.name.clone(),
                token: c.token.clone(),
                token_id: c.token_id,
                added_in: old.map_or(next, |p| p.added_in),
                meta: old.map_or(serde_json::Value::Null, |p| p.meta.clone()),
                rank_rows: a.routes.get(i).map(|r| [r.start, r.end]),
                gated: a.gated,
            }
        })
        .collect();
    Ok((concepts, StateBlobs { adapter, memories }))
}

/// Loads a saved state into `learner` (whose adapter must be fresh for the same base model).
pub fn load(learner: &mut Learner, concepts: &[ConceptEntry], blobs: &StateBlobs) -> Result<()> {
    let device = learner.trainer.device.clone();
    let model = &mut learner.trainer.model;
    let fresh = learner.adapter.clone();
    if let Some(adapter) = adapter_from_blobs(&mut model.unet, &mut model.tokenizer, &fresh, concepts, blobs, &device)? {
        learner.adapter = adapter;
    }
    learner.memories = blobs.memories.iter().map(|m| Memory::from_blob(m, &learner.device)).collect::<Result<_>>()?;
    Ok(())
}

/// Puts a saved state into `model` for generating `prompt` (`generate --store`): a routed state
/// with the blocks of the concepts the prompt names only (see [`stored_adapter`] to install one
/// state for many prompts).
pub fn install(model: &mut LoadedModel, concepts: &[ConceptEntry], blobs: &StateBlobs, device: &Device, prompt: &str) -> Result<()> {
    if let Some(adapter) = stored_adapter(model, concepts, blobs, device)? {
        install_for(model, &adapter, prompt)?;
    }
    Ok(())
}

/// The adapter a saved state holds for `model` (`None` when nothing is taught yet), on `device`.
pub fn stored_adapter(model: &mut LoadedModel, concepts: &[ConceptEntry], blobs: &StateBlobs, device: &Device) -> Result<Option<Adapter>> {
    let fresh = Adapter::new(&mut model.unet, AdapterConfig::default(), 0, device)?;
    // install() adds the tokens to the model's own tokenizer; this copy only numbers them.
    let mut tokenizer = model.tokenizer.clone();
    adapter_from_blobs(&mut model.unet, &mut tokenizer, &fresh, concepts, blobs, device)
}

/// Installs `adapter` into `model` as `prompt` uses it (routed: the named concepts' blocks).
pub fn install_for(model: &mut LoadedModel, adapter: &Adapter, prompt: &str) -> Result<()> {
    adapter.routed(&adapter.concepts_in(prompt)).install(model)
}

/// Classifier-free guidance for a prompt that names routed concepts when the user asks for none.
/// A routed block is fitted to four pictures and installed for both of guidance's passes; at the
/// usual 7.5 guidance multiplies the block's fit into halos, mottled backgrounds and lost
/// outlines (a crescent closed into a ring). Eight concepts of the built-in model, the eval's
/// lessons, 64 two-concept prompts composed (both present and apart) and 16 probes each
/// (identified): 7.5 and 5.5 composed 33, 4 composed 49, 3 and 2 each 52; the probes 104, 109,
/// 111 and 111 of 128 at 7.5, 4, 3 and 2 (README, "Lessons").
pub const ROUTED_GUIDANCE: f32 = 3.0;

/// The guidance `prompt` draws with: `requested` when given, else [`ROUTED_GUIDANCE`] when it
/// names a concept of a routed `adapter`, else `plain` (the pipeline's usual default).
pub fn guidance_for(adapter: Option<&Adapter>, prompt: &str, requested: Option<f32>, plain: f32) -> f32 {
    requested.unwrap_or(if adapter.is_some_and(|a| names_routed(a, prompt)) { ROUTED_GUIDANCE } else { plain })
}

/// Whether `prompt` names a concept of `adapter` and `adapter` routes its concepts.
pub fn names_routed(adapter: &Adapter, prompt: &str) -> bool {
    route_key(adapter, prompt).is_some_and(|concepts| !concepts.is_empty())
}

/// The rank rows `prompt` routes to, for callers that cache installed models: `None` for a shared
/// adapter (every prompt gets all of it).
pub fn route_key(adapter: &Adapter, prompt: &str) -> Option<Vec<usize>> {
    (!adapter.routes.is_empty()).then(|| adapter.concepts_in(prompt))
}

/// The adapter a state holds (`None` for an empty state), on `device`, its concept tokens added
/// to `tokenizer`. The state's own LoRA names say which projections it adapts (so a store made
/// with other targets than `fresh`'s still loads); `fresh` gives the seed shapes.
fn adapter_from_blobs(
    unet: &mut UNet2DConditionModel,
    tokenizer: &mut ClipTokenizer,
    fresh: &Adapter,
    concepts: &[ConceptEntry],
    blobs: &StateBlobs,
    device: &Device,
) -> Result<Option<Adapter>> {
    let find = |name: &str| blobs.adapter.iter().find(|t| t.name == name);
    let targets: Vec<Target> = Target::ALL
        .into_iter()
        .filter(|t| blobs.adapter.iter().any(|b| b.name.ends_with(&format!(".{}.lora_A.weight", t.key()))))
        .collect();
    if targets.is_empty() {
        return match concepts.first() {
            None => Ok(None), // nothing taught yet
            Some(_) => Err(missing(&fresh.sites[0])),
        };
    }
    let first = blobs.adapter.iter().find(|b| b.name.ends_with(".lora_A.weight")).map_or(0, |t| t.shape.first().copied().unwrap_or(0));
    let rank = first.max(1);
    let config = AdapterConfig { rank, alpha: rank as f32, targets };
    let fresh = Adapter::new(unet, config.clone(), 0, device)?;
    let mut adapter = Adapter { config, concepts: Vec::new(), embeddings: Vec::new(), fisher: None, ..fresh.clone() };
    check_sites(unet, &adapter, blobs)?;
    for (i, site) in fresh.sites.iter().enumerate() {
        let a = find(&format!("{site}.lora_A.weight")).ok_or_else(|| missing(site))?;
        let b = find(&format!("{site}.lora_B.weight")).ok_or_else(|| missing(site))?;
        let (down, up) = (from_named(a, device)?.transpose(), from_named(b, device)?.transpose());
        let fits = down.dims()[0] == fresh.down[i].dims()[0] && up.dims()[1] == fresh.up[i].dims()[1] && down.dims()[1] == rank && up.dims()[0] == rank;
        if !fits {
            return Err(Error::InvalidInput(format!("LoRA `{site}` has shapes {:?}/{:?} that do not fit this model", a.shape, b.shape)));
        }
        adapter.down[i] = leaf(down);
        adapter.up[i] = leaf(up);
    }
    for entry in concepts {
        let t = find(&embedding_name(&entry.name))
            .ok_or_else(|| Error::InvalidInput(format!("the store lacks the embedding of concept `{}`; restore an earlier version", entry.name)))?;
        let id = tokenizer.add_token(&entry.token)?;
        adapter.embeddings.push(leaf(from_named(t, device)?));
        adapter.concepts.push(Concept { name: entry.name.clone(), token: entry.token.clone(), token_id: id, looks: stored_looks(blobs, &entry.name)? });
    }
    if let Some(orphan) = blobs.adapter.iter().filter_map(|t| embedding_concept(&t.name)).find(|n| !concepts.iter().any(|c| c.name == *n)) {
        return Err(Error::InvalidInput(format!("the store holds an embedding for `{orphan}` that its manifest does not list; it is inconsistent")));
    }
    adapter.routes = routes_of(concepts, rank)?;
    adapter.gated = concepts.iter().any(|c| c.gated);
    if adapter.gated && (concepts.iter().any(|c| !c.gated) || adapter.routes.len() != concepts.len() || rank % concepts.len().max(1) != 0) {
        return Err(Error::InvalidInput("the store's gated concepts do not each own an equal block of the adapter; it is inconsistent, restore an earlier version".into()));
    }
    Ok(Some(adapter))
}

/// A concept's looks from the store (none for concepts stored before looks were kept).
fn stored_looks(blobs: &StateBlobs, concept: &str) -> Result<Vec<Signature>> {
    let Some(t) = blobs.adapter.iter().find(|t| t.name == looks_name(concept)) else { return Ok(Vec::new()) };
    let damaged = || Error::InvalidInput(format!("the looks of concept `{concept}` in the store are damaged; restore an earlier version or teach it again"));
    if !looks_shape_ok(&t.shape) || t.data.len() != t.shape.iter().product::<usize>() {
        return Err(damaged());
    }
    t.data.chunks(SIGNATURE_LEN).map(|row| Signature::from_values(row).ok_or_else(damaged)).collect()
}

/// The concepts' own LoRA blocks of a routed state (empty for a shared adapter): the store's check
/// of the rows (all or none, non-empty, disjoint), then each within the adapter's rank.
fn routes_of(concepts: &[ConceptEntry], rank: usize) -> Result<Vec<Range<usize>>> {
    check_rank_rows(concepts)?;
    let mut routes = Vec::new();
    for (c, [start, end]) in concepts.iter().filter_map(|c| c.rank_rows.map(|r| (c, r))) {
        if end > rank {
            return Err(Error::InvalidInput(format!("concept `{}` claims LoRA rows {start}..{end} of a rank-{rank} adapter; the store is damaged, restore an earlier version", c.name)));
        }
        routes.push(start..end);
    }
    Ok(routes)
}

fn missing(site: &str) -> Error {
    Error::InvalidInput(format!("the store lacks the LoRA of `{site}`; it was made for another base model or is damaged"))
}

/// Every LoRA in the blobs must belong to a site of this model with a known target.
fn check_sites(unet: &mut UNet2DConditionModel, adapter: &Adapter, blobs: &StateBlobs) -> Result<()> {
    let known: Vec<String> = transformer_blocks(unet)
        .into_iter()
        .flat_map(|(p, _)| Target::ALL.map(|t| format!("{p}.{}", t.key())))
        .collect();
    for t in &blobs.adapter {
        let Some(site) = t.name.strip_suffix(".lora_A.weight").or_else(|| t.name.strip_suffix(".lora_B.weight")) else { continue };
        if !known.iter().any(|k| k == site) || !adapter.sites.iter().any(|s| s == site) {
            return Err(Error::InvalidInput(format!("the store has a LoRA for `{site}`, which this model's adapter does not have")));
        }
    }
    Ok(())
}
