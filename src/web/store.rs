//! The concept store in IndexedDB: one typed wrapper over the schema below.
//!
//! Schema version [`SCHEMA_VERSION`] of database [`DB_NAME`]:
//! - store [`CONCEPTS`]: concept name -> its manifest (JSON text, [`Manifest`]);
//! - store [`BLOBS`]: `name/v{version}/{path}` -> bytes (`Uint8Array`), the files a manifest lists.
//!
//! A save writes the new version's blobs, the manifest and the removal of the old version's blobs
//! in one readwrite transaction: a reload, a crash or a full disk in the middle aborts it, and the
//! previous version stays whole. Quota errors come back as `QuotaError`, with nothing changed.

use std::collections::HashMap;

use js_sys::{Array, Map, Promise, Uint8Array};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::future_to_promise;
use web_sys::{IdbDatabase, IdbTransactionMode};

use super::error::WebError;
use super::idb;

/// The database the page uses (tests pass another name to start empty).
pub const DB_NAME: &str = "lifelong-diffusion";
/// Bump with a migration in [`upgrade`] whenever the stores or the manifest change shape.
pub const SCHEMA_VERSION: u32 = 1;
pub const CONCEPTS: &str = "concepts";
pub const BLOBS: &str = "blobs";
/// `format` of every manifest, so an exported file says what it is.
pub const FORMAT: &str = "lifelong-diffusion-concept";

/// What the store keeps per concept; the lesson (issue 5) fills `meta`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub schema: u32,
    pub name: String,
    /// 1 for the first save, +1 for each save of the same name.
    pub version: u32,
    pub files: Vec<FileEntry>,
    /// Free-form lesson data (token, base model, steps, loss, ...).
    #[serde(default)]
    pub meta: serde_json::Value,
    /// Milliseconds since the Unix epoch.
    pub saved_at: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub bytes: usize,
}

fn blob_key(name: &str, version: u32, path: &str) -> String {
    format!("{name}/v{version}/{path}")
}

fn check_name(name: &str) -> Result<(), WebError> {
    let ok = !name.trim().is_empty() && name.chars().count() <= 64 && !name.contains('/') && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(WebError::InvalidOptions(format!("concept name {name:?} must be 1-64 characters, without '/' or control characters")))
    }
}

fn upgrade(db: &IdbDatabase, old_version: u32) -> Result<(), JsValue> {
    if old_version < 1 {
        db.create_object_store(CONCEPTS)?;
        db.create_object_store(BLOBS)?;
    }
    Ok(())
}

/// The concept store, open.
#[wasm_bindgen]
#[derive(Clone)]
pub struct ConceptStore {
    db: IdbDatabase,
}

#[wasm_bindgen]
impl ConceptStore {
    /// Opens (creating or upgrading) the store; `db_name` defaults to the page's database.
    pub async fn open(db_name: Option<String>) -> Result<ConceptStore, JsValue> {
        let name = db_name.unwrap_or_else(|| DB_NAME.to_string());
        let db = idb::open(&name, SCHEMA_VERSION, upgrade).await?;
        // Let a newer page upgrade the schema instead of waiting on this connection forever.
        let closer = db.clone();
        let on_change = Closure::<dyn Fn()>::new(move || closer.close());
        db.set_onversionchange(Some(on_change.as_ref().unchecked_ref()));
        on_change.forget(); // one per open database, lives as long as it
        Ok(ConceptStore { db })
    }

    /// The schema version this build writes.
    #[wasm_bindgen(js_name = schemaVersion)]
    pub fn schema_version() -> u32 {
        SCHEMA_VERSION
    }

    /// Saves `files` (a `Map` of path -> `Uint8Array`) as the next version of concept `name`,
    /// atomically. Resolves to the new manifest's JSON.
    pub fn put(&self, name: String, meta_json: String, files: Map) -> Promise {
        let this = self.clone();
        future_to_promise(async move { this.put_impl(name, meta_json, files).await.map(JsValue::from) })
    }

