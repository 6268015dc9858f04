//! The lifelong evaluation's novel concepts (issue 5): looks that no pretraining caption or image
//! has, each fixed once and for all, so that a model taught `<name>` from four pictures can be
//! asked for it and judged by the analytic scorer (`concepts_score`).
//!
//! A concept is a geometry (a new outline, or a world shape) and a look (a flat palette colour, or
//! a pattern in a fixed pair of palette colours). New outlines are drawn and measured like the
//! world's shapes: a signed distance in normalised coordinates whose longer side spans [-1, 1], so
//! a concept fits the same 14 px / 28 px boxes, and scenes reuse the world's placement rules.

use std::sync::OnceLock;

use super::render::{render, IMAGE_BYTES};
use super::sample::item_rng;
use super::scene::{below, realize_valid, Layout, Object, ObjectSpec, Scene, Spec};
use super::shapes::{half_height, moments, polygon, Outline};
use super::vocab::{compatible, Background, Color, Place, Relation, Shape, Size};
use super::SIZE;
use crate::rng::Rng;

pub use super::concepts_score::{best_concept, identify, two_concepts_present_apart, Detection, Identity};

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
    fn color_at(self, u: f32, v: f32) -> Color {
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

/// What one placed item is: a concept or a regular world object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Subject {
    Concept(NovelConcept),
    World(Color, Shape),
}

/// An item on the canvas: centre in pixels, `extent` the side of the box it fits (as `Object`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placed {
    pub subject: Subject,
    pub center: [f32; 2],
    pub extent: f32,
}

/// A scene with concepts: one background and one or two items.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptScene {
    pub background: Background,
    pub items: Vec<Placed>,
}

/// Subsamples per side and edge band, as `render` (4 x 4 supersampling of edge pixels only).
const SUBSAMPLES: usize = 4;
const EDGE_BAND: f32 = 0.75;

/// Coverage of pixel (col, row) by `geometry` centred at `center` with half side `h` pixels.
pub fn concept_coverage(geometry: Geometry, center: [f32; 2], h: f32, col: usize, row: usize) -> f32 {
    let at = |x: f32, y: f32| geometry.sdf((x - center[0]) / h, (y - center[1]) / h);
    let d = at(col as f32 + 0.5, row as f32 + 0.5) * h;
    if d > EDGE_BAND {
        return 0.0;
    }
    if d < -EDGE_BAND {
        return 1.0;
    }
    let n = SUBSAMPLES as f32;
    let hits = (0..SUBSAMPLES * SUBSAMPLES).filter(|k| at(col as f32 + ((k / SUBSAMPLES) as f32 + 0.5) / n, row as f32 + ((k % SUBSAMPLES) as f32 + 0.5) / n) <= 0.0).count();
    hits as f32 / (n * n)
}

/// Renders a scene: world objects through the world's renderer, then concepts over them.
pub fn render_scene(scene: &ConceptScene) -> Vec<u8> {
    let objects = scene
        .items
        .iter()
        .filter_map(|p| match p.subject {
            Subject::World(color, shape) => Some(Object { color, shape, size: size_of(p.extent), center: p.center, extent: p.extent }),
            Subject::Concept(_) => None,
        })
        .collect();
    let mut image = render(&Scene { background: scene.background, layout: Layout::Single { place: Some(Place::Center) }, objects });
    for p in &scene.items {
        if let Subject::Concept(concept) = p.subject {
            draw_concept(&mut image, &concept, p.center, p.extent);
        }
    }
    image
}

fn size_of(extent: f32) -> Size {
    if extent >= super::score::SIZE_THRESHOLD {
        Size::Large
    } else {
        Size::Small
    }
}

