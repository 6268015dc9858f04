//! Reading novel concepts back from an image, the way `score` reads the world: the background and
//! blobs from `segment`, then per object its colour make-up (which palette colours its solid pixels
//! show, and in what shares) and its outline (soft IoU with a template placed by area and centroid,
//! as `classify`). An object is a concept when it shows the concept's colours and its outline fits
//! the concept's better than any other world shape; otherwise it is the world shape that fits, or
//! nothing recognisable.

use serde::Serialize;

use super::classify::{classify, match_template};
use super::concepts_seam as seam;
use super::concepts::{concept_coverage, novel_concepts, Geometry, Look, NovelConcept};
use super::render::IMAGE_BYTES;
use super::segment::{self, distance, pixel, ALPHA_FLOOR, MIN_PIXELS};
use super::vocab::{Color, Shape};
use super::SIZE;

/// A pixel this close to a palette colour shows that colour (solid, not a mix with the background);
/// under half the closest palette pair's distance (71, orange/yellow).
const LABEL_DISTANCE: f32 = 34.0;
/// A colour counts in an object's make-up from this share of its labelled pixels.
const MIN_SHARE: f32 = 0.2;
/// The concept's colours must account for at least this share of the labelled pixels.
const MIN_TOTAL_SHARE: f32 = 0.7;
/// Below this template IoU an outline is not recognised at all.
const MIN_IOU: f32 = 0.6;
/// How far around a blob its soft edges are looked for, in pixels (as `score`).
const EDGE_REACH: usize = 3;

/// What an object was read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Identity {
    Concept(&'static str),
    World(Shape),
    Unknown,
}

/// One object read from an image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    pub identity: Identity,
    /// Soft IoU of the object with the chosen outline's template (1 = perfect).
    pub iou: f32,
    /// Palette colours of the solid pixels and their shares, largest first.
    pub colors: Vec<(Color, f32)>,
    /// Bounding-box centre `[x, y]` in pixels, of the pixels at least half covered.
    pub center: [f32; 2],
    /// `[x0, x1, y0, y1]` in pixels (ends exclusive).
    pub bbox: [f32; 4],
    /// Longer side of the bounding box, in pixels.
    pub extent: f32,
    /// Pixels at least half covered.
    pub pixels: usize,
}

impl Detection {
    pub fn concept(&self) -> Option<&'static str> {
        match self.identity {
            Identity::Concept(name) => Some(name),
            _ => None,
        }
    }
}

/// Every object in a 64 x 64 RGB image, largest first, each identified among `concepts` and the
/// world's shapes. An image of the wrong size has no objects.
pub fn identify(rgb: &[u8], concepts: &[NovelConcept]) -> Vec<Detection> {
    if rgb.len() != IMAGE_BYTES {
        return Vec::new();
    }
    let (_, bg) = segment::background(rgb);
    let blobs = seam::join(rgb, bg, merge_overlapping(segment::components(&foreground(rgb, bg, concepts))), concepts);
    let owner = seam::owners(&blobs);
    let mut found: Vec<Detection> = blobs.iter().enumerate().filter_map(|(k, blob)| read(&Blob { rgb, pixels: blob, owner: &owner, me: k, bg }, concepts)).collect();
    found.sort_by_key(|d| std::cmp::Reverse(d.pixels));
    found
}

/// The concept shown by the largest object read as one of `concepts`, if any.
pub fn best_concept(rgb: &[u8], concepts: &[NovelConcept]) -> Option<&'static str> {
    identify(rgb, concepts).iter().find_map(Detection::concept)
}

