//! Captions: the words a scene is described with (`vocabulary`), one caption for a spec in a given
//! style (`describe`), and several true captions per scene with optional size, place and background
//! words in several orders (`captions`).
//!
//! Templates (brackets optional, `obj` = "a|an [size] colour shape"):
//! - one object: `obj [place] [on a BG background]`, `obj [on a BG background] [place]`,
//!   `a BG background with obj [place]`;
//! - two objects: `objA relation objB [on a BG background]`, the converse `objB relation' objA ...`,
//!   `a BG background with objA relation objB`;
//! - two equal objects: `two [size] colour shapes [on a BG background]`, `a BG background with two ...`.

use std::collections::BTreeSet;

use super::heldout::{is_held_out_pair, Pair};
use super::sample::{item_rng, sample_spec, Split, CAPTION_STREAM, SCENE_STREAM};
use super::scene::{below, Layout, ObjectSpec, Scene, SceneKind, Spec};
use super::vocab::{Background, Color, Place, Relation, Shape, Size};
use crate::rng::Rng;

/// Words outside the named vocabulary that templates use.
const GLUE: &[&str] = &["a", "an", "two", "on", "background", "with"];

/// Every word any caption can contain, sorted (for building a tokenizer).
pub fn vocabulary() -> Vec<&'static str> {
    let mut words: BTreeSet<&'static str> = GLUE.iter().copied().collect();
    words.extend(Background::ALL.iter().map(|b| b.name()));
    words.extend(Color::ALL.iter().map(|c| c.name()));
    words.extend(Shape::ALL.iter().flat_map(|s| [s.name(), s.plural()]));
    words.extend(Size::ALL.iter().map(|s| s.name()));
    words.extend(Place::ALL.iter().flat_map(|p| p.phrase().split(' ')));
    words.extend(Relation::ALL.iter().flat_map(|r| r.phrase().split(' ')));
    words.into_iter().collect()
}

/// How a caption orders what it states. Fields that do not apply to a spec are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CaptionStyle {
    /// "a night background with ..." rather than "... on a night background".
    pub background_first: bool,
    /// For one object with a place and a trailing background: background before place.
    pub background_before_place: bool,
    /// For two objects: state the relation from the second ("B to the right of A").
    pub converse: bool,
}

impl CaptionStyle {
    /// Every style, the default first.
    pub fn all() -> Vec<CaptionStyle> {
        let mut styles = Vec::new();
        for background_first in [false, true] {
            for background_before_place in [false, true] {
                for converse in [false, true] {
                    styles.push(CaptionStyle { background_first, background_before_place, converse });
                }
            }
        }
        styles
    }

    fn random(rng: &mut Rng) -> Self {
        let mut flip = || below(rng, 2) == 1;
        CaptionStyle { background_first: flip(), background_before_place: flip(), converse: flip() }
    }
}

/// "a small blue star", "an orange ring".
fn object_phrase(o: &ObjectSpec) -> String {
    match o.size {
        Some(size) => format!("a {size} {} {}", o.color, o.shape),
        None => format!("{} {} {}", o.color.article(), o.color, o.shape),
    }
}

/// The caption stating exactly what `spec` states.
pub fn describe(spec: &Spec, style: CaptionStyle) -> String {
    let (Some(first), last) = (spec.objects.first(), spec.objects.last()) else {
        return String::new();
    };
    let mut parts: Vec<String> = Vec::new();
    match spec.layout {
        Layout::Single { place } => {
            parts.push(object_phrase(first));
            if let Some(place) = place {
                parts.push(place.phrase().to_string());
            }
        }
        Layout::Pair { relation } => {
            let b = last.unwrap_or(first);
            let (lead, rel, tail) = if style.converse { (b, relation.converse(), first) } else { (first, relation, b) };
            parts.extend([object_phrase(lead), rel.phrase().to_string(), object_phrase(tail)]);
        }
        Layout::Plural => {
            let size = first.size.map(|s| format!("{s} ")).unwrap_or_default();
            parts.push(format!("two {size}{} {}", first.color, first.shape.plural()));
        }
    }
    if let Some(bg) = spec.background {
        if style.background_first {
            parts.insert(0, format!("a {bg} background with"));
        } else if style.background_before_place && parts.len() == 2 && matches!(spec.layout, Layout::Single { .. }) {
            parts.insert(1, format!("on a {bg} background"));
        } else {
            parts.push(format!("on a {bg} background"));
        }
    }
    parts.join(" ")
}

