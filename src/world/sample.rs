//! Seeded scene sampling for the training split (never anything held out) and the held-out split
//! (always something held out). Scene `i` of a seed depends only on `(seed, i)`, so datasets can be
//! rendered in parallel and a prefix of a larger export equals a smaller export.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::heldout::{is_held_out_combination, seen_pairs, Pair, HELD_OUT_COMBINATIONS, HELD_OUT_PAIRS};
use super::scene::{below, pick, pick_background, realize_valid, Layout, ObjectSpec, Scene, SceneKind, Spec};
use super::vocab::{Place, Relation, Size};
use crate::rng::Rng;
use crate::{Error, Result};

/// Which part of the world to draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Split {
    /// Everything except the held-out pairs and combinations.
    #[serde(rename = "train")]
    Train,
    /// Scenes that each contain a held-out pair or combination.
    #[serde(rename = "heldout")]
    HeldOut,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::HeldOut => "heldout",
        }
    }
}

impl FromStr for Split {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Split::Train),
            "heldout" | "held-out" | "held_out" => Ok(Split::HeldOut),
            other => Err(Error::InvalidInput(format!("unknown split `{other}`; use train or heldout"))),
        }
    }
}

/// SplitMix64 finaliser: turns (seed, index, stream) into well-separated generator seeds, since
/// nearby PCG seeds would otherwise start nearby in one sequence.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator for item `index` of a seed; `stream` separates independent uses (scene, captions).
pub fn item_rng(seed: u64, index: u64, stream: u64) -> Rng {
    Rng::new(mix(mix(mix(seed) ^ index) ^ stream))
}

/// Stream numbers for `item_rng`.
pub const SCENE_STREAM: u64 = 0;
pub const CAPTION_STREAM: u64 = 1;

/// Scene `index` of `seed` in `split`, of a kind drawn with the training mix.
pub fn scene_at(seed: u64, index: u64, split: Split) -> Scene {
    sample_scene(&mut item_rng(seed, index, SCENE_STREAM), split, None)
}

/// Half the scenes hold one object, 40% two related objects, 10% two equal objects.
fn sample_kind(rng: &mut Rng) -> SceneKind {
    let u = rng.uniform();
    if u < 0.5 {
        SceneKind::Single
    } else if u < 0.9 {
        SceneKind::Pair
    } else {
        SceneKind::Plural
    }
}

/// A random scene of `kind` (or of a kind drawn with the training mix).
pub fn sample_scene(rng: &mut Rng, split: Split, kind: Option<SceneKind>) -> Scene {
    let spec = sample_spec(rng, split, kind);
    realize_valid(&spec, rng)
}

/// A fully specified spec (every size, the place, the background) of `kind`.
pub fn sample_spec(rng: &mut Rng, split: Split, kind: Option<SceneKind>) -> Spec {
    let kind = kind.unwrap_or_else(|| sample_kind(rng));
    let pairs = match (split, kind) {
        (Split::Train, SceneKind::Pair) => train_two(rng).to_vec(),
        (Split::HeldOut, SceneKind::Pair) => held_out_two(rng).to_vec(),
        (Split::Train, _) => vec![pick(rng, &seen_pairs())],
        (Split::HeldOut, _) => vec![pick(rng, &HELD_OUT_PAIRS)],
    };
    let layout = match kind {
        SceneKind::Single => Layout::Single { place: Some(pick(rng, Place::ALL)) },
        SceneKind::Pair => Layout::Pair { relation: pick(rng, Relation::ALL) },
        SceneKind::Plural => Layout::Plural,
    };
    let mut objects: Vec<ObjectSpec> = pairs.iter().map(|p| ObjectSpec { color: p.color, shape: p.shape, size: Some(pick(rng, Size::ALL)) }).collect();
    if kind == SceneKind::Plural {
        objects.push(objects[0]);
    }
    let background = Some(pick_background(rng, objects.iter().map(|o| o.color)));
    Spec { background, layout, objects }
}

/// Two different seen objects that are not a held-out combination.
fn train_two(rng: &mut Rng) -> [Pair; 2] {
    let seen = seen_pairs();
    let a = pick(rng, &seen);
    let partners: Vec<Pair> = seen.into_iter().filter(|&b| b != a && !is_held_out_combination(a, b)).collect();
    [a, pick(rng, &partners)]
}

/// Half the time a held-out combination, half the time a held-out pair beside a seen object; the
/// order is random either way.
fn held_out_two(rng: &mut Rng) -> [Pair; 2] {
    let [a, b] = if rng.uniform() < 0.5 {
        pick(rng, &HELD_OUT_COMBINATIONS)
    } else {
        [pick(rng, &HELD_OUT_PAIRS), pick(rng, &seen_pairs())]
    };
    if below(rng, 2) == 0 {
        [a, b]
    } else {
        [b, a]
    }
}
