//! The folder concept store end to end: commits, loads, restore, remove, export/import, and the
//! crash and corruption cases a user can hit.

use std::fs;
use std::path::PathBuf;

use lifelong_diffusion::lifelong::store::{
    concept_token, embedding_name, ConceptEntry, ConceptMemory, NamedTensor, StateBlobs, StoreError, MANIFEST_FILE,
};
use lifelong_diffusion::native_store::{default_store_dir, FolderStore};
use lifelong_diffusion::Error;

/// A fresh folder under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("ld-store-{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const K: &str = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight";

/// The state after teaching `concepts`; `seed` makes versions differ.
fn state(concepts: &[&str], seed: f32) -> (Vec<ConceptEntry>, StateBlobs) {
    let mut adapter = vec![NamedTensor::new(K, vec![2, 2], vec![seed, 1.0, 2.0, 3.0])];
    adapter.extend(concepts.iter().map(|c| NamedTensor::new(embedding_name(c), vec![3], vec![seed; 3])));
    adapter.sort_by(|a, b| a.name.cmp(&b.name));
    let memories = concepts
        .iter()
        .map(|c| ConceptMemory {
            concept: c.to_string(),
            prompts: vec![format!("a <{c}>")],
            tensors: vec![NamedTensor::new("latents", vec![1, 2], vec![seed, -seed])],
        })
        .collect();
    let entries = concepts
        .iter()
        .enumerate()
        .map(|(i, c)| ConceptEntry { name: c.to_string(), token: concept_token(c), token_id: 49408 + i as i64, added_in: 1, meta: serde_json::Value::Null, rank_rows: None, gated: false })
        .collect();
    (entries, StateBlobs { adapter, memories })
}

fn teach(store: &mut FolderStore, concepts: &[&str], seed: f32) -> u32 {
    let (entries, blobs) = state(concepts, seed);
    store.commit(&format!("teach {}", concept_token(concepts[concepts.len() - 1])), entries, &blobs, serde_json::json!({"seed": seed})).unwrap()
}

#[test]
fn commit_load_restore_remove_round_trip() {
    let tmp = TempDir::new("roundtrip");
    let mut store = FolderStore::open(&tmp.0, "builtin").unwrap();
    assert!(matches!(store.load(None), Err(Error::Store(StoreError::Empty))));
    assert_eq!(teach(&mut store, &["cat"], 1.0), 1);
    assert_eq!(teach(&mut store, &["cat", "dog"], 2.0), 2);
    let reopened = FolderStore::open(&tmp.0, "builtin").unwrap();
    let (entry, blobs) = reopened.load(None).unwrap();
    assert_eq!((entry.version, entry.parent, entry.note.as_str()), (2, Some(1), "teach <dog>"));
    assert_eq!(blobs, state(&["cat", "dog"], 2.0).1);
    assert_eq!(reopened.load(Some(1)).unwrap().1, state(&["cat"], 1.0).1);

    store.restore(1).unwrap();
    assert_eq!(FolderStore::open(&tmp.0, "builtin").unwrap().manifest().current, Some(1));
    store.restore(2).unwrap();
    let v = store.remove("dog").unwrap();
    let (entry, blobs) = store.load(None).unwrap();
    assert_eq!((v, entry.note.as_str()), (3, "remove <dog>"));
    assert_eq!(blobs.memories.len(), 1);
    assert!(!blobs.adapter.iter().any(|t| t.name == embedding_name("dog")));
    assert!(matches!(store.remove("dog"), Err(Error::Store(StoreError::UnknownConcept { .. }))));
    assert!(matches!(store.restore(42), Err(Error::Store(StoreError::UnknownVersion { .. }))));
}

#[test]
fn retention_deletes_old_version_folders() {
    let tmp = TempDir::new("retention");
    let mut store = FolderStore::open(&tmp.0, "builtin").unwrap();
    for i in 0..7 {
        teach(&mut store, &["cat"], i as f32);
    }
    assert_eq!(store.manifest().available(), [3, 4, 5, 6, 7]);
    assert!(!tmp.0.join("v1").exists() && !tmp.0.join("v2").exists() && tmp.0.join("v3/adapter.safetensors").exists());
}