/// Every spec a scene's captions may state: the full one first, then each way of leaving out
/// sizes, the place and the background.
fn partial_specs(scene: &Scene) -> Vec<Spec> {
    let full = scene.spec();
    let mut out = Vec::new();
    for keep_bg in [true, false] {
        for keep_place in [true, false] {
            for size_mask in 0..4u8 {
                let mut spec = full.clone();
                if !keep_bg {
                    spec.background = None;
                }
                if let (Layout::Single { place }, false) = (&mut spec.layout, keep_place) {
                    *place = None;
                }
                let plural = spec.layout == Layout::Plural;
                for (i, o) in spec.objects.iter_mut().enumerate() {
                    // A plural states one size for both objects.
                    let bit = if plural { 0 } else { i };
                    if size_mask & (1 << bit) != 0 {
                        o.size = None;
                    }
                }
                if !out.contains(&spec) {
                    out.push(spec);
                }
            }
        }
    }
    out
}

/// Every distinct true caption of a scene, the fully specified default-style one first.
pub fn all_captions(scene: &Scene) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for spec in partial_specs(scene) {
        for style in CaptionStyle::all() {
            let caption = describe(&spec, style);
            if !out.contains(&caption) {
                out.push(caption);
            }
        }
    }
    out
}

/// `n` distinct true captions of a scene (fewer only if it has fewer): the fully specified one
/// first, then a random choice of the others.
pub fn captions(scene: &Scene, rng: &mut Rng, n: usize) -> Vec<String> {
    let mut all = all_captions(scene);
    // Fisher-Yates on everything after the first.
    for i in (2..all.len()).rev() {
        let j = 1 + below(rng, i);
        all.swap(i, j);
    }
    all.truncate(n);
    all
}

/// An evaluation prompt: a caption and exactly what it asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub caption: String,
    pub spec: Spec,
}

/// Prompt `index` of `seed`: a scene of `kind` from `split`, always naming its place or relation
/// (so those can be scored), each size and the background named half the time, in a random style.
pub fn prompt_at(seed: u64, index: u64, split: Split, kind: SceneKind) -> Prompt {
    let mut spec = sample_spec(&mut item_rng(seed, index, SCENE_STREAM), split, Some(kind));
    let mut rng = item_rng(seed, index, CAPTION_STREAM);
    if below(&mut rng, 2) == 0 {
        spec.background = None;
    }
    for o in spec.objects.iter_mut() {
        if below(&mut rng, 2) == 0 {
            o.size = None;
        }
    }
    // A plural's two objects share one size.
    if spec.layout == Layout::Plural {
        spec.objects[1] = spec.objects[0];
    }
    let caption = describe(&spec, CaptionStyle::random(&mut rng));
    Prompt { caption, spec }
}

/// The prompts of `seed` naming one shape in two colours with a relation between them ("a
/// red circle to the left of a blue circle"): the two objects differ only in colour, so a drawing
/// binds each colour to its object only when each colour sits where the relation puts it; with
/// two different shapes a scorer cannot tell a bound colour from one the shapes would carry
/// anyway. Made from [`prompt_at`]'s seen two-object prompts, the second object given the first's
/// shape (skipping those whose colours match or whose recoloured pair is held out), so the
/// sizes, background and relation are drawn as there; the style cycles through every one.
pub fn one_shape_pairs(seed: u64) -> impl Iterator<Item = Prompt> {
    let styles = CaptionStyle::all();
    (0u64..).filter_map(move |candidate| {
        let Prompt { mut spec, .. } = prompt_at(seed, candidate, Split::Train, SceneKind::Pair);
        let [a, b] = [spec.objects[0], spec.objects[1]];
        if a.color == b.color || is_held_out_pair(Pair { color: b.color, shape: a.shape }) {
            return None;
        }
        spec.objects[1].shape = a.shape;
        let caption = describe(&spec, styles[(candidate % styles.len() as u64) as usize]);
        Some(Prompt { caption, spec })
    })
}
