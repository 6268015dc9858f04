//! Scenes (what is drawn, with exact positions) and specs (what a caption states, where a missing
//! size, place or background means "any"), and turning a spec into a concrete scene.

use serde::{Deserialize, Serialize};

use super::vocab::{compatible, Background, Color, Place, Relation, Shape, Size};
use super::SIZE;
use crate::rng::Rng;
use crate::{Error, Result};

/// One drawn object. `center` is in pixels (x right, y down; pixel (col, row) covers
/// [col, col+1) x [row, row+1)); `extent` is the side of the square box the shape fits, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Object {
    pub color: Color,
    pub shape: Shape,
    pub size: Size,
    pub center: [f32; 2],
    pub extent: f32,
}

/// How a scene's objects are arranged, and what its captions say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Layout {
    /// One object; in a scene the place is always known, in a spec it may be left open.
    Single {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        place: Option<Place>,
    },
    /// Two objects: `objects[0]` stands in `relation` to `objects[1]`.
    Pair { relation: Relation },
    /// Two identical objects ("two pink squares"), side by side or stacked.
    Plural,
}

/// The three kinds of scene, for sampling and for reporting scores per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SceneKind {
    Single,
    Pair,
    Plural,
}

impl Layout {
    pub fn kind(&self) -> SceneKind {
        match self {
            Layout::Single { .. } => SceneKind::Single,
            Layout::Pair { .. } => SceneKind::Pair,
            Layout::Plural => SceneKind::Plural,
        }
    }

    /// How many objects this layout holds.
    pub fn count(&self) -> usize {
        if matches!(self, Layout::Single { .. }) {
            1
        } else {
            2
        }
    }
}

/// A fully determined scene: render it with `render::render`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    pub background: Background,
    pub layout: Layout,
    pub objects: Vec<Object>,
}

/// What a caption asks for about one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectSpec {
    pub color: Color,
    pub shape: Shape,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
}

/// What a caption asks for. `objects` has one entry per object, in the layout's order (a plural
/// spec has two equal entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<Background>,
    pub layout: Layout,
    pub objects: Vec<ObjectSpec>,
}

impl Scene {
    /// The spec that states everything about this scene.
    pub fn spec(&self) -> Spec {
        let objects = self.objects.iter().map(|o| ObjectSpec { color: o.color, shape: o.shape, size: Some(o.size) }).collect();
        Spec { background: Some(self.background), layout: self.layout, objects }
    }
}

impl Spec {
    /// Checks that the objects fit the layout: one for a single, two for a pair, two equal ones
    /// for a plural.
    pub fn validate(&self) -> Result<()> {
        let n = self.objects.len();
        if n != self.layout.count() {
            return Err(Error::InvalidInput(format!("a {:?} spec needs {} object(s), got {n}", self.layout.kind(), self.layout.count())));
        }
        if self.layout == Layout::Plural && self.objects[0] != self.objects[1] {
            return Err(Error::InvalidInput("a plural spec (\"two ...\") needs two equal objects".into()));
        }
        Ok(())
    }
}

/// Uniform index below `n` (n > 0).
pub(crate) fn below(rng: &mut Rng, n: usize) -> usize {
    ((rng.uniform() * n as f64) as usize).min(n.saturating_sub(1))
}

/// A uniformly chosen element of a non-empty slice.
pub(crate) fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[below(rng, items.len())]
}

/// Uniform in [lo, hi].
pub(crate) fn range(rng: &mut Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.uniform() as f32
}

/// Box sides, in pixels: world.md's "about 14" and "about 28", jittered so a model sees some
/// variety. The ranges leave room for two large objects side by side with a gap.
pub(crate) fn sample_extent(rng: &mut Rng, size: Size) -> f32 {
    match size {
        Size::Small => range(rng, 12.5, 15.5),
        Size::Large => range(rng, 26.0, 29.0),
    }
}

/// Draws what the spec leaves open (sizes, place, a background that contrasts with every object)
/// and places the objects. A background the spec names is used even if it contrasts poorly.
pub fn realize(spec: &Spec, rng: &mut Rng) -> Result<Scene> {
    spec.validate()?;
    Ok(realize_valid(spec, rng))
}

/// `realize` for a spec known to be valid.
pub(crate) fn realize_valid(spec: &Spec, rng: &mut Rng) -> Scene {
    let background = match spec.background {
        Some(b) => b,
        None => pick_background(rng, spec.objects.iter().map(|o| o.color)),
    };
    let layout = match spec.layout {
        Layout::Single { place: None } => Layout::Single { place: Some(pick(rng, Place::ALL)) },
        other => other,
    };
    let mut sizes: Vec<Size> = spec.objects.iter().map(|o| o.size.unwrap_or_else(|| pick(rng, Size::ALL))).collect();
    if layout == Layout::Plural {
        sizes[1] = sizes[0];
    }
    let extents: Vec<f32> = sizes.iter().map(|&s| sample_extent(rng, s)).collect();
    let centers = match layout {
        Layout::Single { place } => vec![place_center(rng, place.unwrap_or(Place::Center), extents[0] / 2.0)],
        Layout::Pair { relation } => pair_centers(rng, relation, extents[0] / 2.0, extents[1] / 2.0).to_vec(),
        Layout::Plural => {
            let relation = pick(rng, Relation::ALL);
            pair_centers(rng, relation, extents[0] / 2.0, extents[1] / 2.0).to_vec()
        }
    };
    let objects = spec
        .objects
        .iter()
        .zip(sizes.iter().zip(extents.iter().zip(centers)))
        .map(|(o, (&size, (&extent, center)))| Object { color: o.color, shape: o.shape, size, center, extent })
        .collect();
    Scene { background, layout, objects }
}

