//! Safetensors encode/decode of versions and of the portable export file, with every check that
//! keeps a damaged or foreign file from becoming the model's state.

use std::collections::{HashMap, HashSet};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use super::{check_concepts, embedding_concept, embedding_name, looks_concept, looks_shape_ok, ConceptEntry, ConceptMemory, NamedTensor, StateBlobs, StoreError, VersionEntry, BASE_MEMORY, EXPORT_FORMAT};

/// FNV-1a 64: cheap, dependency-free, and enough to catch torn or bit-rotted blobs (not an adversary).
pub fn fnv64_hex(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

pub fn adapter_path(version: u32) -> String {
    format!("v{version}/adapter.safetensors")
}

pub fn memory_path(version: u32, index: usize) -> String {
    format!("v{version}/memory/{index}.safetensors")
}

/// The index of a memory blob path of `version`, if `path` is one.
fn memory_index(version: u32, path: &str) -> Option<usize> {
    let rest = path.strip_prefix(&format!("v{version}/memory/"))?.strip_suffix(".safetensors")?;
    rest.bytes().all(|b| b.is_ascii_digit()).then(|| rest.parse().ok()).flatten()
}

fn bad_tensor(file: &str, name: &str, reason: String) -> StoreError {
    StoreError::BadTensor { file: file.into(), name: name.into(), reason }
}

fn inconsistent(file: &str, reason: String) -> StoreError {
    StoreError::Manifest { file: file.into(), reason }
}

fn st_error(file: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Safetensors { file: file.into(), reason: e.to_string() }
}

/// The shape must account for exactly the data, and every value must be finite.
fn check_tensor(file: &str, t: &NamedTensor) -> Result<(), StoreError> {
    if t.name.is_empty() {
        return Err(bad_tensor(file, "", "has an empty name".into()));
    }
    let count = t.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if count != Some(t.data.len()) {
        return Err(bad_tensor(file, &t.name, format!("shape {:?} does not match its {} values", t.shape, t.data.len())));
    }
    if let Some(i) = t.data.iter().position(|x| !x.is_finite()) {
        return Err(bad_tensor(file, &t.name, format!("value {i} is NaN or infinite")));
    }
    Ok(())
}

/// Every embedding and memory belongs to a listed concept, and every concept has its embedding.
fn check_state(file: &str, concepts: &[ConceptEntry], blobs: &StateBlobs) -> Result<(), StoreError> {
    let names: HashSet<&str> = concepts.iter().map(|c| c.name.as_str()).collect();
    for t in &blobs.adapter {
        if let Some(c) = embedding_concept(&t.name).filter(|c| !names.contains(c)) {
            return Err(inconsistent(file, format!("embedding `{}` belongs to concept `{c}`, which is not listed", t.name)));
        }
        if let Some(c) = looks_concept(&t.name) {
            if !names.contains(c) {
                return Err(inconsistent(file, format!("looks `{}` belong to concept `{c}`, which is not listed", t.name)));
            }
            if !looks_shape_ok(&t.shape) {
                return Err(bad_tensor(file, &t.name, format!("has shape {:?}; a concept's looks are [1..={}, {}]", t.shape, super::MAX_LOOKS, crate::lifelong::selfcheck::SIGNATURE_LEN)));
            }
        }
    }
    for c in concepts {
        let name = embedding_name(&c.name);
        if !blobs.adapter.iter().any(|t| t.name == name) {
            return Err(StoreError::MissingTensor { file: file.into(), name });
        }
    }
    for (i, m) in blobs.memories.iter().enumerate() {
        // The base memory (samples of prompts without concepts) belongs to no concept.
        if m.concept != BASE_MEMORY && !names.contains(m.concept.as_str()) {
            return Err(inconsistent(file, format!("memory {i} belongs to concept `{}`, which is not listed", m.concept)));
        }
    }
    Ok(())
}

/// F32 little-endian bytes of `tensors` under their given names, with `meta` as `__metadata__`.
fn serialize(file: &str, tensors: &[(String, &NamedTensor)], meta: HashMap<String, String>) -> Result<Vec<u8>, StoreError> {
    let mut seen = HashSet::new();
    for (name, t) in tensors {
        check_tensor(file, t)?;
        if !seen.insert(name.as_str()) {
            return Err(bad_tensor(file, name, "appears twice".into()));
        }
    }
    let raw: Vec<Vec<u8>> = tensors.iter().map(|(_, t)| t.data.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, t), bytes) in tensors.iter().zip(&raw) {
        let view = TensorView::new(Dtype::F32, t.shape.clone(), bytes).map_err(|e| bad_tensor(file, name, e.to_string()))?;
        views.push((name.clone(), view));
    }
    safetensors::serialize(views, Some(meta)).map_err(|e| st_error(file, e))
}

