use super::*;

fn concept(name: &str, v: u32) -> ConceptEntry {
    ConceptEntry { name: name.into(), token: concept_token(name), token_id: 49408, added_in: v, meta: serde_json::json!({"lr": 1e-3}), rank_rows: None, gated: false }
}

fn lora(name: &str) -> NamedTensor {
    NamedTensor::new(name, vec![2, 3], vec![0.5, -1.0, 2.0, 0.0, 1e-3, 7.25])
}

fn memory(c: &str) -> ConceptMemory {
    ConceptMemory {
        concept: c.into(),
        prompts: vec![format!("a <{c}>"), format!("a <{c}> on the \"left\"")],
        tensors: vec![NamedTensor::new("features", vec![3], vec![1.0, 2.0, 3.0]), NamedTensor::new("latents", vec![1, 2, 1, 1], vec![0.1, 0.2])],
    }
}

const K: &str = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight";
const V: &str = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v.lora_B.weight";

fn state(concepts: &[&str]) -> (Vec<ConceptEntry>, StateBlobs) {
    let mut adapter = vec![lora(K), lora(V)];
    adapter.extend(concepts.iter().map(|c| NamedTensor::new(embedding_name(c), vec![4], vec![0.25; 4])));
    adapter.sort_by(|a, b| a.name.cmp(&b.name));
    let entries = concepts.iter().map(|c| concept(c, 1)).collect();
    (entries, StateBlobs { adapter, memories: concepts.iter().map(|c| memory(c)).collect() })
}

fn files_of(p: &PendingVersion) -> impl FnMut(&str) -> Result<Vec<u8>, StoreError> + '_ {
    move |path| p.files.iter().find(|(f, _)| f == path).map(|(_, b)| b.clone()).ok_or(StoreError::FileMissing { file: path.into() })
}

#[test]
fn names_are_validated() {
    for ok in ["cat", "my_cat-2", &"a".repeat(48)] {
        assert!(validate_concept_name(ok).is_ok(), "{ok}");
    }
    for bad in ["", "Cat", "my cat", "cät", "a/b", "<cat>", &"a".repeat(49)] {
        let e = validate_concept_name(bad).unwrap_err();
        assert!(e.to_string().contains("a-z, 0-9"), "{e}");
    }
}

#[test]
fn version_round_trip() {
    let (concepts, blobs) = state(&["cat", "dog"]);
    let m = Manifest::new("builtin");
    let p = m.plan_new_version("teach <dog>", concepts.clone(), &blobs, serde_json::json!({"steps": 10}), 5.0).unwrap();
    assert_eq!(p.entry.version, 1);
    let paths: Vec<&str> = p.files.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(paths, [adapter_path(1), memory_path(1, 0), memory_path(1, 1)]);
    assert_eq!(p.entry.files[0].fnv64, fnv64_hex(&p.files[0].1));
    let back = decode_version(&p.entry, files_of(&p)).unwrap();
    assert_eq!(back, blobs);
}

/// A routed state's blocks survive a version and an export; partial or overlapping blocks are
/// refused before anything is written.
#[test]
fn rank_rows_round_trip_and_are_checked() {
    let (mut concepts, blobs) = state(&["cat", "dog"]);
    concepts[0].rank_rows = Some([0, 8]);
    concepts[1].rank_rows = Some([8, 16]);
    let m = Manifest::new("builtin");
    let p = m.plan_new_version("teach <dog>", concepts.clone(), &blobs, serde_json::json!({}), 5.0).unwrap();
    assert_eq!(p.entry.concepts, concepts);
    let json = serde_json::to_string(&p.entry.concepts[0]).unwrap();
    assert!(json.contains("\"rank_rows\":[0,8]"), "{json}");
    assert!(!serde_json::to_string(&concept("cat", 1)).unwrap().contains("rank_rows"), "a shared state's entries stay as before");
    for (rows, why) in [([Some([0, 8]), None], "some concepts only"), ([Some([0, 8]), Some([4, 12])], "overlap"), ([Some([0, 8]), Some([9, 9])], "empty")] {
        let mut bad = concepts.clone();
        bad[0].rank_rows = rows[0];
        bad[1].rank_rows = rows[1];
        let e = m.plan_new_version("x", bad, &blobs, serde_json::json!({}), 5.0).unwrap_err();
        assert!(e.to_string().contains(why), "{e}");
    }
}

#[test]
fn fnv64_known_values() {
    assert_eq!(fnv64_hex(b""), "cbf29ce484222325");
    assert_eq!(fnv64_hex(b"a"), "af63dc4c8601ec8c");
}

