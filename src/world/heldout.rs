//! What training never shows: a fixed set of colour-shape pairs (in any role) and of two-object
//! combinations (never together in one scene, in either order or any relation).
//!
//! The pairs use eight different colours and all eight shapes, so every colour and every shape is
//! still seen in training with other partners; white and black keep all their shapes. The
//! combinations use only seen objects, so a model knows each part and only the pairing is new.

use serde::Serialize;

use super::scene::Spec;
use super::vocab::{Color, Shape};

/// A colour-shape pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Pair {
    pub color: Color,
    pub shape: Shape,
}

const fn pair(color: Color, shape: Shape) -> Pair {
    Pair { color, shape }
}

use Color::*;
use Shape::*;

/// Colour-shape pairs no training scene contains.
pub const HELD_OUT_PAIRS: [Pair; 8] = [
    pair(Red, Triangle),
    pair(Orange, Ring),
    pair(Yellow, Heart),
    pair(Green, Star),
    pair(Blue, Cross),
    pair(Purple, Circle),
    pair(Pink, Diamond),
    pair(Brown, Square),
];

/// Objects no training scene shows together (unordered).
pub const HELD_OUT_COMBINATIONS: [[Pair; 2]; 12] = [
    [pair(Red, Circle), pair(Blue, Square)],
    [pair(Yellow, Star), pair(Green, Triangle)],
    [pair(White, Heart), pair(Black, Ring)],
    [pair(Orange, Diamond), pair(Purple, Cross)],
    [pair(Pink, Circle), pair(Brown, Triangle)],
    [pair(Green, Heart), pair(Yellow, Diamond)],
    [pair(Blue, Ring), pair(Orange, Star)],
    [pair(Black, Square), pair(Pink, Cross)],
    [pair(Purple, Star), pair(Red, Diamond)],
    [pair(Brown, Circle), pair(White, Cross)],
    [pair(Red, Heart), pair(Green, Ring)],
    [pair(Blue, Triangle), pair(Yellow, Square)],
];

pub fn is_held_out_pair(p: Pair) -> bool {
    HELD_OUT_PAIRS.contains(&p)
}

pub fn is_held_out_combination(a: Pair, b: Pair) -> bool {
    HELD_OUT_COMBINATIONS.iter().any(|c| (c[0] == a && c[1] == b) || (c[0] == b && c[1] == a))
}

/// Every colour-shape pair training may show, in a fixed order.
pub fn seen_pairs() -> Vec<Pair> {
    Color::ALL.iter().flat_map(|&c| Shape::ALL.iter().map(move |&s| pair(c, s))).filter(|&p| !is_held_out_pair(p)).collect()
}

/// Which held-out parts a spec asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Novelty {
    /// Some object is a held-out colour-shape pair.
    pub pair: bool,
    /// The two objects form a held-out combination.
    pub combination: bool,
}

impl Novelty {
    /// True when training has seen everything the spec asks for.
    pub fn seen(self) -> bool {
        !self.pair && !self.combination
    }
}

pub fn novelty(spec: &Spec) -> Novelty {
    let pairs: Vec<Pair> = spec.objects.iter().map(|o| pair(o.color, o.shape)).collect();
    let combination = pairs.len() == 2 && is_held_out_combination(pairs[0], pairs[1]);
    Novelty { pair: pairs.iter().any(|&p| is_held_out_pair(p)), combination }
}