/// Whether the image shows `a` and `b` as two separate objects whose boxes do not overlap. Read
/// against every known concept (plus `a` and `b`), so that a look-alike counts as itself.
pub fn two_concepts_present_apart(rgb: &[u8], a: &NovelConcept, b: &NovelConcept) -> bool {
    let mut known = novel_concepts();
    for c in [a, b] {
        if !known.iter().any(|k| k.name == c.name) {
            known.push(*c);
        }
    }
    let found = identify(rgb, &known);
    let apart = |p: &Detection, q: &Detection| p.bbox[1] <= q.bbox[0] || q.bbox[1] <= p.bbox[0] || p.bbox[3] <= q.bbox[2] || q.bbox[3] <= p.bbox[2];
    found.iter().enumerate().any(|(i, p)| {
        p.concept() == Some(a.name) && found.iter().enumerate().any(|(j, q)| j != i && q.concept() == Some(b.name) && apart(p, q))
    })
}

/// A pattern pixel this far (at most) from a full mix of its two colours is solid.
const MIX_RESIDUAL: f32 = 30.0;
/// Covered at least this much by a two-colour mix, a pixel is solid.
const MIX_SOLID: f32 = 0.8;

/// The world's foreground rule, widened by the patterns' edges: a pixel that is a nearly full mix
/// of a pattern's two colours is foreground too. The world's rule alone reads some such mixes (green
/// and purple make a dark gray) as a half mix of the background and a third colour, and would cut
/// a striped object into stripes.
fn foreground(rgb: &[u8], bg: [f32; 3], concepts: &[NovelConcept]) -> Vec<bool> {
    let pairs: Vec<[[f32; 3]; 2]> = concepts
        .iter()
        .filter_map(|c| match c.look.colors()[..] {
            [a, b] => Some([a.rgb().map(f32::from), b.rgb().map(f32::from)]),
            _ => None,
        })
        .collect();
    (0..SIZE * SIZE)
        .map(|i| {
            let p = pixel(rgb, i);
            segment::is_foreground(p, bg) || pairs.iter().any(|&[a, b]| pair_mix(p, bg, a, b).is_some_and(|(alpha, residual)| alpha >= MIX_SOLID && residual <= MIX_RESIDUAL))
        })
        .collect()
}

/// Joins blobs whose boxes overlap, whatever their colours: a pattern or a generated outline may
/// break into pieces, while separate objects (world or concept) never share box area.
fn merge_overlapping(mut blobs: Vec<Vec<usize>>) -> Vec<Vec<usize>> {
    let overlap = |a: [usize; 4], b: [usize; 4]| a[0] <= b[1] && b[0] <= a[1] && a[2] <= b[3] && b[2] <= a[3];
    'again: loop {
        for i in 0..blobs.len() {
            for j in i + 1..blobs.len() {
                if overlap(segment::bounds(&blobs[i]), segment::bounds(&blobs[j])) {
                    let taken = blobs.swap_remove(j);
                    blobs[i].extend(taken);
                    continue 'again;
                }
            }
        }
        return blobs;
    }
}

/// One blob and what coverage maps need around it.
pub(super) struct Blob<'a> {
    pub rgb: &'a [u8],
    pub pixels: &'a [usize],
    pub owner: &'a [Option<usize>],
    pub me: usize,
    pub bg: [f32; 3],
}

