//! The lifelong evaluation's novel concepts (issue 5): looks that no pretraining caption or image
//! has, each fixed once and for all, so that a model taught `<name>` from four pictures can be
//! asked for it and judged by the analytic scorer (`concepts_score`).
//!
//! A concept is a geometry (a new outline, or a world shape) and a look (a flat palette colour, or
//! a pattern in a fixed pair of palette colours). New outlines are drawn and measured like the
//! world's shapes: a signed distance in normalised coordinates whose longer side spans [-1, 1], so
//! a concept fits the same 14 px / 28 px boxes, and scenes reuse the world's placement rules.

use std::sync::OnceLock;

use super::shapes::{half_height, moments, polygon, Outline};
use super::vocab::{Color, Shape};

pub use super::concepts_score::{best_concept, identify, two_concepts_present_apart, Detection, Identity};
pub use super::concepts_scene::*;

/// An outline: one of the world's shapes, or one the world never draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Geometry {
    World(Shape),
    /// A disc with a smaller disc cut from its right: horns point right.
    Crescent,
    /// Shaft and head, pointing right.
    Arrow,
    /// Two triangles meeting at their tips, taller than wide.
    Hourglass,
    /// An upward "^" of constant thickness.
    Chevron,
    /// An "L": a left column and a bottom bar.
    Ell,
    /// A half disc, flat side down.
    Dome,
    /// A "T": a top bar and a centred stem.
    Tee,
}

/// How a concept is filled. Patterns live in the concept's normalised coordinates, so they move
/// and scale with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Look {
    Flat(Color),
    /// Five vertical stripes, the first and last in the first colour.
    Stripes(Color, Color),
    /// A 3 x 3 checkerboard, corners in the first colour (cells of 4.7 px even at the small size,
    /// so a soft image still shows them).
    Checker(Color, Color),
    /// Left half in the first colour, right half in the second.
    Halves(Color, Color),
}

impl Look {
    /// The palette colours the look uses (one or two).
    pub fn colors(self) -> Vec<Color> {
        match self {
            Look::Flat(c) => vec![c],
            Look::Stripes(a, b) | Look::Checker(a, b) | Look::Halves(a, b) => vec![a, b],
        }
    }

    /// The colour at normalised point (u, v) (u, v in [-1, 1] over the concept's box).
    pub(super) fn color_at(self, u: f32, v: f32) -> Color {
        let parity = |k: f32| (k.floor() as i32).rem_euclid(2) == 0;
        match self {
            Look::Flat(c) => c,
            Look::Stripes(a, b) => pick2(parity((u + 1.0) / 0.4), a, b),
            Look::Checker(a, b) => pick2(parity((u + 1.0) * 1.5) == parity((v + 1.0) * 1.5), a, b),
            Look::Halves(a, b) => pick2(u < 0.0, a, b),
        }
    }
}

fn pick2(first: bool, a: Color, b: Color) -> Color {
    if first {
        a
    } else {
        b
    }
}

/// One concept the model is taught. `name` is lowercase `[a-z0-9_-]` and becomes `<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NovelConcept {
    pub name: &'static str,
    pub geometry: Geometry,
    pub look: Look,
}

impl NovelConcept {
    /// The prompt token, `<name>`.
    pub fn token(&self) -> String {
        format!("<{}>", self.name)
    }
}

/// The concepts, in teaching order: the evaluation uses the first 8 (five new outlines and three
/// patterns on world shapes), the last 2 are spares. Colours are palette colours, chosen so that
/// each pattern's colours and their anti-aliased mixes stay far from every background (a pattern
/// must stay one connected blob), and flat concepts sharing a colour with a world object differ
/// from every world shape in outline.
pub fn novel_concepts() -> Vec<NovelConcept> {
    use Geometry::*;
    let c = |name, geometry, look| NovelConcept { name, geometry, look };
    vec![
        c("crescent", Crescent, Look::Flat(Color::Yellow)),
        c("stripes", World(Shape::Circle), Look::Stripes(Color::Green, Color::Purple)),
        c("arrow", Arrow, Look::Flat(Color::Red)),
        c("checker", World(Shape::Square), Look::Checker(Color::Yellow, Color::Purple)),
        c("hourglass", Hourglass, Look::Flat(Color::Orange)),
        c("halves", World(Shape::Diamond), Look::Halves(Color::Orange, Color::Blue)),
        c("chevron", Chevron, Look::Flat(Color::Green)),
        c("ell", Ell, Look::Flat(Color::Blue)),
        c("dome", Dome, Look::Flat(Color::Purple)),
        c("tee", Tee, Look::Flat(Color::Pink)),
    ]
}

/// The concept called `name`, if any.
pub fn concept_by_name(name: &str) -> Option<NovelConcept> {
    novel_concepts().into_iter().find(|c| c.name == name)
}

/// A geometry's box and moments in normalised units: half sides (the longer is 1), area, centroid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame {
    pub half: [f32; 2],
    pub area: f32,
    pub centroid: [f32; 2],
}

/// Raw drawing coordinates to normalised ones: (centre, factor), normalised = (raw - centre) * factor.
type Normaliser = ([f32; 2], f32);

