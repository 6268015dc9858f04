//! lifelong-diffusion: a Stable Diffusion runtime for WebGPU and native, growing into L2DM
//! (lifelong text-to-image diffusion). See ARCHITECTURE.md for the map.

pub mod config;
pub mod error;
pub mod kernels;
pub mod lifelong;
pub mod loader;
pub mod model;
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
#[cfg(not(target_arch = "wasm32"))]
pub mod native_store;
pub mod pipeline;
pub mod rng;
pub mod scheduler;
#[cfg(not(target_arch = "wasm32"))]
pub mod serve;
pub mod tokenizer;
#[cfg(target_arch = "wasm32")]
pub mod web;
pub mod weights;
pub mod world;

pub use error::{Error, Result};
