//! The browser edge (wasm32 only): what `www/worker.js` calls through wasm-bindgen.
//!
//! - [`generator`]: `Generator` — a WebGPU device, a model given as bytes (the page fetches and
//!   caches them; Rust never does I/O), generation stepped with `await` between steps so progress
//!   (ms per step, a preview) is real GPU time.
//! - [`store`]: `ConceptStore` — the concept store in IndexedDB behind one typed wrapper
//!   (schema version, store names, atomic versioned writes, quota errors surfaced).
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

pub use error::WebError;