    /// Resolves to `{ manifest, files }` (manifest JSON, a `Map` of path -> `Uint8Array`), or
    /// `null` when there is no concept `name`.
    pub fn get(&self, name: String) -> Promise {
        let this = self.clone();
        future_to_promise(async move { this.get_impl(name).await })
    }

    /// Resolves to every concept's manifest JSON (an array of strings), sorted by name.
    pub fn list(&self) -> Promise {
        let this = self.clone();
        future_to_promise(async move { this.list_impl().await.map(|v| v.into_iter().map(JsValue::from).collect::<Array>().into()) })
    }

    /// Removes concept `name` and its files in one transaction. Resolves to whether it existed.
    pub fn remove(&self, name: String) -> Promise {
        let this = self.clone();
        future_to_promise(async move { this.remove_impl(name).await.map(JsValue::from) })
    }

    /// Closes the connection (tests reopen the same database after this).
    pub fn close(&self) {
        self.db.close();
    }
}

impl ConceptStore {
    /// Saves `files` (a `Map` of path -> `Uint8Array`) as the next version of concept `name`,
    /// atomically. Resolves to the new manifest's JSON.
    async fn put_impl(&self, name: String, meta_json: String, files: Map) -> Result<String, JsValue> {
        check_name(&name)?;
        let meta: serde_json::Value = serde_json::from_str(&meta_json).map_err(|e| WebError::InvalidOptions(format!("meta: {e}")))?;
        let files = file_map(&files)?;
        let old = self.manifest(&name).await?;
        let mut entries: Vec<FileEntry> = files.iter().map(|(path, bytes)| FileEntry { path: path.clone(), bytes: bytes.length() as usize }).collect();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let manifest = Manifest {
            format: FORMAT.into(),
            schema: SCHEMA_VERSION,
            name: name.clone(),
            version: old.as_ref().map_or(1, |m| m.version + 1),
            files: entries,
            meta,
            saved_at: js_sys::Date::now(),
        };
        let json = serde_json::to_string(&manifest).map_err(|e| WebError::Store(e.to_string()))?;
        let what = format!("concept {name:?}");
        let tx = self.transaction(IdbTransactionMode::Readwrite, &what)?;
        let (concepts, blobs) = stores(&tx, &what)?;
        // Every request before any await (see idb.rs).
        for (path, bytes) in &files {
            blobs.put_with_key(bytes, &blob_key(&name, manifest.version, path).into()).map_err(|e| idb::store_error(&e, &what))?;
        }
        concepts.put_with_key(&JsValue::from_str(&json), &name.as_str().into()).map_err(|e| idb::store_error(&e, &what))?;
        for entry in old.iter().flat_map(|m| m.files.iter().map(move |f| blob_key(&m.name, m.version, &f.path))) {
            blobs.delete(&entry.into()).map_err(|e| idb::store_error(&e, &what))?;
        }
        idb::committed(tx, &what).await?;
        Ok(json)
    }

    /// Resolves to `{ manifest, files }` (manifest JSON, a `Map` of path -> `Uint8Array`), or
    /// `null` when there is no concept `name`.
    async fn get_impl(&self, name: String) -> Result<JsValue, JsValue> {
        let Some(manifest) = self.manifest(&name).await? else { return Ok(JsValue::NULL) };
        let what = format!("concept {name:?}");
        let tx = self.transaction(IdbTransactionMode::Readonly, &what)?;
        let (_, blobs) = stores(&tx, &what)?;
        let mut pending = Vec::new();
        for f in &manifest.files {
            let key = blob_key(&name, manifest.version, &f.path);
            pending.push((f.path.clone(), blobs.get(&key.into()).map_err(|e| idb::store_error(&e, &what))?));
        }
        let files = Map::new();
        for (path, req) in pending {
            let value = idb::request(req, &what).await?;
            if value.is_undefined() {
                return Err(WebError::Store(format!("{what}: file {path} is missing; remove the concept and import it again")).into());
            }
            files.set(&path.into(), &value);
        }
        let json = serde_json::to_string(&manifest).map_err(|e| WebError::Store(e.to_string()))?;
        let out = js_sys::Object::new();
        js_sys::Reflect::set(&out, &"manifest".into(), &json.into())?;
        js_sys::Reflect::set(&out, &"files".into(), &files)?;
        Ok(out.into())
    }