#[test]
fn crash_before_the_switch_leaves_the_previous_version() {
    let tmp = TempDir::new("crash");
    let mut store = FolderStore::open(&tmp.0, "builtin").unwrap();
    teach(&mut store, &["cat"], 1.0);
    // A lesson that wrote all its blobs (the real first step) and a half-written manifest, then died.
    let (entries, blobs) = state(&["cat", "dog"], 2.0);
    let pending = store.manifest().plan_new_version("teach <dog>", entries, &blobs, serde_json::Value::Null, 0.0).unwrap();
    store.stage(&pending).unwrap();
    assert!(tmp.0.join("v2/adapter.safetensors").exists());
    fs::write(tmp.0.join(format!("{MANIFEST_FILE}.tmp")), b"{\"format\": \"lifelong-dif").unwrap();
    fs::create_dir_all(tmp.0.join("v9/memory")).unwrap();
    drop(store);

    let mut store = FolderStore::open(&tmp.0, "builtin").unwrap();
    let (entry, blobs) = store.load(None).unwrap();
    assert_eq!((entry.version, blobs), (1, state(&["cat"], 1.0).1));
    assert!(!tmp.0.join("v2").exists() && !tmp.0.join("v9").exists() && !tmp.0.join("manifest.json.tmp").exists());
    assert_eq!(teach(&mut store, &["cat", "dog"], 3.0), 2);
}

#[test]
fn corrupted_blob_is_named() {
    let tmp = TempDir::new("corrupt");
    let mut store = FolderStore::open(&tmp.0, "builtin").unwrap();
    teach(&mut store, &["cat"], 1.0);
    let blob = tmp.0.join("v1/memory/0.safetensors");
    let mut bytes = fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    fs::write(&blob, bytes).unwrap();
    let e = store.load(None).unwrap_err().to_string();
    assert!(e.contains("v1/memory/0.safetensors") && e.contains("checksum"), "{e}");
    fs::remove_file(&blob).unwrap();
    let e = store.load(None).unwrap_err().to_string();
    assert!(e.contains("missing") && e.contains("0.safetensors"), "{e}");
}

#[test]
fn export_import_round_trip_and_refusals() {
    let tmp = TempDir::new("export");
    let mut store = FolderStore::open(tmp.0.join("a"), "builtin").unwrap();
    teach(&mut store, &["cat", "dog"], 2.0);
    let file = tmp.0.join("concepts.safetensors");
    store.export(None, &file).unwrap();

    let mut other = FolderStore::open(tmp.0.join("b"), "builtin").unwrap();
    teach(&mut other, &["cow"], 5.0);
    let v = other.import(&file).unwrap();
    let (entry, blobs) = other.load(None).unwrap();
    assert_eq!((v, entry.note.as_str()), (2, "import"));
    assert!(entry.concepts.iter().all(|c| c.added_in == 2));
    assert_eq!(blobs, state(&["cat", "dog"], 2.0).1);

    let mut foreign = FolderStore::open(tmp.0.join("c"), "sd15").unwrap();
    let e = foreign.import(&file).unwrap_err().to_string();
    assert!(e.contains("`builtin`") && e.contains("`sd15`"), "{e}");
    assert!(foreign.manifest().versions.is_empty());

    let bytes = fs::read(&file).unwrap();
    let cut = tmp.0.join("cut.safetensors");
    fs::write(&cut, &bytes[..bytes.len() - 7]).unwrap();
    let e = other.import(&cut).unwrap_err().to_string();
    assert!(e.contains("cut.safetensors") && e.contains("truncated"), "{e}");
    assert_eq!(other.manifest().current, Some(2));
}

#[test]
fn a_store_for_another_model_is_refused() {
    let tmp = TempDir::new("model");
    let mut store = FolderStore::open(&tmp.0, "builtin").unwrap();
    teach(&mut store, &["cat"], 1.0);
    let e = FolderStore::open(&tmp.0, "sd15").unwrap_err().to_string();
    assert!(e.contains("`builtin`") && e.contains("`sd15`"), "{e}");
}

#[test]
fn default_dir_follows_xdg() {
    // Only reads the environment; other tests do not depend on it.
    let dir = default_store_dir().unwrap();
    assert!(dir.ends_with("lifelong-diffusion/concepts"), "{}", dir.display());
}