/// A background uniformly among those that contrast with every given colour. Every pair of
/// world colours shares at least two such backgrounds, so the list is never empty.
pub(crate) fn pick_background(rng: &mut Rng, colors: impl Iterator<Item = Color> + Clone) -> Background {
    let ok: Vec<Background> = Background::ALL.iter().copied().filter(|&b| colors.clone().all(|c| compatible(c, b))).collect();
    if ok.is_empty() {
        pick(rng, Background::ALL)
    } else {
        pick(rng, &ok)
    }
}

const EDGE_MARGIN: f32 = 1.0;
/// Centres stay this far inside a place's region, so a scorer's small centre errors on imperfect
/// images cannot move an object across a boundary (and, on the other axis, into a second place).
const PLACE_LO: f32 = 20.0;
const PLACE_HI: f32 = 44.0;
const MID_LO: f32 = 24.0;
const MID_HI: f32 = 40.0;

/// A centre for an object of half side `h` named at `place`, deep inside the range
/// [`place_center`] draws from: a quarter of the way from the outermost centre the box allows to
/// the region's inner limit (the middle of the other axis). Lessons move objects there by whole
/// latent cells (src/lifelong/augment.rs), which lands a few pixels off; from the range's middle
/// a large tee came out across the region's border.
pub fn place_anchor(place: Place, h: f32) -> [f32; 2] {
    let canvas = SIZE as f32;
    let near = (h + EDGE_MARGIN) + 0.25 * (PLACE_LO - (h + EDGE_MARGIN));
    let far = (canvas - EDGE_MARGIN - h) - 0.25 * ((canvas - EDGE_MARGIN - h) - PLACE_HI);
    let mid = 0.5 * (MID_LO + MID_HI);
    match place {
        Place::Left => [near, mid],
        Place::Right => [far, mid],
        Place::Top => [mid, near],
        Place::Bottom => [mid, far],
        Place::Center => [mid, mid],
    }
}

/// A centre inside `place`'s region and in the middle band of the other axis, with the whole box
/// (half side `h`) inside the canvas.
fn place_center(rng: &mut Rng, place: Place, h: f32) -> [f32; 2] {
    let canvas = SIZE as f32;
    let near = |rng: &mut Rng| range(rng, h + EDGE_MARGIN, PLACE_LO);
    let far = |rng: &mut Rng| range(rng, PLACE_HI, canvas - EDGE_MARGIN - h);
    let mid = |rng: &mut Rng| range(rng, MID_LO, MID_HI);
    match place {
        Place::Left => [near(rng), mid(rng)],
        Place::Right => [far(rng), mid(rng)],
        Place::Top => [mid(rng), near(rng)],
        Place::Bottom => [mid(rng), far(rng)],
        Place::Center => [mid(rng), mid(rng)],
    }
}

/// Smallest separation of two centres along the relation's axis: world.md's 16 px plus a margin,
/// and never less than the two half sides plus a gap, so the objects never touch.
const PAIR_MIN_DISTANCE: f32 = 18.0;
const PAIR_GAP: f32 = 2.0;
/// Largest offset across the axis, so that only the named relation holds.
const PAIR_MAX_OFFSET: f32 = 8.0;

/// Centres `[a, b]` for objects of half sides `ha`, `hb` with `a` in `relation` to `b`.
fn pair_centers(rng: &mut Rng, relation: Relation, ha: f32, hb: f32) -> [[f32; 2]; 2] {
    let canvas = SIZE as f32;
    // Order the two along the axis: `first` has the smaller coordinate.
    let a_first = matches!(relation, Relation::LeftOf | Relation::Above);
    let (h1, h2) = if a_first { (ha, hb) } else { (hb, ha) };
    let d_min = PAIR_MIN_DISTANCE.max(h1 + h2 + PAIR_GAP);
    let d_max = (canvas - 2.0 * EDGE_MARGIN - h1 - h2).max(d_min);
    let d = range(rng, d_min, d_max);
    let p1 = range(rng, h1 + EDGE_MARGIN, (canvas - EDGE_MARGIN - h2 - d).max(h1 + EDGE_MARGIN));
    let (along_a, along_b) = if a_first { (p1, p1 + d) } else { (p1 + d, p1) };
    let across_a = range(rng, ha + EDGE_MARGIN, canvas - EDGE_MARGIN - ha);
    let offset = range(rng, -PAIR_MAX_OFFSET, PAIR_MAX_OFFSET);
    let across_b = (across_a + offset).clamp(hb + EDGE_MARGIN, canvas - EDGE_MARGIN - hb);
    if relation.horizontal() {
        [[along_a, across_a], [along_b, across_b]]
    } else {
        [[across_a, along_a], [across_b, along_b]]
    }
}
