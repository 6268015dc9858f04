//! The manifest's operations: parse and check, plan new versions (lesson, removal), switch,
//! restore, and the retention rule. The types are in the parent module.

use super::{
    check_concepts, concept_token, embedding_name, looks_name, encode_version, fnv64_hex, version_dir, ConceptEntry, FileEntry, Manifest, PendingVersion, StateBlobs,
    StoreError, VersionEntry, FORMAT, KEEP_PREVIOUS, SCHEMA,
};

impl Manifest {
    /// An empty store for `model_id`.
    pub fn new(model_id: &str) -> Self {
        Manifest { format: FORMAT.into(), schema: SCHEMA, model_id: model_id.into(), current: None, versions: vec![] }
    }

    /// Parses and checks a manifest; `file` names it in errors.
    pub fn from_json(bytes: &[u8], file: &str) -> Result<Self, StoreError> {
        let bad = |reason: String| StoreError::Manifest { file: file.into(), reason };
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(format!("not a valid manifest: {e}")))?;
        if m.format != FORMAT {
            return Err(StoreError::Format { file: file.into(), found: m.format });
        }
        if m.schema != SCHEMA {
            return Err(StoreError::Schema { file: file.into(), found: m.schema.to_string(), supported: SCHEMA });
        }
        if let Some(c) = m.current {
            if m.entry(c).is_err() {
                return Err(bad(format!("current version {c} is not listed")));
            }
        }
        Ok(m)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain data (strings, numbers, JSON values) cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Refuses a store made for another model.
    pub fn check_model(&self, model_id: &str, file: &str) -> Result<(), StoreError> {
        if self.model_id == model_id {
            return Ok(());
        }
        Err(StoreError::ModelMismatch { file: file.into(), expected: model_id.into(), found: self.model_id.clone() })
    }

    pub fn available(&self) -> Vec<u32> {
        self.versions.iter().map(|v| v.version).collect()
    }

    pub fn entry(&self, version: u32) -> Result<&VersionEntry, StoreError> {
        self.versions
            .iter()
            .find(|v| v.version == version)
            .ok_or_else(|| StoreError::UnknownVersion { version, available: self.available() })
    }

    /// The current version, `Err(Empty)` before the first commit.
    pub fn current_entry(&self) -> Result<&VersionEntry, StoreError> {
        self.entry(self.current.ok_or(StoreError::Empty)?)
    }

    /// Versions only grow, so a number is never reused for different contents.
    pub fn next_version(&self) -> u32 {
        self.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1
    }

    /// Plans a new version holding `blobs`, child of the current one. `concepts` must name every
    /// concept whose memory or embedding `blobs` holds.
    pub fn plan_new_version(
        &self,
        note: &str,
        concepts: Vec<ConceptEntry>,
        blobs: &StateBlobs,
        lesson: serde_json::Value,
        created_ms: f64,
    ) -> Result<PendingVersion, StoreError> {
        check_concepts(&concepts)?;
        let version = self.next_version();
        let files = encode_version(version, &concepts, blobs)?;
        let entries = files.iter().map(|(path, bytes)| file_entry(path, bytes)).collect();
        let entry = VersionEntry {
            version,
            parent: self.current,
            created_ms,
            note: note.into(),
            concepts,
            files: entries,
            lesson,
        };
        Ok(PendingVersion { entry, files })
    }

    /// Plans a version without `concept`: its entry, embedding and memories go; the shared adapter stays.
    /// `current` is the current version's payload.
    pub fn plan_remove(&self, concept: &str, current: &StateBlobs, created_ms: f64) -> Result<PendingVersion, StoreError> {
        let entry = self.current_entry()?;
        if !entry.concepts.iter().any(|c| c.name == concept) {
            return Err(StoreError::UnknownConcept { name: concept.into(), version: entry.version });
        }
        let concepts = entry.concepts.iter().filter(|c| c.name != concept).cloned().collect();
        let (embedding, looks) = (embedding_name(concept), looks_name(concept));
        let blobs = StateBlobs {
            adapter: current.adapter.iter().filter(|t| t.name != embedding && t.name != looks).cloned().collect(),
            memories: current.memories.iter().filter(|m| m.concept != concept).cloned().collect(),
        };
        let lesson = serde_json::json!({ "removed": concept, "from": entry.version });
        self.plan_new_version(&format!("remove {}", concept_token(concept)), concepts, &blobs, lesson, created_ms)
    }

    /// Makes `version` current again. Only the pointer moves: the edge should decode the version
    /// first, so that a damaged version is never made current.
    pub fn restore(&mut self, version: u32) -> Result<(), StoreError> {
        self.entry(version)?;
        self.current = Some(version);
        Ok(())
    }

    /// Adds a written version and makes it current; returns the version folders (`v{N}`) that the
    /// retention rule drops, to delete only after the manifest is saved.
    pub fn switch_to(&mut self, entry: VersionEntry) -> Vec<String> {
        let version = entry.version;
        self.versions.retain(|v| v.version != version);
        self.versions.push(entry);
        self.versions.sort_by_key(|v| v.version);
        self.current = Some(version);
        self.prune()
    }

    /// Retention: the current version plus the [`KEEP_PREVIOUS`] newest others.
    fn prune(&mut self) -> Vec<String> {
        let current = self.current;
        let mut others: Vec<u32> = self.available().into_iter().filter(|&v| Some(v) != current).collect();
        others.sort_unstable_by(|a, b| b.cmp(a));
        let dropped: Vec<u32> = others.into_iter().skip(KEEP_PREVIOUS).collect();
        self.versions.retain(|v| !dropped.contains(&v.version));
        dropped.into_iter().map(version_dir).collect()
    }

    /// Whether a top-level folder name is a version folder the manifest does not reference (left by
    /// a crash before the switch, or by a failed deletion), so it may be deleted.
    pub fn is_stale_dir(&self, name: &str) -> bool {
        let number = name.strip_prefix('v').filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        match number.and_then(|n| n.parse::<u32>().ok()) {
            Some(v) => self.entry(v).is_err(),
            None => false,
        }
    }
}

fn file_entry(path: &str, bytes: &[u8]) -> FileEntry {
    FileEntry { path: path.into(), bytes: bytes.len() as u64, fnv64: fnv64_hex(bytes) }
}
