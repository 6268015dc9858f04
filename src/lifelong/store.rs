//! The concept store's schema: one JSON manifest plus safetensors blobs, the same for the native
//! folder store (`src/native_store.rs`) and the browser's IndexedDB store (`src/web`). Pure data and
//! encode/decode: the edges do the I/O, so this module builds for wasm32 too.
//!
//! Layout, paths relative to the store root:
//! - `manifest.json`: [`Manifest`] (model id, versions, which one is current);
//! - `v{N}/adapter.safetensors`: the shared adapter (PEFT names, `...to_k.lora_A.weight`) and the
//!   concept embeddings (`text_encoder.concepts.<name>.embedding`, shape `[dim]`);
//! - `v{N}/memory/{i}.safetensors`: replay memory `i` (latents, features), its concept and prompts
//!   in `__metadata__`.
//!
//! A change is planned as a [`PendingVersion`] whose files all live under a new `v{N}/`; the edge
//! writes them, and only then makes the version current with [`Manifest::switch_to`] and writes the
//! manifest. The manifest is the single switch, so a crash at any point leaves the previous version.

mod codec;
mod manifest;
#[cfg(test)]
mod tests;

pub use codec::{adapter_path, decode_version, encode_version, export_file, fnv64_hex, import_file, memory_path, Imported, ShapeCheck};

use serde::{Deserialize, Serialize};

/// `format` of every manifest.
pub const FORMAT: &str = "lifelong-diffusion-store";
/// Manifest schema this build reads and writes.
pub const SCHEMA: u32 = 1;
/// `format` in the `__metadata__` of an exported file.
pub const EXPORT_FORMAT: &str = "lifelong-diffusion-concepts";
pub const MANIFEST_FILE: &str = "manifest.json";
/// Versions kept besides the current one; older ones may be deleted after a switch.
pub const KEEP_PREVIOUS: usize = 4;
pub const MAX_NAME_LEN: usize = 48;
/// The `concept` of the base memory: generated samples of prompts without concepts, which keep
/// plain prompts as the base model drew them. No valid concept name is empty.
pub const BASE_MEMORY: &str = "";

/// One tensor, row-major f32.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl NamedTensor {
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) -> Self {
        NamedTensor { name: name.into(), shape, data }
    }
}

/// A concept the model knows, addressed in prompts by `token`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConceptEntry {
    pub name: String,
    /// `<name>`, see [`concept_token`].
    pub token: String,
    pub token_id: i64,
    /// The version whose lesson taught it.
    pub added_in: u32,
    #[serde(default)]
    pub meta: serde_json::Value,
    /// The LoRA rank rows `[start, end)` that are this concept's own block, when the store's
    /// concepts were taught `routed` (a prompt then generates with the blocks of the concepts it
    /// names); absent when all concepts share the whole adapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank_rows: Option<[usize; 2]>,
    /// Whether the block in `rank_rows` is concept-gated (L2DM's shared adapter: every block in
    /// place for every prompt, each acting where its token reaches; src/model/gate.rs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gated: bool,
}

/// The replay memory of one concept: prompts and tensors (latents, feature bank).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConceptMemory {
    pub concept: String,
    pub prompts: Vec<String>,
    pub tensors: Vec<NamedTensor>,
}

/// The name for one memory.
pub type MemoryItem = ConceptMemory;

/// The payload of one version. Decoded tensors come back sorted by name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StateBlobs {
    pub adapter: Vec<NamedTensor>,
    pub memories: Vec<ConceptMemory>,
}

/// One blob of a version, with what it must hash to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    /// FNV-1a 64 of the bytes, 16 lowercase hex digits.
    pub fnv64: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionEntry {
    pub version: u32,
    pub parent: Option<u32>,
    /// Milliseconds since the Unix epoch (the edge knows the clock).
    pub created_ms: f64,
    /// What made it: "teach <cat>", "remove <cat>", "import".
    pub note: String,
    pub concepts: Vec<ConceptEntry>,
    pub files: Vec<FileEntry>,
    /// Free-form lesson record (method, steps, losses, ...).
    #[serde(default)]
    pub lesson: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub schema: u32,
    pub model_id: String,
    pub current: Option<u32>,
    pub versions: Vec<VersionEntry>,
}

