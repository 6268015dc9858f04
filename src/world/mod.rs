//! The procedural shapes world of `../shared/world.md`, the built-in model's training data and its
//! judge: seeded scene sampling (`sample`), exact rendering to 64 x 64 RGB (`render`), captions and
//! their parser (`caption`, `parse`), the held-out pairs and combinations (`heldout`), an analytic
//! scorer that reads a scene back from an image (`score`), and dataset export (`dataset`). The
//! lifelong evaluation's novel concepts (new outlines and patterns the world never draws), their
//! teaching images and their identification live in `concepts`.
//!
//! Everything is deterministic from a `u64` seed and free of I/O except `dataset::export`.

pub mod caption;
mod classify;
pub mod concepts;
mod concepts_scene;
mod concepts_seam;
mod concepts_score;
pub mod dataset;
pub mod eval;
pub mod heldout;
pub mod parse;
pub mod render;
pub mod sample;
pub mod scene;
pub mod score;
mod segment;
pub mod shapes;
pub mod vocab;

/// The canvas is `SIZE` x `SIZE` pixels.
pub const SIZE: usize = 64;

/// The name a model trained on this world declares in its `model_index.json`
/// (`"_lifelong_diffusion": {"world": "shapes"}`, [`crate::loader::LoadedModel::world`]).
pub const WORLD_NAME: &str = "shapes";

pub use caption::{captions, describe, one_shape_pairs, prompt_at, vocabulary, CaptionStyle, Prompt};
pub use heldout::{novelty, Novelty, HELD_OUT_COMBINATIONS, HELD_OUT_PAIRS};
pub use parse::parse;
pub use render::{render, IMAGE_BYTES};
pub use sample::{sample_scene, sample_spec, scene_at, Split};
pub use scene::{place_anchor, realize, Layout, Object, ObjectSpec, Scene, SceneKind, Spec};
pub use score::{check, detect, detect_f32, judge, DetectedObject, Detection, Tally, Verdict};
pub use vocab::{Background, Color, Place, Relation, Shape, Size};