fn to_f32(raw: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    match dtype {
        Dtype::F32 => Some(raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()),
        Dtype::F16 => Some(raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()),
        _ => None,
    }
}

/// Parses a safetensors file into checked tensors (sorted by name) and its `__metadata__`.
fn deserialize(bytes: &[u8], file: &str) -> Result<(Vec<NamedTensor>, HashMap<String, String>), StoreError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| st_error(file, e))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| st_error(file, e))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let mut tensors = Vec::with_capacity(st.len());
    for (name, view) in st.tensors() {
        let data = to_f32(view.data(), view.dtype())
            .ok_or_else(|| StoreError::Dtype { file: file.into(), name: name.clone(), dtype: format!("{:?}", view.dtype()) })?;
        let t = NamedTensor::new(name, view.shape().to_vec(), data);
        check_tensor(file, &t)?;
        tensors.push(t);
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((tensors, meta))
}

/// The files of version `version` holding `blobs`: `v{N}/adapter.safetensors` first, then
/// `v{N}/memory/{i}.safetensors` in memory order.
pub fn encode_version(version: u32, concepts: &[ConceptEntry], blobs: &StateBlobs) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    check_state(&format!("version {version}"), concepts, blobs)?;
    let path = adapter_path(version);
    let named: Vec<(String, &NamedTensor)> = blobs.adapter.iter().map(|t| (t.name.clone(), t)).collect();
    let mut files = vec![(path.clone(), serialize(&path, &named, HashMap::new())?)];
    for (i, memory) in blobs.memories.iter().enumerate() {
        let path = memory_path(version, i);
        let named: Vec<(String, &NamedTensor)> = memory.tensors.iter().map(|t| (t.name.clone(), t)).collect();
        let prompts = json(&memory.prompts);
        let meta = HashMap::from([("concept".to_string(), memory.concept.clone()), ("prompts".to_string(), prompts)]);
        let bytes = serialize(&path, &named, meta)?;
        files.push((path, bytes));
    }
    Ok(files)
}

/// Decodes version `entry`, reading each listed file with `read` and checking its size and checksum
/// before parsing it.
pub fn decode_version(entry: &VersionEntry, mut read: impl FnMut(&str) -> Result<Vec<u8>, StoreError>) -> Result<StateBlobs, StoreError> {
    let mut adapter = None;
    let mut memories = Vec::new();
    for fe in &entry.files {
        let bytes = read(&fe.path)?;
        if bytes.len() as u64 != fe.bytes {
            return Err(StoreError::FileSize { file: fe.path.clone(), expected: fe.bytes, found: bytes.len() as u64 });
        }
        let sum = super::fnv64_hex(&bytes);
        if sum != fe.fnv64 {
            return Err(StoreError::Checksum { file: fe.path.clone(), expected: fe.fnv64.clone(), found: sum });
        }
        let (tensors, meta) = deserialize(&bytes, &fe.path)?;
        if fe.path == adapter_path(entry.version) {
            adapter = Some(tensors);
        } else if let Some(i) = memory_index(entry.version, &fe.path) {
            memories.push((i, memory_from_meta(&fe.path, &meta, tensors)?));
        } else {
            return Err(inconsistent("manifest.json", format!("version {} lists an unknown file `{}`", entry.version, fe.path)));
        }
    }
    let adapter = adapter.ok_or_else(|| inconsistent("manifest.json", format!("version {} lists no adapter file", entry.version)))?;
    memories.sort_by_key(|(i, _)| *i);
    let blobs = StateBlobs { adapter, memories: memories.into_iter().map(|(_, m)| m).collect() };
    check_state(&format!("version {}", entry.version), &entry.concepts, &blobs)?;
    Ok(blobs)
}

