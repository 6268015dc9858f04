//! The browser edge (wasm32 only): what `www/worker.js` calls through wasm-bindgen.
//!
//! - [`generator`]: `Generator` — a WebGPU device, a model given as bytes (the page fetches and
//!   caches them; Rust never does I/O), generation stepped with `await` between steps so progress
//!   (ms per step, a preview) is real GPU time.
//! - [`store`]: `ConceptStore` — the IndexedDB edge of the one concept-store schema
//!   (`lifelong::store`): versions, checksums, retention, export/import, atomic saves, quota errors.
//! - [`teach`]: `teach()` — a lesson (the native `Learner`) on burn-flex + autodiff in the
//!   worker, saved as a new store version; `Generator.useConcepts` installs the store's state.
//! - [`error`]: typed errors, turned into JS `Error`s whose `name` says what went wrong.
//!
//! Device loss: burn registers one wgpu runtime per wasm instance and cannot register a second,
//! so a lost device poisons the instance. `Generator` reports `DeviceLostError` and refuses
//! further work; the page then starts a fresh worker (a fresh instance and device) on the next
//! call and reloads the model from its cache.

pub mod error;
pub mod generator;
mod idb;
pub mod store;
pub mod teach;

pub use error::WebError;