#[test]
fn decode_rejects_damage() {
    let (concepts, blobs) = state(&["cat"]);
    let p = Manifest::new("m").plan_new_version("t", concepts, &blobs, serde_json::Value::Null, 0.0).unwrap();
    let mut flipped = p.clone();
    let last = flipped.files[0].1.len() - 1;
    flipped.files[0].1[last] ^= 1;
    let e = decode_version(&p.entry, files_of(&flipped)).unwrap_err();
    assert!(matches!(&e, StoreError::Checksum { file, .. } if file == "v1/adapter.safetensors"), "{e}");
    let mut short = p.clone();
    short.files[1].1.truncate(10);
    let e = decode_version(&p.entry, files_of(&short)).unwrap_err();
    assert!(matches!(&e, StoreError::FileSize { file, .. } if file == "v1/memory/0.safetensors"), "{e}");
    let mut gone = p.clone();
    gone.files.remove(1);
    assert!(matches!(decode_version(&p.entry, files_of(&gone)), Err(StoreError::FileMissing { .. })));
}

#[test]
fn encode_rejects_bad_state() {
    let m = Manifest::new("m");
    let (concepts, mut blobs) = state(&["cat"]);
    blobs.adapter[0].data[1] = f32::NAN;
    assert!(matches!(m.plan_new_version("t", concepts.clone(), &blobs, serde_json::Value::Null, 0.0), Err(StoreError::BadTensor { .. })));
    let (_, mut blobs) = state(&["cat"]);
    blobs.adapter[0].shape = vec![7];
    let e = m.plan_new_version("t", concepts.clone(), &blobs, serde_json::Value::Null, 0.0).unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
    let (_, blobs) = state(&["cat", "dog"]);
    assert!(matches!(m.plan_new_version("t", concepts.clone(), &blobs, serde_json::Value::Null, 0.0), Err(StoreError::Manifest { .. })));
    let (_, blobs) = state(&[]);
    assert!(matches!(m.plan_new_version("t", concepts.clone(), &blobs, serde_json::Value::Null, 0.0), Err(StoreError::MissingTensor { .. })));
    let (twice, blobs) = state(&["cat", "cat"]);
    assert!(matches!(m.plan_new_version("t", twice, &blobs, serde_json::Value::Null, 0.0), Err(StoreError::DuplicateConcept(_))));
    let (mut bad, blobs) = state(&["cat"]);
    bad[0].name = "Cat".into();
    assert!(matches!(m.plan_new_version("t", bad, &blobs, serde_json::Value::Null, 0.0), Err(StoreError::InvalidName { .. })));
}

/// Commits `n` versions of one concept and returns the manifest and the folders each switch dropped.
fn history(n: u32) -> (Manifest, Vec<String>) {
    let mut m = Manifest::new("m");
    let (concepts, blobs) = state(&["cat"]);
    let mut dropped = vec![];
    for _ in 0..n {
        let p = m.plan_new_version("t", concepts.clone(), &blobs, serde_json::Value::Null, 0.0).unwrap();
        dropped.extend(m.switch_to(p.entry));
    }
    (m, dropped)
}

#[test]
fn retention_keeps_current_and_four_previous() {
    let (m, dropped) = history(7);
    assert_eq!(m.available(), [3, 4, 5, 6, 7]);
    assert_eq!(dropped, ["v1", "v2"]);
    assert_eq!(m.current, Some(7));
    assert!(m.is_stale_dir("v2") && m.is_stale_dir("v8") && !m.is_stale_dir("v3") && !m.is_stale_dir("memory"));
}

#[test]
fn restore_moves_the_pointer_and_keeps_it() {
    let (mut m, _) = history(6);
    m.restore(2).unwrap();
    assert_eq!(m.current, Some(2));
    assert!(matches!(m.restore(1), Err(StoreError::UnknownVersion { version: 1, .. })));
    let (concepts, blobs) = state(&["cat"]);
    let p = m.plan_new_version("t", concepts, &blobs, serde_json::Value::Null, 0.0).unwrap();
    assert_eq!((p.entry.version, p.entry.parent), (7, Some(2)));
    assert_eq!(m.switch_to(p.entry), ["v2"]);
}

#[test]
fn remove_drops_embedding_and_memory() {
    let mut m = Manifest::new("m");
    let (concepts, blobs) = state(&["cat", "dog"]);
    let p = m.plan_new_version("t", concepts, &blobs, serde_json::Value::Null, 0.0).unwrap();
    m.switch_to(p.entry);
    let r = m.plan_remove("cat", &blobs, 1.0).unwrap();
    assert_eq!(r.entry.note, "remove <cat>");
    assert_eq!(r.entry.concepts.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["dog"]);
    let back = decode_version(&r.entry, files_of(&r)).unwrap();
    assert_eq!(back, state(&["dog"]).1);
    assert!(matches!(m.plan_remove("cow", &blobs, 1.0), Err(StoreError::UnknownConcept { .. })));
    assert!(matches!(Manifest::new("m").plan_remove("cat", &blobs, 1.0), Err(StoreError::Empty)));
}

