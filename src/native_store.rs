//! Native edge of the concept store: a folder holding `manifest.json` and one `v{N}/` folder of
//! blobs per kept version (schema in `src/lifelong/store.rs`). Not built for wasm32.
//!
//! A change is atomic: the new version's blobs go to a fresh `v{N}/` (each via temp file + fsync +
//! rename), then `manifest.json.tmp` + fsync + rename switches to it, and only then are the folders
//! the retention rule drops deleted. The manifest rename is the only switch, so a crash at any point
//! leaves the previous manifest and its blobs; leftovers are cleaned on the next open.
//! One process at a time: there is no lock between processes sharing a folder.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::lifelong::store::{
    decode_version, export_file, import_file, ConceptEntry, Manifest, PendingVersion, ShapeCheck, StateBlobs, StoreError, VersionEntry,
    MANIFEST_FILE,
};

/// Where the CLI keeps concepts unless `--store` says otherwise: `$XDG_DATA_HOME/lifelong-diffusion/concepts`,
/// else `~/.local/share/lifelong-diffusion/concepts`.
pub fn default_store_dir() -> Result<PathBuf> {
    // The XDG spec says to ignore a relative XDG_DATA_HOME.
    let xdg = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from).filter(|p| p.is_absolute());
    let home = || std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".local").join("share"));
    let base = xdg
        .or_else(home)
        .ok_or_else(|| Error::InvalidInput("neither XDG_DATA_HOME nor HOME is set; pass --store DIR".into()))?;
    Ok(base.join("lifelong-diffusion").join("concepts"))
}

fn write_err(path: &Path, source: std::io::Error) -> Error {
    // ENOSPC is 28 on Linux and macOS; older kernels/filesystems may not map it to StorageFull.
    let full = source.kind() == ErrorKind::StorageFull || source.raw_os_error() == Some(28);
    let path = path.display().to_string();
    Error::Store(if full { StoreError::DiskFull { path } } else { StoreError::Write { path, source } })
}

fn read_err(path: &Path, source: std::io::Error) -> Error {
    Error::Store(StoreError::Read { path: path.display().to_string(), source })
}

/// Writes `bytes` to `path` through `path.tmp` + fsync + rename, so `path` is old or new, never torn.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp); // best effort: a leftover .tmp is cleaned on open
        return Err(write_err(path, e));
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")));
    Ok(())
}

/// Makes a rename durable. Best effort: some filesystems cannot open or fsync a directory.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn now_ms() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
}

/// The concept store in a folder.
#[derive(Debug)]
pub struct FolderStore {
    dir: PathBuf,
    manifest: Manifest,
}