/// Reads one blob; `None` if too little of it is at least half covered.
pub(super) fn read(blob: &Blob, concepts: &[NovelConcept]) -> Option<Detection> {
    let colors = color_shares(blob);
    let fills = own_fills(blob, &colors);
    let coverage = mix_coverage(blob, &fills);
    let solid: Vec<usize> = blob.pixels.iter().copied().filter(|&i| coverage[i] >= 0.5).collect();
    if solid.len() < MIN_PIXELS {
        return None;
    }
    let [c0, c1, r0, r1] = segment::bounds(&solid);
    let bbox = [c0 as f32, (c1 + 1) as f32, r0 as f32, (r1 + 1) as f32];
    let (shape, world_iou) = classify(&coverage);
    let concept = concepts
        .iter()
        .filter(|c| shows_colors(c.look, &colors))
        .filter_map(|c| concept_fit(blob, c).map(|iou| (c.name, iou)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let (identity, iou) = match concept {
        Some((name, iou)) => (Identity::Concept(name), iou),
        None if world_iou >= MIN_IOU => (Identity::World(shape), world_iou),
        None => (Identity::Unknown, world_iou),
    };
    Some(Detection {
        identity,
        iou,
        colors,
        center: [(bbox[0] + bbox[1]) / 2.0, (bbox[2] + bbox[3]) / 2.0],
        bbox,
        extent: (bbox[1] - bbox[0]).max(bbox[3] - bbox[2]),
        pixels: solid.len(),
    })
}

/// How well the blob's outline fits concept `c` (its coverage read against `c`'s colours), if it
/// fits at all: a world-shape geometry must be the world shape `classify` picks; a new outline must
/// reach `MIN_IOU` and beat every world shape.
fn concept_fit(blob: &Blob, c: &NovelConcept) -> Option<f32> {
    let fills: Vec<[f32; 3]> = c.look.colors().iter().map(|k| k.rgb().map(f32::from)).collect();
    let coverage = mix_coverage(blob, &fills);
    let coverage = match fills[..] {
        [a, b] => seam::close(&coverage, &nearer_fill(blob.rgb, a, b)),
        _ => coverage,
    };
    let (shape, world_iou) = classify(&coverage);
    match c.geometry {
        Geometry::World(s) => (s == shape && world_iou >= MIN_IOU).then_some(world_iou),
        g => {
            let iou = template_iou(&coverage, g);
            (iou >= MIN_IOU && iou > world_iou).then_some(iou)
        }
    }
}

/// Per pixel, 1 where it is nearer `b` than `a`, else 0.
fn nearer_fill(rgb: &[u8], a: [f32; 3], b: [f32; 3]) -> Vec<u8> {
    (0..SIZE * SIZE).map(|i| u8::from(distance(pixel(rgb, i), b) < distance(pixel(rgb, i), a))).collect()
}

/// Soft IoU with `geometry`'s template placed by area and centroid (unchanged by blur).
fn template_iou(coverage: &[f32], geometry: Geometry) -> f32 {
    let mass: f32 = coverage.iter().sum();
    let frame = geometry.frame();
    if mass <= 0.0 || frame.area <= 0.0 {
        return 0.0;
    }
    let (mut mx, mut my) = (0.0f32, 0.0f32);
    for (i, &a) in coverage.iter().enumerate() {
        mx += a * ((i % SIZE) as f32 + 0.5);
        my += a * ((i / SIZE) as f32 + 0.5);
    }
    let h = (mass / frame.area).sqrt();
    let center = [mx / mass - h * frame.centroid[0], my / mass - h * frame.centroid[1]];
    match_template(coverage, &|col, row| concept_coverage(geometry, center, h, col, row))
}

/// Shares of the blob's solid pixels per palette colour (pixels within `LABEL_DISTANCE` of one),
/// largest first; empty if almost none is solid.
fn color_shares(blob: &Blob) -> Vec<(Color, f32)> {
    let mut counts = [0usize; 10];
    for &i in blob.pixels {
        let p = pixel(blob.rgb, i);
        let nearest = Color::ALL.iter().map(|&c| (distance(p, c.rgb().map(f32::from)), c)).min_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((_, c)) = nearest.filter(|(d, _)| *d <= LABEL_DISTANCE) {
            counts[c.index()] += 1;
        }
    }
    let total: usize = counts.iter().sum();
    if total < MIN_PIXELS / 2 {
        return Vec::new();
    }
    let mut shares: Vec<(Color, f32)> = Color::ALL.iter().map(|&c| (c, counts[c.index()] as f32 / total as f32)).filter(|&(_, s)| s > 0.0).collect();
    shares.sort_by(|a, b| b.1.total_cmp(&a.1));
    shares
}

/// Whether a make-up shows a look's colours: its one colour dominates, or both of its two colours
/// are present and together dominate.
fn shows_colors(look: Look, shares: &[(Color, f32)]) -> bool {
    let share = |c: Color| shares.iter().find(|s| s.0 == c).map_or(0.0, |s| s.1);
    let colors = look.colors();
    colors.iter().all(|&c| share(c) >= MIN_SHARE) && colors.iter().map(|&c| share(c)).sum::<f32>() >= MIN_TOTAL_SHARE
}

/// The fill colours to read the blob's own coverage with: its (up to two) main palette colours,
/// else its core colour as seen (an off-palette or blurred object).
fn own_fills(blob: &Blob, shares: &[(Color, f32)]) -> Vec<[f32; 3]> {
    let main: Vec<[f32; 3]> = shares.iter().filter(|s| s.1 >= MIN_SHARE).take(2).map(|s| s.0.rgb().map(f32::from)).collect();
    if main.is_empty() {
        vec![segment::fill_color(blob.rgb, blob.pixels, blob.bg)]
    } else {
        main
    }
}

/// Coverage over the canvas: for pixels within `EDGE_REACH` of the blob's box that no other blob
/// owns, the share of the pixel that is fill rather than background, reading it as background plus
/// non-negative amounts of the (one or two) fills. Two fills matter for patterns: a pixel on a
/// stripe edge mixes both colours and is fully covered, though it lies on neither colour's line.
fn mix_coverage(blob: &Blob, fills: &[[f32; 3]]) -> Vec<f32> {
    let mut out = vec![0.0f32; SIZE * SIZE];
    let [c0, c1, r0, r1] = segment::bounds(blob.pixels);
    for row in r0.saturating_sub(EDGE_REACH)..(r1 + EDGE_REACH + 1).min(SIZE) {
        for col in c0.saturating_sub(EDGE_REACH)..(c1 + EDGE_REACH + 1).min(SIZE) {
            let i = row * SIZE + col;
            if blob.owner[i].is_some_and(|o| o != blob.me) {
                continue;
            }
            let alpha = mix_alpha(pixel(blob.rgb, i), blob.bg, fills);
            out[i] = if alpha >= ALPHA_FLOOR { alpha } else { 0.0 };
        }
    }
    out
}

/// Non-negative least squares of `p - bg` on the fills' directions from `bg` (one or two), summed
/// and clamped to [0, 1].
fn mix_alpha(p: [f32; 3], bg: [f32; 3], fills: &[[f32; 3]]) -> f32 {
    let best_single = fills.iter().map(|c| segment::on_line(p, bg, *c)).min_by(|a, b| a.1.total_cmp(&b.1)).map_or(0.0, |(alpha, _)| alpha);
    match fills {
        [a, b] => pair_mix(p, bg, *a, *b).map_or(best_single, |(alpha, _)| alpha),
        _ => best_single,
    }
}

/// `p - bg` as `x (a - bg) + y (b - bg)` by least squares: `x + y` clamped to [0, 1] and the
/// residual's length, or `None` where the fit needs a negative amount or the directions are parallel.
fn pair_mix(p: [f32; 3], bg: [f32; 3], a: [f32; 3], b: [f32; 3]) -> Option<(f32, f32)> {
    let sub = |x: [f32; 3]| [x[0] - bg[0], x[1] - bg[1], x[2] - bg[2]];
    let dot = |x: [f32; 3], y: [f32; 3]| x[0] * y[0] + x[1] * y[1] + x[2] * y[2];
    let (da, db, dp) = (sub(a), sub(b), sub(p));
    let (aa, bb, ab) = (dot(da, da), dot(db, db), dot(da, db));
    let det = aa * bb - ab * ab;
    if det.abs() < 1.0 {
        return None;
    }
    let (pa, pb) = (dot(dp, da), dot(dp, db));
    let (x, y) = ((pa * bb - pb * ab) / det, (pb * aa - pa * ab) / det);
    if x < 0.0 || y < 0.0 {
        return None;
    }
    let r: [f32; 3] = std::array::from_fn(|k| dp[k] - x * da[k] - y * db[k]);
    Some(((x + y).clamp(0.0, 1.0), dot(r, r).sqrt()))
}

#[cfg(test)]
mod tests {
    use super::super::concepts::{backgrounds_for, render_concept, teaching_images, NovelConcept};
    use super::super::vocab::{Background, Place, Size};
    use super::*;

    #[test]
    fn names_are_unique_prompt_tokens_and_enough() {
        let concepts = novel_concepts();
        assert!(concepts.len() >= 10);
        for (k, c) in concepts.iter().enumerate() {
            assert!(!c.name.is_empty() && c.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'), "{}", c.name);
            assert!(concepts[..k].iter().all(|o| o.name != c.name && (o.geometry, o.look) != (c.geometry, c.look)), "{}", c.name);
            assert!(Shape::from_name(c.name).is_none() && Color::from_name(c.name).is_none(), "{} is a world word", c.name);
            assert!(!backgrounds_for(c).is_empty());
        }
    }

    /// Coverage of a concept's outline drawn 28 px wide at the canvas centre.
    fn big(geometry: Geometry) -> Vec<f32> {
        (0..SIZE * SIZE).map(|i| concept_coverage(geometry, [32.0, 32.0], 14.0, i % SIZE, i / SIZE)).collect()
    }

    #[test]
    fn new_outlines_fill_their_box_and_are_no_world_shape() {
        for c in novel_concepts() {
            let frame = c.geometry.frame();
            assert!((frame.half[0].max(frame.half[1]) - 1.0).abs() < 0.01, "{}: {:?}", c.name, frame);
            let coverage = big(c.geometry);
            let (shape, world) = classify(&coverage);
            match c.geometry {
                Geometry::World(s) => assert_eq!(shape, s),
                g => {
                    let own = template_iou(&coverage, g);
                    assert!(own > 0.97 && world < own - 0.15, "{}: own {own}, {shape} {world}", c.name);
                }
            }
        }
    }

    #[test]
    fn teaching_images_vary_and_repeat_with_the_seed() {
        for c in novel_concepts() {
            let set = teaching_images(&c, 4, 9);
            assert_eq!(set, teaching_images(&c, 4, 9));
            assert_ne!(set, teaching_images(&c, 4, 10));
            let words: Vec<_> = set.iter().map(|(_, w)| *w).collect();
            for (k, w) in words.iter().enumerate() {
                assert!(words[..k].iter().all(|o| o.place != w.place), "{}: {words:?}", c.name);
                assert!(w.prompt(&c).starts_with(&format!("a {} <{}> ", w.size, c.name)));
                assert_eq!(w.phrases().len(), 3);
            }
            assert!(Size::ALL.iter().all(|s| words.iter().any(|w| w.size == *s)));
            assert!(words.iter().map(|w| w.background).collect::<std::collections::HashSet<_>>().len() >= 2.min(backgrounds_for(&c).len()));
            assert!(set.iter().all(|(image, _)| best_concept(image, &novel_concepts()) == Some(c.name)), "{}", c.name);
        }
    }

    #[test]
    fn patterns_show_both_colours_and_their_edges_are_solid() {
        let two: Vec<NovelConcept> = novel_concepts().into_iter().filter(|c| c.look.colors().len() == 2).collect();
        assert!(two.len() >= 3);
        for c in &two {
            let image = render_concept(c, Place::Center, Size::Large, Background::Gray, 4);
            let found = identify(&image, &[*c]);
            assert_eq!(found.len(), 1, "{}", c.name);
            for color in c.look.colors() {
                assert!(found[0].colors.iter().any(|&(k, s)| k == color && s >= 0.3), "{}: {:?}", c.name, found[0].colors);
            }
            let [a, b] = [0, 1].map(|k| c.look.colors()[k].rgb().map(f32::from));
            let middle: [f32; 3] = std::array::from_fn(|k| (a[k] + b[k]) / 2.0);
            let (alpha, residual) = pair_mix(middle, [180.0; 3], a, b).unwrap_or((0.0, f32::INFINITY));
            assert!(alpha > 0.99 && residual < 1.0, "{}", c.name);
        }
    }
}
