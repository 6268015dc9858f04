//! Scenes of the novel concepts (`concepts`): placing concepts and world objects with the world's
//! rules, rendering them anti-aliased like the world's shapes, and the teaching pictures of a
//! lesson (varied place, size and background, with the words that describe them).

use super::concepts::{Geometry, Look, NovelConcept};
use super::render::{render, IMAGE_BYTES};
use super::sample::item_rng;
use super::scene::{below, realize_valid, Layout, Object, ObjectSpec, Scene, Spec};
use super::vocab::{compatible, Background, Color, Place, Relation, Shape, Size};
use super::SIZE;
use crate::rng::Rng;

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