/// A version planned but not yet current: write `files`, then [`Manifest::switch_to`] `entry`.
#[derive(Debug, Clone)]
pub struct PendingVersion {
    pub entry: VersionEntry,
    pub files: Vec<(String, Vec<u8>)>,
}

/// What can go wrong in the store; every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("concept name {name:?} {reason}; use 1-48 characters of a-z, 0-9, '_' or '-' (for example `my_cat`)")]
    InvalidName { name: String, reason: &'static str },
    #[error("concept `{0}` appears twice; give each concept its own name")]
    DuplicateConcept(String),
    #[error("the concepts' own LoRA blocks (rank_rows) {0}; the store or file is damaged: restore an earlier version, or export it again")]
    RankRows(String),
    #[error("no concept `{name}` in version {version}; `concepts list` shows the names")]
    UnknownConcept { name: String, version: u32 },
    #[error("no version {version} in the store (kept: {available:?}); pick one of those")]
    UnknownVersion { version: u32, available: Vec<u32> },
    #[error("the store is empty; teach or import a concept first")]
    Empty,
    #[error("{file}: {reason}; the store's manifest is damaged, restore it from a backup or start a new store folder")]
    Manifest { file: String, reason: String },
    #[error("{file}: made for model `{found}`, but the model in use is `{expected}`; use it with `{found}` or a store folder of its own")]
    ModelMismatch { file: String, expected: String, found: String },
    #[error("{file}: listed in the manifest but missing; restore another version (`concepts restore`)")]
    FileMissing { file: String },
    #[error("{file}: {found} bytes where the manifest records {expected}; the file is truncated or corrupt, restore another version (`concepts restore`)")]
    FileSize { file: String, expected: u64, found: u64 },
    #[error("{file}: checksum {found} does not match the manifest's {expected}; the file is corrupt, restore another version (`concepts restore`)")]
    Checksum { file: String, expected: String, found: String },
    #[error("{file}: not a valid safetensors file ({reason}); the file is truncated or corrupt, export it again")]
    Safetensors { file: String, reason: String },
    #[error("{file}: not a lifelong-diffusion concept file (format {found:?}); export one with `concepts export`")]
    Format { file: String, found: String },
    #[error("{file}: schema {found:?}, this build reads schema {supported}; update lifelong-diffusion")]
    Schema { file: String, found: String, supported: u32 },
    #[error("{file}: tensor `{name}` has dtype {dtype}; only F32 and F16 are accepted, export the file again")]
    Dtype { file: String, name: String, dtype: String },
    #[error("{file}: tensor `{name}`: {reason}; the data is corrupt or from a diverged lesson, nothing was saved")]
    BadTensor { file: String, name: String, reason: String },
    #[error("{file}: tensor `{name}` is missing; the file was made for a different adapter configuration")]
    MissingTensor { file: String, name: String },
    #[error("{file}: unexpected tensor `{name}`; the file was made for a different adapter configuration")]
    UnexpectedTensor { file: String, name: String },
    #[error("{file}: tensor `{name}` has shape {found:?} but this model needs {expected:?}; the file was made for a different adapter configuration")]
    ShapeMismatch { file: String, name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("cannot read {path}: {source}; check the folder's permissions")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write {path}: {source}; nothing was changed, the store stays at its previous version")]
    Write { path: String, source: std::io::Error },
    #[error("disk full while writing {path}; nothing was changed, the store stays at its previous version: free some space and try again")]
    DiskFull { path: String },
}

/// The id a store records for its base model, the same natively and in the page: `name` and an
/// FNV-64 over the `.json` and `.safetensors` files directly in `unet/`, `text_encoder/` and
/// `vae/` (in that order, each by path): their length, first and last 64 KiB (cheap for GB files,
/// and any retrained weight changes them). `files` are `(path relative to the model folder, bytes)`.
pub fn model_id<'a>(name: &str, files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    const PARTS: [&str; 3] = ["unet", "text_encoder", "vae"];
    let mut picked: Vec<(usize, &str, &[u8])> = files
        .into_iter()
        .filter(|(path, _)| (path.ends_with(".json") || path.ends_with(".safetensors")) && path.matches('/').count() == 1)
        .filter_map(|(path, bytes)| PARTS.iter().position(|p| path.split('/').next() == Some(*p)).map(|k| (k, path, bytes)))
        .collect();
    picked.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut feed = |bytes: &[u8]| bytes.iter().for_each(|&b| hash = (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    for (_, _, bytes) in picked {
        feed(&(bytes.len() as u64).to_le_bytes());
        feed(&bytes[..bytes.len().min(65536)]);
        feed(&bytes[bytes.len().saturating_sub(65536)..]);
    }
    format!("{name}-{hash:016x}")
}

/// Checks a concept name: 1-48 characters of `[a-z0-9_-]`.
pub fn validate_concept_name(name: &str) -> Result<(), StoreError> {
    let bad = |reason| Err(StoreError::InvalidName { name: name.to_string(), reason });
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("is longer than 48 characters");
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return bad("has upper-case letters");
    }
    if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-') {
        return bad("has characters other than a-z, 0-9, '_' and '-'");
    }
    Ok(())
}