fn memory_from_meta(file: &str, meta: &HashMap<String, String>, tensors: Vec<NamedTensor>) -> Result<ConceptMemory, StoreError> {
    let concept = meta.get("concept").ok_or_else(|| st_error(file, "no `concept` in __metadata__"))?.clone();
    let prompts = meta.get("prompts").ok_or_else(|| st_error(file, "no `prompts` in __metadata__"))?;
    let prompts = serde_json::from_str(prompts).map_err(|e| st_error(file, format!("`prompts` is not a JSON list of strings: {e}")))?;
    Ok(ConceptMemory { concept, prompts, tensors })
}

/// A memory's non-tensor part in the export file's `memories` metadata.
#[derive(Serialize, Deserialize)]
struct MemoryMeta {
    concept: String,
    prompts: Vec<String>,
}

/// How an import checks the adapter's tensor names and shapes.
pub enum ShapeCheck<'a> {
    /// Structure only (an empty store has nothing to compare with).
    Any,
    /// The same non-embedding tensors and shapes as this adapter (the current version's); concept
    /// embeddings with the shape of its embeddings.
    LikeAdapter(&'a [NamedTensor]),
    /// The model's shape for a tensor name, `None` for a name it does not have.
    Expected(&'a dyn Fn(&str) -> Option<Vec<usize>>),
}

/// What an export file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub concepts: Vec<ConceptEntry>,
    pub blobs: StateBlobs,
    pub lesson: serde_json::Value,
}

/// One safetensors file with every tensor of a version (`adapter/{name}`, `memory/{i}/{name}`) and
/// the concepts and prompts in `__metadata__`, readable by any safetensors tool.
pub fn export_file(model_id: &str, entry: &VersionEntry, blobs: &StateBlobs) -> Result<Vec<u8>, StoreError> {
    let file = "export";
    check_state(file, &entry.concepts, blobs)?;
    let mut named: Vec<(String, &NamedTensor)> = blobs.adapter.iter().map(|t| (format!("adapter/{}", t.name), t)).collect();
    for (i, m) in blobs.memories.iter().enumerate() {
        named.extend(m.tensors.iter().map(|t| (format!("memory/{i}/{}", t.name), t)));
    }
    let memories: Vec<MemoryMeta> =
        blobs.memories.iter().map(|m| MemoryMeta { concept: m.concept.clone(), prompts: m.prompts.clone() }).collect();
    let meta = HashMap::from([
        ("format".to_string(), EXPORT_FORMAT.to_string()),
        ("schema".to_string(), super::SCHEMA.to_string()),
        ("model_id".to_string(), model_id.to_string()),
        ("concepts".to_string(), json(&entry.concepts)),
        ("memories".to_string(), json(&memories)),
        ("lesson".to_string(), json(&entry.lesson)),
    ]);
    serialize(file, &named, meta)
}

/// JSON text of plain data; serializing strings, numbers and JSON values cannot fail.
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn meta_json<T: serde::de::DeserializeOwned>(file: &str, meta: &HashMap<String, String>, key: &str) -> Result<T, StoreError> {
    let text = meta.get(key).ok_or_else(|| st_error(file, format!("no `{key}` in __metadata__")))?;
    serde_json::from_str(text).map_err(|e| st_error(file, format!("`{key}` in __metadata__ is not valid: {e}")))
}

