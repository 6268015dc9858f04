//! Lifelong concept learning (L2DM, Sun et al. 2023): a shared low-rank adapter plus one token
//! embedding per concept, taught one lesson at a time without forgetting earlier concepts.

pub mod adam;
pub mod adapter;
pub mod artist;
pub mod augment;
pub mod compose;
pub mod gate;
pub mod hold;
pub mod store;
pub mod lesson;
pub mod learner;
pub mod memory;
pub mod method;
pub mod null_space;
pub mod orthogonal;
pub mod protect;
pub mod schedule;
pub mod selfcheck;
pub mod size_views;
pub mod state;
pub mod trainer;
pub mod images;
pub mod init;
pub mod invert;
#[cfg(not(target_arch = "wasm32"))]
pub mod eval;