    /// Resolves to every concept's manifest JSON, sorted by name.
    async fn list_impl(&self) -> Result<Vec<String>, JsValue> {
        let tx = self.transaction(IdbTransactionMode::Readonly, "the concept list")?;
        let (concepts, _) = stores(&tx, "the concept list")?;
        let all = concepts.get_all().map_err(|e| idb::store_error(&e, "the concept list"))?;
        let values: Array = idb::request(all, "the concept list").await?.unchecked_into();
        let mut out: Vec<String> = values.iter().filter_map(|v| v.as_string()).collect();
        out.sort_by_key(|json| serde_json::from_str::<Manifest>(json).map(|m| m.name).unwrap_or_default());
        Ok(out)
    }

    /// Removes concept `name` and its files in one transaction. Resolves to whether it existed.
    async fn remove_impl(&self, name: String) -> Result<bool, JsValue> {
        let Some(manifest) = self.manifest(&name).await? else { return Ok(false) };
        let what = format!("concept {name:?}");
        let tx = self.transaction(IdbTransactionMode::Readwrite, &what)?;
        let (concepts, blobs) = stores(&tx, &what)?;
        concepts.delete(&name.as_str().into()).map_err(|e| idb::store_error(&e, &what))?;
        for f in &manifest.files {
            blobs.delete(&blob_key(&name, manifest.version, &f.path).into()).map_err(|e| idb::store_error(&e, &what))?;
        }
        idb::committed(tx, &what).await?;
        Ok(true)
    }

    fn transaction(&self, mode: IdbTransactionMode, what: &str) -> Result<web_sys::IdbTransaction, WebError> {
        let names = Array::of2(&CONCEPTS.into(), &BLOBS.into());
        self.db.transaction_with_str_sequence_and_mode(&names, mode).map_err(|e| idb::store_error(&e, what))
    }

    async fn manifest(&self, name: &str) -> Result<Option<Manifest>, WebError> {
        let what = format!("concept {name:?}");
        let tx = self.transaction(IdbTransactionMode::Readonly, &what)?;
        let (concepts, _) = stores(&tx, &what)?;
        let req = concepts.get(&name.into()).map_err(|e| idb::store_error(&e, &what))?;
        let value = idb::request(req, &what).await?;
        let Some(json) = value.as_string() else { return Ok(None) };
        let manifest: Manifest = serde_json::from_str(&json).map_err(|e| WebError::Store(format!("{what}: unreadable manifest ({e}); remove it and import it again")))?;
        Ok(Some(manifest))
    }
}

fn stores(tx: &web_sys::IdbTransaction, what: &str) -> Result<(web_sys::IdbObjectStore, web_sys::IdbObjectStore), WebError> {
    let concepts = tx.object_store(CONCEPTS).map_err(|e| idb::store_error(&e, what))?;
    let blobs = tx.object_store(BLOBS).map_err(|e| idb::store_error(&e, what))?;
    Ok((concepts, blobs))
}

/// A JS `Map` of path -> `Uint8Array`, checked.
fn file_map(files: &Map) -> Result<HashMap<String, Uint8Array>, WebError> {
    let mut out = HashMap::new();
    for entry in files.entries() {
        let pair: Array = entry.map_err(|e| WebError::InvalidOptions(super::error::js_message(&e)))?.unchecked_into();
        let path = pair.get(0).as_string().ok_or_else(|| WebError::InvalidOptions("file paths must be strings".into()))?;
        let bytes = pair.get(1).dyn_into::<Uint8Array>().map_err(|_| WebError::InvalidOptions(format!("{path}: bytes must be a Uint8Array")))?;
        out.insert(path, bytes);
    }
    if out.is_empty() {
        return Err(WebError::InvalidOptions("a concept needs at least one file".into()));
    }
    Ok(out)
}