/// Reads an export file made by [`export_file`] for `model_id`, checking format, schema, model id,
/// tensor names and shapes (`check`), dtypes (F32, or F16 converted) and values.
pub fn import_file(bytes: &[u8], file: &str, model_id: &str, check: ShapeCheck<'_>) -> Result<Imported, StoreError> {
    let (tensors, meta) = deserialize(bytes, file)?;
    let format = meta.get("format").cloned().unwrap_or_default();
    if format != EXPORT_FORMAT {
        return Err(StoreError::Format { file: file.into(), found: format });
    }
    let schema = meta.get("schema").cloned().unwrap_or_default();
    if schema != super::SCHEMA.to_string() {
        return Err(StoreError::Schema { file: file.into(), found: schema, supported: super::SCHEMA });
    }
    let found = meta.get("model_id").cloned().unwrap_or_default();
    if found != model_id {
        return Err(StoreError::ModelMismatch { file: file.into(), expected: model_id.into(), found });
    }
    let concepts: Vec<ConceptEntry> = meta_json(file, &meta, "concepts")?;
    check_concepts(&concepts)?;
    let memories: Vec<MemoryMeta> = meta_json(file, &meta, "memories")?;
    let lesson = meta_json(file, &meta, "lesson").unwrap_or(serde_json::Value::Null);
    let blobs = split_tensors(file, tensors, memories)?;
    check_shapes(file, &blobs.adapter, &check)?;
    check_state(file, &concepts, &blobs)?;
    Ok(Imported { concepts, blobs, lesson })
}

/// Routes `adapter/...` and `memory/{i}/...` tensors to their places.
fn split_tensors(file: &str, tensors: Vec<NamedTensor>, memories: Vec<MemoryMeta>) -> Result<StateBlobs, StoreError> {
    let mut blobs = StateBlobs {
        adapter: vec![],
        memories: memories.into_iter().map(|m| ConceptMemory { concept: m.concept, prompts: m.prompts, tensors: vec![] }).collect(),
    };
    for mut t in tensors {
        if let Some(name) = t.name.strip_prefix("adapter/") {
            t.name = name.to_string();
            blobs.adapter.push(t);
            continue;
        }
        let place = t.name.strip_prefix("memory/").and_then(|rest| rest.split_once('/'));
        let slot = place.and_then(|(i, name)| Some((i.parse::<usize>().ok()?, name.to_string())));
        match slot {
            Some((i, name)) if i < blobs.memories.len() && !name.is_empty() => {
                t.name = name;
                blobs.memories[i].tensors.push(t);
            }
            _ => return Err(StoreError::UnexpectedTensor { file: file.into(), name: t.name }),
        }
    }
    Ok(blobs)
}

fn check_shapes(file: &str, adapter: &[NamedTensor], check: &ShapeCheck<'_>) -> Result<(), StoreError> {
    match check {
        ShapeCheck::Any => Ok(()),
        ShapeCheck::Expected(shape_of) => {
            for t in adapter {
                match shape_of(&t.name) {
                    None => return Err(StoreError::UnexpectedTensor { file: file.into(), name: t.name.clone() }),
                    Some(s) if s != t.shape => {
                        return Err(StoreError::ShapeMismatch { file: file.into(), name: t.name.clone(), expected: s, found: t.shape.clone() })
                    }
                    Some(_) => {}
                }
            }
            Ok(())
        }
        ShapeCheck::LikeAdapter(reference) => check_like(file, adapter, reference),
    }
}

/// Same tensors and shapes as `reference` apart from the concepts' own (embeddings shaped like its
/// embeddings; looks checked with the state).
fn check_like(file: &str, adapter: &[NamedTensor], reference: &[NamedTensor]) -> Result<(), StoreError> {
    let embedding = reference.iter().find(|r| embedding_concept(&r.name).is_some()).map(|r| r.shape.clone());
    for t in adapter {
        let expected = if embedding_concept(&t.name).is_some() {
            embedding.clone()
        } else if looks_concept(&t.name).is_some() {
            None // each concept's own row count, checked with the state (check_state)
        } else {
            let r = reference.iter().find(|r| r.name == t.name);
            Some(r.ok_or_else(|| StoreError::UnexpectedTensor { file: file.into(), name: t.name.clone() })?.shape.clone())
        };
        if let Some(s) = expected.filter(|s| *s != t.shape) {
            return Err(StoreError::ShapeMismatch { file: file.into(), name: t.name.clone(), expected: s, found: t.shape.clone() });
        }
    }
    let per_concept = |name: &str| embedding_concept(name).is_some() || looks_concept(name).is_some();
    let missing = reference.iter().find(|r| !per_concept(&r.name) && !adapter.iter().any(|t| t.name == r.name));
    match missing {
        Some(r) => Err(StoreError::MissingTensor { file: file.into(), name: r.name.clone() }),
        None => Ok(()),
    }
}