/// The prompt token of a concept: `<name>`.
pub fn concept_token(name: &str) -> String {
    format!("<{name}>")
}

/// The adapter tensor holding a concept's token embedding.
pub fn embedding_name(concept: &str) -> String {
    format!("text_encoder.concepts.{concept}.embedding")
}

/// The concept whose embedding `tensor` is, if it is one.
pub fn embedding_concept(tensor: &str) -> Option<&str> {
    tensor.strip_prefix("text_encoder.concepts.")?.strip_suffix(".embedding")
}

/// The adapter tensor holding a concept's looks (`[n, SIGNATURE_LEN]`: each lesson picture's
/// subject as a coarse silhouette and a colour, src/lifelong/selfcheck.rs).
pub fn looks_name(concept: &str) -> String {
    format!("concepts.{concept}.looks")
}

/// The concept whose looks `tensor` holds, if it holds any.
pub fn looks_concept(tensor: &str) -> Option<&str> {
    tensor.strip_prefix("concepts.")?.strip_suffix(".looks")
}

/// The looks tensor's shape must be `[n, SIGNATURE_LEN]` with 1 to this many rows (a lesson takes
/// a few pictures; a larger tensor is not one a lesson wrote).
pub const MAX_LOOKS: usize = 64;

/// Whether `shape` is one a concept's looks can have.
pub fn looks_shape_ok(shape: &[usize]) -> bool {
    matches!(shape, [n, len] if (1..=MAX_LOOKS).contains(n) && *len == super::selfcheck::SIGNATURE_LEN)
}

/// The folder holding version `v`'s blobs.
pub fn version_dir(v: u32) -> String {
    format!("v{v}")
}

fn check_concepts(concepts: &[ConceptEntry]) -> Result<(), StoreError> {
    let mut seen = std::collections::HashSet::new();
    for c in concepts {
        validate_concept_name(&c.name)?;
        if !seen.insert(c.name.as_str()) {
            return Err(StoreError::DuplicateConcept(c.name.clone()));
        }
    }
    check_rank_rows(concepts)
}

/// A routed state: every concept names its own rows, non-empty and disjoint, or none does (the
/// rank is checked against the tensors when the state loads into a model, `state::load`).
pub fn check_rank_rows(concepts: &[ConceptEntry]) -> Result<(), StoreError> {
    let mut rows: Vec<[usize; 2]> = concepts.iter().filter_map(|c| c.rank_rows).collect();
    if !rows.is_empty() && rows.len() != concepts.len() {
        return Err(StoreError::RankRows("are given for some concepts only, so the state is inconsistent".into()));
    }
    rows.sort_unstable();
    if rows.iter().any(|r| r[0] >= r[1]) || rows.windows(2).any(|w| w[0][1] > w[1][0]) {
        return Err(StoreError::RankRows(format!("are empty or overlap another concept's: {rows:?}")));
    }
    Ok(())
}