impl FolderStore {
    /// Opens (creating it if needed) the store in `dir` for `model_id`; refuses a store made for
    /// another model. Cleans what an interrupted change left behind.
    pub fn open(dir: impl Into<PathBuf>, model_id: &str) -> Result<FolderStore> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| write_err(&dir, e))?;
        let path = dir.join(MANIFEST_FILE);
        let name = path.display().to_string();
        let manifest = match fs::read(&path) {
            Ok(bytes) => Manifest::from_json(&bytes, &name)?,
            Err(e) if e.kind() == ErrorKind::NotFound => Manifest::new(model_id),
            Err(e) => return Err(read_err(&path, e)),
        };
        manifest.check_model(model_id, &name)?;
        let store = FolderStore { dir, manifest };
        store.clean_stale();
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Removes `manifest.json.tmp` (its rename never happened) and `v{N}/` folders the manifest does
    /// not reference. Best effort: what stays is retried on the next open and never read.
    fn clean_stale(&self) {
        let _ = fs::remove_file(self.dir.join(format!("{MANIFEST_FILE}.tmp")));
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if entry.path().is_dir() && name.to_str().is_some_and(|n| self.manifest.is_stale_dir(n)) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }

    /// A manifest path, refused if it could leave the store folder.
    fn blob_path(&self, rel: &str) -> Result<PathBuf, StoreError> {
        let p = Path::new(rel);
        if p.components().all(|c| matches!(c, Component::Normal(_))) {
            return Ok(self.dir.join(p));
        }
        let reason = format!("file path `{rel}` leaves the store folder");
        Err(StoreError::Manifest { file: self.dir.join(MANIFEST_FILE).display().to_string(), reason })
    }

    fn read_blob(&self, rel: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(rel)?;
        fs::read(&path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => StoreError::FileMissing { file: path.display().to_string() },
            _ => StoreError::Read { path: path.display().to_string(), source: e },
        })
    }

    /// Version `version` (the current one for `None`) with its payload, sizes and checksums checked.
    pub fn load(&self, version: Option<u32>) -> Result<(VersionEntry, StateBlobs)> {
        let entry = match version {
            Some(v) => self.manifest.entry(v)?,
            None => self.manifest.current_entry()?,
        }
        .clone();
        let blobs = decode_version(&entry, |rel| self.read_blob(rel))?;
        Ok((entry, blobs))
    }

    /// Saves `blobs` as a new current version; returns its number. The previous version stays whole
    /// until the switch, and then is kept per the retention rule.
    pub fn commit(&mut self, note: &str, concepts: Vec<ConceptEntry>, blobs: &StateBlobs, lesson: serde_json::Value) -> Result<u32> {
        let pending = self.manifest.plan_new_version(note, concepts, blobs, lesson, now_ms())?;
        self.apply(pending)
    }

    fn apply(&mut self, pending: PendingVersion) -> Result<u32> {
        let version = pending.entry.version;
        self.stage(&pending)?;
        if let Err(e) = self.switch(pending.entry) {
            let _ = fs::remove_dir_all(self.dir.join(format!("v{version}")));
            return Err(e);
        }
        Ok(version)
    }

    /// Step 1 of a change: writes the pending version's blobs under a fresh `v{N}/`. Until
    /// [`FolderStore::switch`] nothing refers to them (public so tests can stop a change here).
    pub fn stage(&self, pending: &PendingVersion) -> Result<()> {
        let vdir = self.dir.join(format!("v{}", pending.entry.version));
        let written = self.write_files(&vdir, &pending.files);
        if written.is_err() {
            let _ = fs::remove_dir_all(&vdir); // best effort; open() cleans it otherwise
        }
        written
    }

    fn write_files(&self, vdir: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
        if vdir.exists() {
            fs::remove_dir_all(vdir).map_err(|e| write_err(vdir, e))?;
        }
        for (rel, bytes) in files {
            let path = self.blob_path(rel)?;
            let parent = path.parent().unwrap_or(&self.dir);
            fs::create_dir_all(parent).map_err(|e| write_err(parent, e))?;
            write_atomic(&path, bytes)?;
        }
        sync_dir(vdir);
        sync_dir(&self.dir);
        Ok(())
    }

    /// Step 2: makes a staged version current by replacing the manifest, then deletes the folders
    /// the retention rule drops.
    pub fn switch(&mut self, entry: VersionEntry) -> Result<()> {
        let mut next = self.manifest.clone();
        let dropped = next.switch_to(entry);
        self.save_manifest(next)?;
        for dir in dropped {
            let _ = fs::remove_dir_all(self.dir.join(dir)); // a leftover is stale and cleaned on open
        }
        Ok(())
    }

    fn save_manifest(&mut self, next: Manifest) -> Result<()> {
        write_atomic(&self.dir.join(MANIFEST_FILE), &next.to_json())?;
        self.manifest = next;
        Ok(())
    }

    /// Makes a kept version current again, after checking that its blobs are whole.
    pub fn restore(&mut self, version: u32) -> Result<()> {
        self.load(Some(version))?;
        let mut next = self.manifest.clone();
        next.restore(version)?;
        self.save_manifest(next)
    }

    /// A new version without `concept` (its embedding and memories); returns its number.
    pub fn remove(&mut self, concept: &str) -> Result<u32> {
        let (_, blobs) = self.load(None)?;
        let pending = self.manifest.plan_remove(concept, &blobs, now_ms())?;
        self.apply(pending)
    }

    /// Writes version `version` (current for `None`) as one portable safetensors file.
    pub fn export(&self, version: Option<u32>, path: &Path) -> Result<()> {
        let (entry, blobs) = self.load(version)?;
        let bytes = export_file(&self.manifest.model_id, &entry, &blobs)?;
        write_atomic(path, &bytes)
    }

    /// Imports an exported file as a new current version (it replaces the state; the previous
    /// version stays restorable), checking names and shapes against the current adapter.
    pub fn import(&mut self, path: &Path) -> Result<u32> {
        let current = match self.manifest.current {
            Some(_) => Some(self.load(None)?.1),
            None => None,
        };
        let check = current.as_ref().map_or(ShapeCheck::Any, |b| ShapeCheck::LikeAdapter(&b.adapter));
        self.import_with(path, check)
    }

    /// [`FolderStore::import`] with the caller's shape check (for instance the model's own shapes).
    pub fn import_with(&mut self, path: &Path, check: ShapeCheck<'_>) -> Result<u32> {
        let bytes = fs::read(path).map_err(|e| read_err(path, e))?;
        let imported = import_file(&bytes, &path.display().to_string(), &self.manifest.model_id, check)?;
        let version = self.manifest.next_version();
        let mut concepts = imported.concepts;
        for c in &mut concepts {
            c.added_in = version; // versions of the exporting store mean nothing here
        }
        let pending = self.manifest.plan_new_version("import", concepts, &imported.blobs, imported.lesson, now_ms())?;
        self.apply(pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_is_reported_as_such() {
        let e = write_err(Path::new("/s/v3/adapter.safetensors"), std::io::Error::from_raw_os_error(28)).to_string();
        assert!(e.contains("disk full") && e.contains("nothing was changed") && e.contains("v3/adapter"), "{e}");
        let e = write_err(Path::new("/s/x"), std::io::Error::from(ErrorKind::PermissionDenied)).to_string();
        assert!(e.contains("cannot write /s/x") && e.contains("nothing was changed"), "{e}");
    }
}