/// Blends a concept over the image: interior pixels of flat looks take the colour outright, every
/// other touched pixel averages its 4 x 4 subsamples' colours (so pattern edges are anti-aliased
/// like outlines).
fn draw_concept(image: &mut [u8], concept: &NovelConcept, center: [f32; 2], extent: f32) {
    if image.len() != IMAGE_BYTES {
        return;
    }
    let h = (extent / 2.0).max(0.5);
    let half = concept.geometry.frame().half;
    let clip = |v: f32| (v.max(0.0) as usize).min(SIZE);
    let (c0, c1) = (clip((center[0] - h * half[0]).floor()), clip((center[0] + h * half[0]).ceil() + 1.0));
    let (r0, r1) = (clip((center[1] - h * half[1]).floor()), clip((center[1] + h * half[1]).ceil() + 1.0));
    for row in r0..r1 {
        for col in c0..c1 {
            if let Some((cover, color)) = shade(concept, center, h, col, row) {
                let at = (row * SIZE + col) * 3;
                for (k, value) in image[at..at + 3].iter_mut().enumerate() {
                    let below = f32::from(*value);
                    *value = (below + (color[k] / cover - below) * cover).round().clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
}

/// A pixel's coverage and the coverage-weighted sum of its subsamples' colours; `None` if untouched.
fn shade(concept: &NovelConcept, center: [f32; 2], h: f32, col: usize, row: usize) -> Option<(f32, [f32; 3])> {
    let uv = |x: f32, y: f32| ((x - center[0]) / h, (y - center[1]) / h);
    let (u, v) = uv(col as f32 + 0.5, row as f32 + 0.5);
    let d = concept.geometry.sdf(u, v) * h;
    if d > EDGE_BAND {
        return None;
    }
    if let (Look::Flat(c), true) = (concept.look, d < -EDGE_BAND) {
        return Some((1.0, c.rgb().map(f32::from)));
    }
    let n = SUBSAMPLES as f32;
    let (mut hits, mut sum) = (0.0f32, [0.0f32; 3]);
    for k in 0..SUBSAMPLES * SUBSAMPLES {
        let (u, v) = uv(col as f32 + ((k % SUBSAMPLES) as f32 + 0.5) / n, row as f32 + ((k / SUBSAMPLES) as f32 + 0.5) / n);
        if concept.geometry.sdf(u, v) <= 0.0 {
            let rgb = concept.look.color_at(u, v).rgb();
            hits += 1.0 / (n * n);
            sum = std::array::from_fn(|i| sum[i] + f32::from(rgb[i]) / (n * n));
        }
    }
    (hits > 0.0).then_some((hits, sum))
}

/// World placement for `layout` with the given sizes (`None`: drawn), via the world's own
/// `realize`, so concepts land exactly where world objects of the same words would.
fn placements(layout: Layout, sizes: &[Option<Size>], background: Background, rng: &mut Rng) -> Vec<([f32; 2], f32)> {
    let objects = sizes.iter().map(|&size| ObjectSpec { color: Color::Red, shape: Shape::Square, size }).collect();
    let scene = realize_valid(&Spec { background: Some(background), layout, objects }, rng);
    scene.objects.iter().map(|o| (o.center, o.extent)).collect()
}

/// One concept at a world place and size on a background; `seed` jitters position and extent.
pub fn concept_scene(concept: &NovelConcept, place: Place, size: Size, background: Background, seed: u64) -> ConceptScene {
    let mut rng = Rng::new(seed);
    let items = placements(Layout::Single { place: Some(place) }, &[Some(size)], background, &mut rng)
        .into_iter()
        .map(|(center, extent)| Placed { subject: Subject::Concept(*concept), center, extent })
        .collect();
    ConceptScene { background, items }
}

/// `concept_scene`, rendered: 64 x 64 RGB as `render::render`.
pub fn render_concept(concept: &NovelConcept, place: Place, size: Size, background: Background, seed: u64) -> Vec<u8> {
    render_scene(&concept_scene(concept, place, size, background, seed))
}

/// Two items, `a` in `relation` to `b` (`LeftOf`: a on the left), sizes drawn from `seed`.
pub fn pair_scene(a: Subject, b: Subject, relation: Relation, background: Background, seed: u64) -> ConceptScene {
    let mut rng = Rng::new(seed);
    let spots = placements(Layout::Pair { relation }, &[None, None], background, &mut rng);
    let items = [a, b].into_iter().zip(spots).map(|(subject, (center, extent))| Placed { subject, center, extent }).collect();
    ConceptScene { background, items }
}

/// What a teaching image shows besides the concept, in the world's caption words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TeachingWords {
    pub size: Size,
    pub place: Place,
    pub background: Background,
}

impl TeachingWords {
    /// The words as caption phrases: `["large", "on the left", "on a night background"]`.
    pub fn phrases(&self) -> Vec<String> {
        vec![self.size.name().to_string(), self.place.phrase().to_string(), format!("on a {} background", self.background)]
    }

    /// The world's caption template with the concept token as noun:
    /// "a large <crescent> on the left on a night background".
    pub fn prompt(&self, concept: &NovelConcept) -> String {
        format!("a {} {} {} on a {} background", self.size, concept.token(), self.place.phrase(), self.background)
    }
}

/// Backgrounds every colour of the concept can be drawn on (world rule `compatible`).
pub fn backgrounds_for(concept: &NovelConcept) -> Vec<Background> {
    Background::ALL.iter().copied().filter(|&b| concept.look.colors().iter().all(|&c| compatible(c, b))).collect()
}

/// `n` teaching images with their words: places all differ (up to five), sizes alternate, and
/// backgrounds cycle through the compatible ones, each list in a seeded order.
pub fn teaching_images(concept: &NovelConcept, n: usize, seed: u64) -> Vec<(Vec<u8>, TeachingWords)> {
    let key = concept.name.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let mut rng = item_rng(seed, key, TEACHING_STREAM);
    let places = shuffled(&mut rng, Place::ALL);
    let backgrounds = shuffled(&mut rng, &backgrounds_for(concept));
    let first_size = below(&mut rng, 2);
    (0..n)
        .map(|i| {
            let words = TeachingWords {
                size: Size::ALL[(first_size + i) % 2],
                place: places[i % places.len()],
                background: backgrounds.get(i % backgrounds.len().max(1)).copied().unwrap_or(Background::Gray),
            };
            let image = render_concept(concept, words.place, words.size, words.background, u64::from(rng.next_u32()));
            (image, words)
        })
        .collect()
}

/// `item_rng` stream for teaching images (the world uses 0 and 1).
const TEACHING_STREAM: u64 = 0x7EAC;

/// Fisher-Yates with the world's uniform index.
fn shuffled<T: Copy>(rng: &mut Rng, items: &[T]) -> Vec<T> {
    let mut out = items.to_vec();
    for i in (1..out.len()).rev() {
        out.swap(i, below(rng, i + 1));
    }
    out
}