#[test]
fn manifest_json_round_trip_and_checks() {
    let (m, _) = history(2);
    assert_eq!(Manifest::from_json(&m.to_json(), "manifest.json").unwrap(), m);
    assert!(matches!(Manifest::from_json(b"{nope", "f"), Err(StoreError::Manifest { .. })));
    let mut other = m.clone();
    other.schema = 9;
    assert!(matches!(Manifest::from_json(&other.to_json(), "f"), Err(StoreError::Schema { .. })));
    other.schema = SCHEMA;
    other.format = "x".into();
    assert!(matches!(Manifest::from_json(&other.to_json(), "f"), Err(StoreError::Format { .. })));
    let e = m.check_model("other", "f").unwrap_err().to_string();
    assert!(e.contains("`m`") && e.contains("`other`"), "{e}");
}

fn exported(model: &str) -> (VersionEntry, StateBlobs, Vec<u8>) {
    let (concepts, blobs) = state(&["cat", "dog"]);
    let p = Manifest::new(model).plan_new_version("t", concepts, &blobs, serde_json::json!({"steps": 3}), 0.0).unwrap();
    let bytes = export_file(model, &p.entry, &blobs).unwrap();
    (p.entry, blobs, bytes)
}

#[test]
fn export_import_round_trip() {
    let (entry, blobs, bytes) = exported("builtin");
    let got = import_file(&bytes, "x.safetensors", "builtin", ShapeCheck::LikeAdapter(&state(&["cow"]).1.adapter)).unwrap();
    assert_eq!(got, Imported { concepts: entry.concepts.clone(), blobs: blobs.clone(), lesson: entry.lesson.clone() });
    let shape_of = |n: &str| (n == K || n == V).then(|| vec![2, 3]).or(embedding_concept(n).map(|_| vec![4]));
    assert!(import_file(&bytes, "x", "builtin", ShapeCheck::Expected(&shape_of)).is_ok());
}

#[test]
fn import_rejects_foreign_and_broken_files() {
    let (_, _, bytes) = exported("builtin");
    let e = import_file(&bytes, "x.safetensors", "sd15", ShapeCheck::Any).unwrap_err();
    assert!(matches!(&e, StoreError::ModelMismatch { found, expected, .. } if found == "builtin" && expected == "sd15"), "{e}");
    for cut in [0, 5, 20, bytes.len() / 2, bytes.len() - 1] {
        let e = import_file(&bytes[..cut], "x.safetensors", "builtin", ShapeCheck::Any).unwrap_err();
        assert!(matches!(e, StoreError::Safetensors { .. }), "{cut}: {e}");
    }
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    assert!(import_file(&garbage, "g", "builtin", ShapeCheck::Any).is_err());
    for i in 0..3 {
        // i = 0 is the embedding, 1 and 2 are LoRA tensors.
        let mut wide = state(&["cow"]).1.adapter;
        wide[i].shape = vec![3, 2];
        let e = import_file(&bytes, "x", "builtin", ShapeCheck::LikeAdapter(&wide)).unwrap_err();
        assert!(matches!(e, StoreError::ShapeMismatch { .. }), "{e}");
    }
    let mut more = state(&["cow"]).1.adapter;
    more.push(lora("unet.mid_block.lora_A.weight"));
    assert!(matches!(import_file(&bytes, "x", "builtin", ShapeCheck::LikeAdapter(&more)), Err(StoreError::MissingTensor { .. })));
    let none = |_: &str| None;
    assert!(matches!(import_file(&bytes, "x", "builtin", ShapeCheck::Expected(&none)), Err(StoreError::UnexpectedTensor { .. })));
}

/// A hand-made safetensors file with the export metadata and one tensor of `dtype`.
fn raw_export(dtype: safetensors::Dtype, shape: Vec<usize>, data: &[u8], format: &str) -> Vec<u8> {
    let view = safetensors::tensor::TensorView::new(dtype, shape, data).unwrap();
    let meta = std::collections::HashMap::from([
        ("format".to_string(), format.to_string()),
        ("schema".to_string(), "1".to_string()),
        ("model_id".to_string(), "m".to_string()),
        ("concepts".to_string(), "[]".to_string()),
        ("memories".to_string(), "[]".to_string()),
    ]);
    safetensors::serialize([("adapter/w".to_string(), view)], Some(meta)).unwrap()
}