/// The new outlines, in `Frame` table order.
const NEW: [Geometry; 7] = [Geometry::Crescent, Geometry::Arrow, Geometry::Hourglass, Geometry::Chevron, Geometry::Ell, Geometry::Dome, Geometry::Tee];
/// Samples per side of the measuring grid (as `shapes::moments`).
const GRID: usize = 400;

impl Geometry {
    /// Signed distance (negative inside) in the outline's own drawing coordinates, within [-1, 1]^2.
    fn raw_sdf(self, x: f32, y: f32) -> f32 {
        let disc = |cx: f32, r: f32| ((x - cx).powi(2) + y * y).sqrt() - r;
        let poly = |v: &[[f32; 2]]| polygon(v, x, y);
        match self {
            Geometry::World(shape) => Outline::new(shape).sdf(x, y),
            Geometry::Crescent => disc(0.0, 1.0).max(-disc(0.5, 0.8)),
            Geometry::Arrow => poly(&[[-1.0, -0.25], [0.1, -0.25], [0.1, -0.7], [1.0, 0.0], [0.1, 0.7], [0.1, 0.25], [-1.0, 0.25]]),
            Geometry::Hourglass => poly(&[[-0.7, -1.0], [0.7, -1.0], [0.12, 0.0], [0.7, 1.0], [-0.7, 1.0], [-0.12, 0.0]]),
            Geometry::Chevron => poly(&[[0.0, -1.0], [1.0, 0.0], [1.0, 0.8], [0.0, -0.2], [-1.0, 0.8], [-1.0, 0.0]]),
            Geometry::Ell => poly(&[[-1.0, -1.0], [-0.25, -1.0], [-0.25, 0.25], [1.0, 0.25], [1.0, 1.0], [-1.0, 1.0]]),
            Geometry::Dome => disc(0.0, 1.0).max(y),
            Geometry::Tee => poly(&[[-1.0, -1.0], [1.0, -1.0], [1.0, -0.4], [0.3, -0.4], [0.3, 1.0], [-0.3, 1.0], [-0.3, -0.4], [-1.0, -0.4]]),
        }
    }

    /// The raw-to-normalised map (centre, factor): normalised = (raw - centre) * factor. World
    /// shapes are already normalised; new ones are centred on their box, longer side 2.
    fn normaliser(self) -> Normaliser {
        match NEW.iter().position(|&g| g == self) {
            Some(k) => measured()[k].0,
            None => ([0.0, 0.0], 1.0),
        }
    }

    /// Signed distance (negative inside) in normalised coordinates; a lower bound of the true
    /// distance where not exact, as `Outline::sdf`.
    pub fn sdf(self, u: f32, v: f32) -> f32 {
        let ([cx, cy], f) = self.normaliser();
        self.raw_sdf(u / f + cx, v / f + cy) * f
    }

    pub fn frame(self) -> Frame {
        match (self, NEW.iter().position(|&g| g == self)) {
            (_, Some(k)) => measured()[k].1,
            (Geometry::World(shape), None) => {
                let m = moments(shape);
                Frame { half: [1.0, half_height(shape)], area: m.area, centroid: [0.0, m.centroid_y] }
            }
            (_, None) => Frame { half: [1.0, 1.0], area: 0.0, centroid: [0.0, 0.0] },
        }
    }
}

/// Each new outline's normaliser and frame, measured once per process on a fine grid (correct by
/// construction, as `shapes::moments`).
fn measured() -> &'static [(Normaliser, Frame)] {
    static TABLE: OnceLock<Vec<(Normaliser, Frame)>> = OnceLock::new();
    TABLE.get_or_init(|| NEW.iter().map(|&g| measure(g)).collect())
}

fn measure(geometry: Geometry) -> (Normaliser, Frame) {
    let step = 2.0 / GRID as f32;
    let (mut lo, mut hi) = ([f32::INFINITY; 2], [f32::NEG_INFINITY; 2]);
    let (mut count, mut sum) = (0usize, [0.0f64; 2]);
    for i in 0..GRID {
        let y = -1.0 + (i as f32 + 0.5) * step;
        for j in 0..GRID {
            let x = -1.0 + (j as f32 + 0.5) * step;
            if geometry.raw_sdf(x, y) <= 0.0 {
                count += 1;
                sum = [sum[0] + f64::from(x), sum[1] + f64::from(y)];
                lo = [lo[0].min(x), lo[1].min(y)];
                hi = [hi[0].max(x), hi[1].max(y)];
            }
        }
    }
    // Cell centres sit half a step inside the true edge.
    let (lo, hi) = (lo.map(|v| v - step / 2.0), hi.map(|v| v + step / 2.0));
    let center = [(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0];
    let f = 2.0 / (hi[0] - lo[0]).max(hi[1] - lo[1]).max(step);
    let n = count.max(1) as f64;
    let centroid = [((sum[0] / n) as f32 - center[0]) * f, ((sum[1] / n) as f32 - center[1]) * f];
    let half = [(hi[0] - lo[0]) * f / 2.0, (hi[1] - lo[1]) * f / 2.0];
    ((center, f), Frame { half, area: count as f32 * step * step * f * f, centroid })
}
