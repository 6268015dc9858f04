//! The concept store in IndexedDB: the browser edge of the one store schema
//! (`crate::lifelong::store`: manifest, versions, checksums, retention, export/import), as
//! `src/native_store.rs` is its folder edge.
//!
//! Database [`DB_NAME`], IndexedDB schema [`SCHEMA_VERSION`]:
//! - object store [`MANIFESTS`]: model id -> the store manifest's JSON text (one store per model,
//!   as natively one folder belongs to one model);
//! - object store [`FILES`]: `{model id}/{path}` -> bytes (`Uint8Array`), `path` as the manifest
//!   lists it (`v3/adapter.safetensors`, `v3/memory/0.safetensors`).
//!
//! A change writes the new version's files, the new manifest and the deletion of the versions the
//! retention rule drops in ONE readwrite transaction: a reload, a crash or a full disk in the
//! middle aborts it and the previous version stays current and whole. A full disk comes back as
//! `QuotaError`, with nothing changed.

use js_sys::{Array, Map, Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::future_to_promise;
use web_sys::{IdbDatabase, IdbKeyRange, IdbObjectStore, IdbTransaction, IdbTransactionMode};

use super::error::WebError;
use super::idb;
use crate::lifelong::store::{
    decode_version, export_file, import_file, Manifest, PendingVersion, ShapeCheck, StateBlobs, StoreError, VersionEntry,
};

/// The database the page uses (tests pass another name to start empty).
pub const DB_NAME: &str = "lifelong-diffusion";
/// 2: the lifelong store schema (1 held the pre-lesson test format, never written by a lesson).
pub const SCHEMA_VERSION: u32 = 2;
pub const MANIFESTS: &str = "manifests";
pub const FILES: &str = "files";

fn upgrade(db: &IdbDatabase, old_version: u32) -> Result<(), JsValue> {
    if old_version < 2 {
        // Schema 1 only ever held test data (no lesson wrote it); absent stores throw NotFoundError.
        let _ = db.delete_object_store("concepts");
        let _ = db.delete_object_store("blobs");
        db.create_object_store(MANIFESTS)?;
        db.create_object_store(FILES)?;
    }
    Ok(())
}

/// The store of one model, open.
#[wasm_bindgen]
#[derive(Clone)]
pub struct ConceptStore {
    db: IdbDatabase,
    model_id: String,
}

#[wasm_bindgen]
impl ConceptStore {
    /// Opens (creating or upgrading) the store of `model_id`; `db_name` defaults to the page's.
    pub async fn open(db_name: Option<String>, model_id: String) -> Result<ConceptStore, JsValue> {
        let name = db_name.unwrap_or_else(|| DB_NAME.to_string());
        let db = idb::open(&name, SCHEMA_VERSION, upgrade).await?;
        // Let a newer page upgrade the schema instead of waiting on this connection forever.
        let closer = db.clone();
        let on_change = Closure::<dyn Fn()>::new(move || closer.close());
        db.set_onversionchange(Some(on_change.as_ref().unchecked_ref()));
        on_change.forget(); // one per open database, lives as long as it
        Ok(ConceptStore { db, model_id })
    }

    /// The id of a model given as the `Map` of path -> `Uint8Array` the generator loads: `name`
    /// (the folder's name) plus FNV-1a of the unet, text encoder and VAE files' sizes, heads and
    /// tails: `lifelong::store::model_id`, which the CLI uses too, so exports move between the two.
    #[wasm_bindgen(js_name = modelIdOf)]
    pub fn model_id_of(name: String, files: Map) -> Result<String, JsValue> {
        let files = super::teach::memory_files(&name, &files)?;
        Ok(crate::lifelong::store::model_id(&name, files.files.iter().map(|(p, b)| (p.as_str(), b.as_slice()))))
    }

    #[wasm_bindgen(getter, js_name = modelId)]
    pub fn model_id(&self) -> String {
        self.model_id.clone()
    }

    /// The IndexedDB schema version this build writes.
    #[wasm_bindgen(js_name = schemaVersion)]
    pub fn schema_version() -> u32 {
        SCHEMA_VERSION
    }

    /// Resolves to the manifest as JSON text (`{ model_id, current, versions: [{ version, note,
    /// concepts: [{ name, token, meta }], files, lesson }] }`); an empty store has no versions.
    pub fn manifest(&self) -> Promise {
        let this = self.clone();
        future_to_promise(async move { Ok(String::from_utf8_lossy(&this.read_manifest().await?.to_json()).into_owned().into()) })
    }

    /// A new version without concept `name`; resolves to its number.
    pub fn remove(&self, name: String) -> Promise {
        let this = self.clone();
        future_to_promise(async move {
            let (_, blobs) = this.load(None).await?;
            let pending = this.read_manifest().await?.plan_remove(&name, &blobs, js_sys::Date::now()).map_err(store)?;
            Ok(this.commit(pending).await?.into())
        })
    }

    /// Makes an earlier version current again, after checking it decodes whole.
    pub fn restore(&self, version: u32) -> Promise {
        let this = self.clone();
        future_to_promise(async move {
            this.load(Some(version)).await?;
            let mut manifest = this.read_manifest().await?;
            manifest.restore(version).map_err(store)?;
            this.write(&manifest, &[], &[]).await?;
            Ok(version.into())
        })
    }

    /// The current version (or `version`) as one portable safetensors file (`Uint8Array`), the
    /// same format as `lifelong-diffusion concepts export`.
    #[wasm_bindgen(js_name = exportFile)]
    pub fn export_file(&self, version: Option<u32>) -> Promise {
        let this = self.clone();
        future_to_promise(async move {
            let (entry, blobs) = this.load(version).await?;
            let bytes = export_file(&this.model_id, &entry, &blobs).map_err(store)?;
            Ok(Uint8Array::from(bytes.as_slice()).into())
        })
    }

    /// Imports an exported file as the new current version (it replaces the concepts; the
    /// previous version stays restorable), checked for format, model, names and shapes.
    #[wasm_bindgen(js_name = importFile)]
    pub fn import_file(&self, bytes: Uint8Array) -> Promise {
        let this = self.clone();
        future_to_promise(async move { Ok(this.import_bytes(&bytes.to_vec()).await?.into()) })
    }

    /// Closes the connection (tests reopen the same database after this).
    pub fn close(&self) {
        self.db.close();
    }
}

fn store(e: StoreError) -> WebError {
    match e {
        StoreError::InvalidName { .. } | StoreError::DuplicateConcept(_) | StoreError::UnknownConcept { .. } | StoreError::UnknownVersion { .. } => {
            WebError::InvalidOptions(e.to_string())
        }
        _ => WebError::Store(e.to_string()),
    }
}

impl ConceptStore {
    /// The manifest as stored now (re-read each time: another tab may have changed it).
    pub async fn read_manifest(&self) -> Result<Manifest, WebError> {
        let what = "the concept store's manifest";
        let tx = self.transaction(IdbTransactionMode::Readonly, what)?;
        let req = object_store(&tx, MANIFESTS, what)?.get(&self.model_id.as_str().into()).map_err(|e| idb::store_error(&e, what))?;
        let value = idb::request(req, what).await?;
        match value.as_string() {
            None => Ok(Manifest::new(&self.model_id)),
            Some(json) => {
                let m = Manifest::from_json(json.as_bytes(), "manifest.json").map_err(store)?;
                m.check_model(&self.model_id, "manifest.json").map_err(store)?;
                Ok(m)
            }
        }
    }

    /// Version `version` (the current one for `None`), its files' sizes and checksums checked.
    pub async fn load(&self, version: Option<u32>) -> Result<(VersionEntry, StateBlobs), WebError> {
        let manifest = self.read_manifest().await?;
        let entry = match version {
            Some(v) => manifest.entry(v),
            None => manifest.current_entry(),
        }
        .map_err(store)?
        .clone();
        let what = format!("version {}", entry.version);
        let tx = self.transaction(IdbTransactionMode::Readonly, &what)?;
        let files = object_store(&tx, FILES, &what)?;
        // Every request before the first await (idb.rs).
        let mut pending = Vec::new();
        for f in &entry.files {
            pending.push((f.path.clone(), files.get(&self.key(&f.path).into()).map_err(|e| idb::store_error(&e, &what))?));
        }
        let mut read = Vec::new();
        for (path, req) in pending {
            let value = idb::request(req, &what).await?;
            read.push((path, value.dyn_into::<Uint8Array>().ok().map(|b| b.to_vec())));
        }
        let blobs = decode_version(&entry, |path| {
            read.iter().find(|(p, _)| p == path).and_then(|(_, b)| b.clone()).ok_or(StoreError::FileMissing { file: path.into() })
        })
        .map_err(store)?;
        Ok((entry, blobs))
    }

    /// Makes a planned version current: its files and the manifest switch in one transaction.
    pub async fn commit(&self, pending: PendingVersion) -> Result<u32, WebError> {
        let version = pending.entry.version;
        let mut manifest = self.read_manifest().await?;
        if manifest.next_version() != version {
            return Err(WebError::Store(format!("another tab changed the concept store while version {version} was made; nothing was saved, try again")));
        }
        let dropped = manifest.switch_to(pending.entry);
        self.write(&manifest, &pending.files, &dropped).await?;
        Ok(version)
    }

    async fn import_bytes(&self, bytes: &[u8]) -> Result<u32, WebError> {
        let manifest = self.read_manifest().await?;
        let current = match manifest.current {
            Some(_) => Some(self.load(None).await?.1),
            None => None,
        };
        let check = current.as_ref().map_or(ShapeCheck::Any, |b| ShapeCheck::LikeAdapter(&b.adapter));
        let imported = import_file(bytes, "the imported file", &self.model_id, check).map_err(store)?;
        let version = manifest.next_version();
        let mut concepts = imported.concepts;
        for c in &mut concepts {
            c.added_in = version; // versions of the exporting store mean nothing here
        }
        let pending = manifest.plan_new_version("import", concepts, &imported.blobs, imported.lesson, js_sys::Date::now()).map_err(store)?;
        self.commit(pending).await
    }

    /// One readwrite transaction: `files`, then the manifest, then the deletion of `dropped`
    /// version folders. All requests are issued before the first await.
    async fn write(&self, manifest: &Manifest, files: &[(String, Vec<u8>)], dropped: &[String]) -> Result<(), WebError> {
        let what = "the concept store";
        let tx = self.transaction(IdbTransactionMode::Readwrite, what)?;
        if let Err(e) = self.issue_writes(&tx, manifest, files, dropped, what) {
            // A request refused as it is issued (a full quota can throw at `put`) leaves the
            // earlier ones pending: abort them too, or they would commit orphan files.
            let _ = tx.abort();
            return Err(e);
        }
        idb::committed(tx, what).await
    }

    fn issue_writes(&self, tx: &IdbTransaction, manifest: &Manifest, files: &[(String, Vec<u8>)], dropped: &[String], what: &str) -> Result<(), WebError> {
        let (manifests, blobs) = (object_store(tx, MANIFESTS, what)?, object_store(tx, FILES, what)?);
        let err = |e: JsValue| idb::store_error(&e, what);
        for (path, bytes) in files {
            blobs.put_with_key(&Uint8Array::from(bytes.as_slice()), &self.key(path).into()).map_err(err)?;
        }
        let json = String::from_utf8_lossy(&manifest.to_json()).into_owned();
        manifests.put_with_key(&json.into(), &self.model_id.as_str().into()).map_err(err)?;
        for dir in dropped {
            let range: JsValue = self.folder_range(dir)?.into();
            blobs.delete(&range).map_err(err)?;
        }
        Ok(())
    }

    fn key(&self, path: &str) -> String {
        format!("{}/{path}", self.model_id)
    }

    /// Every key under `{model}/{dir}/`.
    fn folder_range(&self, dir: &str) -> Result<IdbKeyRange, WebError> {
        let lower = self.key(&format!("{dir}/"));
        let upper = format!("{lower}\u{ffff}");
        IdbKeyRange::bound(&JsValue::from(lower), &JsValue::from(upper)).map_err(|e| idb::store_error(&e, "a version folder"))
    }

    fn transaction(&self, mode: IdbTransactionMode, what: &str) -> Result<IdbTransaction, WebError> {
        let names = Array::of2(&MANIFESTS.into(), &FILES.into());
        self.db.transaction_with_str_sequence_and_mode(&names, mode).map_err(|e| idb::store_error(&e, what))
    }
}

fn object_store(tx: &IdbTransaction, name: &str, what: &str) -> Result<IdbObjectStore, WebError> {
    tx.object_store(name).map_err(|e| idb::store_error(&e, what))
}