#[test]
fn import_checks_dtypes_values_and_format() {
    let half: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect();
    let got = import_file(&raw_export(safetensors::Dtype::F16, vec![2], &half, EXPORT_FORMAT), "h", "m", ShapeCheck::Any).unwrap();
    assert_eq!(got.blobs.adapter, [NamedTensor::new("w", vec![2], vec![1.5, -2.0])]);
    let e = import_file(&raw_export(safetensors::Dtype::I32, vec![1], &[0; 4], EXPORT_FORMAT), "i", "m", ShapeCheck::Any).unwrap_err();
    assert!(matches!(e, StoreError::Dtype { .. }), "{e}");
    let nan = f32::NAN.to_le_bytes();
    let e = import_file(&raw_export(safetensors::Dtype::F32, vec![1], &nan, EXPORT_FORMAT), "n", "m", ShapeCheck::Any).unwrap_err();
    assert!(e.to_string().contains("NaN"), "{e}");
    let e = import_file(&raw_export(safetensors::Dtype::F32, vec![1], &[0; 4], "other"), "o", "m", ShapeCheck::Any).unwrap_err();
    assert!(matches!(e, StoreError::Format { .. }), "{e}");
}

#[test]
fn model_id_reads_only_the_weights_and_configs_in_a_fixed_order() {
    let big = vec![7u8; 200_000];
    let files = [("vae/config.json", &b"{}"[..]), ("unet/model.safetensors", &big[..]), ("unet/config.json", &b"{\"a\":1}"[..])];
    let id = model_id("builtin", files);
    assert!(id.starts_with("builtin-") && id.len() == "builtin-".len() + 16, "{id}");
    // Order of the input, tokenizer/scheduler files and nested folders do not matter.
    let shuffled = [files[2], ("tokenizer/vocab.json", &b"x"[..]), files[1], ("unet/sub/x.json", &b"y"[..]), files[0]];
    assert_eq!(model_id("builtin", shuffled), id);
    // A changed weight (inside the hashed head) or a changed length changes it.
    let mut other = big.clone();
    other[10] = 8;
    assert_ne!(model_id("builtin", [files[0], ("unet/model.safetensors", &other[..]), files[2]]), id);
    assert_ne!(model_id("builtin", [files[0], ("unet/model.safetensors", &big[..199_999]), files[2]]), id);
    assert_ne!(model_id("other", files), id);
}

fn with_looks(concepts: &[&str], looks_of: &str, shape: Vec<usize>) -> (Vec<ConceptEntry>, StateBlobs) {
    let (entries, mut blobs) = state(concepts);
    let n = shape.iter().product();
    blobs.adapter.push(NamedTensor::new(looks_name(looks_of), shape, vec![0.5; n]));
    blobs.adapter.sort_by(|a, b| a.name.cmp(&b.name));
    (entries, blobs)
}

#[test]
fn looks_travel_with_their_concept_and_are_checked() {
    let len = crate::lifelong::selfcheck::SIGNATURE_LEN;
    let mut m = Manifest::new("builtin");
    let (concepts, blobs) = with_looks(&["cat", "dog"], "cat", vec![2, len]);
    let p = m.plan_new_version("t", concepts.clone(), &blobs, serde_json::Value::Null, 0.0).unwrap();
    assert_eq!(decode_version(&p.entry, files_of(&p)).unwrap(), blobs, "stored and read back");
    m.switch_to(p.entry.clone());
    let removed = m.plan_remove("cat", &blobs, 1.0).unwrap();
    assert_eq!(decode_version(&removed.entry, files_of(&removed)).unwrap(), state(&["dog"]).1, "removing a concept drops its looks");
    // Exported and imported into a store whose adapter has no looks yet.
    let bytes = export_file("builtin", &p.entry, &blobs).unwrap();
    let got = import_file(&bytes, "x.safetensors", "builtin", ShapeCheck::LikeAdapter(&state(&["cow"]).1.adapter)).unwrap();
    assert_eq!(got.blobs, blobs);
    // Looks of a concept that is not listed, or of a shape no lesson writes, are refused.
    let (_, orphan) = with_looks(&["cat"], "cow", vec![1, len]);
    let e = Manifest::new("builtin").plan_new_version("t", concepts[..1].to_vec(), &orphan, serde_json::Value::Null, 0.0).unwrap_err();
    assert!(e.to_string().contains("cow"), "{e}");
    for shape in [vec![2, 10], vec![0, len], vec![MAX_LOOKS + 1, len], vec![len]] {
        let (c, bad) = with_looks(&["cat"], "cat", shape.clone());
        let e = Manifest::new("builtin").plan_new_version("t", c, &bad, serde_json::Value::Null, 0.0).unwrap_err();
        assert!(matches!(e, StoreError::BadTensor { .. }), "{shape:?}: {e}");
    }
}
