//! The world's analytic scorer: reads the background and objects back from an RGB image
//! (`detect`) and says, attribute by attribute, whether the image shows what a spec asks for
//! (`judge`, `check`).
//!
//! Objects are blobs of pixels at least half covered by some colour (`segment`). An object's
//! colour is the palette colour whose mixes with the background best explain its core pixels
//! (within `MAX_COLOR_DISTANCE`); its shape is the template that best matches its coverage map
//! (`classify`); its size comes from the longer side of its bounding box and its centre is the box
//! centre, as in the scene's geometry.

use serde::Serialize;

use super::classify::classify;
use super::render::IMAGE_BYTES;
use super::scene::{Layout, ObjectSpec, Spec};
use super::segment::{self, MIN_PIXELS};
use super::vocab::{Background, Color, Shape, Size};
use super::SIZE;
use crate::{Error, Result};

/// A blob whose core pixels lie farther than this (median) from every background-to-palette
/// colour line has no colour. Generous, for a model's slightly wrong colours: the palette's lines
/// are never closer than 17 to another palette colour.
pub const MAX_COLOR_DISTANCE: f32 = 60.0;
/// Longer bounding-box side that separates small (12.5..15.5 px) from large (26..29 px).
pub const SIZE_THRESHOLD: f32 = 20.5;
/// How far around a blob its soft edges are looked for, in pixels.
const EDGE_REACH: usize = 3;

/// One object read from an image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectedObject {
    /// Best-fitting palette colour, `None` if none is within `MAX_COLOR_DISTANCE`.
    pub color: Option<Color>,
    /// The blob's core colour as seen.
    pub rgb: [u8; 3],
    pub shape: Shape,
    /// Soft IoU of the blob with the chosen shape's template (1 = perfect).
    pub shape_iou: f32,
    pub size: Size,
    /// Longer side of the bounding box, in pixels.
    pub extent: f32,
    /// Bounding-box centre `[x, y]`, in pixels.
    pub center: [f32; 2],
    /// `[x0, x1, y0, y1]` in pixels, of the pixels at least half covered.
    pub bbox: [f32; 4],
    /// Pixels at least half covered.
    pub pixels: usize,
}

/// What an image shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// `None` if no background colour covers a fair share of the canvas.
    pub background: Option<Background>,
    pub background_rgb: [u8; 3],
    /// Largest first.
    pub objects: Vec<DetectedObject>,
}

/// Reads a 64 x 64 RGB image (row-major, channels interleaved, 0..=255).
pub fn detect(rgb: &[u8]) -> Result<Detection> {
    if rgb.len() != IMAGE_BYTES {
        return Err(Error::InvalidInput(format!("scorer: expected {SIZE} x {SIZE} x 3 = {IMAGE_BYTES} bytes, got {}", rgb.len())));
    }
    let (background, bg) = segment::background(rgb);
    let blobs = merge_broken(rgb, segment::blobs(rgb, bg), bg);
    let mut owner = vec![None; SIZE * SIZE];
    for (k, blob) in blobs.iter().enumerate() {
        blob.iter().for_each(|&i| owner[i] = Some(k));
    }
    let mut objects: Vec<DetectedObject> = blobs.iter().enumerate().filter_map(|(k, blob)| read_object(rgb, blob, &owner, k, bg)).collect();
    objects.sort_by_key(|o| std::cmp::Reverse(o.pixels));
    Ok(Detection { background, background_rgb: bg.map(|v| v as u8), objects })
}

/// `detect` for a float image in [0, 1] (same layout), as a model decodes it.
pub fn detect_f32(rgb: &[f32]) -> Result<Detection> {
    let bytes: Vec<u8> = rgb.iter().map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8).collect();
    detect(&bytes)
}

/// Joins blobs of one colour whose bounding boxes overlap: a generated ring or cross sometimes
/// breaks into pieces, while the world's separate objects never share box area.
fn merge_broken(rgb: &[u8], mut blobs: Vec<Vec<usize>>, bg: [f32; 3]) -> Vec<Vec<usize>> {
    let color_of = |blob: &[usize]| segment::fit_color(rgb, blob, bg).0;
    let overlap = |a: [usize; 4], b: [usize; 4]| a[0] <= b[1] && b[0] <= a[1] && a[2] <= b[3] && b[2] <= a[3];
    let mut merged = true;
    while merged {
        merged = false;
        'search: for i in 0..blobs.len() {
            for j in i + 1..blobs.len() {
                if overlap(segment::bounds(&blobs[i]), segment::bounds(&blobs[j])) && color_of(&blobs[i]) == color_of(&blobs[j]) {
                    let taken = blobs.swap_remove(j);
                    blobs[i].extend(taken);
                    merged = true;
                    break 'search;
                }
            }
        }
    }
    blobs
}

/// Blob `me`'s colour, geometry and shape; `None` if too little of it is at least half covered.
fn read_object(rgb: &[u8], blob: &[usize], owner: &[Option<usize>], me: usize, bg: [f32; 3]) -> Option<DetectedObject> {
    let (nearest, cost) = segment::fit_color(rgb, blob, bg);
    let seen = segment::fill_color(rgb, blob, bg);
    let color = (cost <= MAX_COLOR_DISTANCE).then_some(nearest);
    // Coverage is measured against the palette colour when there is one: a blurred object's
    // pixels are mixes of it, and its own core may never reach it.
    let fill = color.map_or(seen, |c| c.rgb().map(f32::from));
    let coverage = segment::coverage(rgb, blob, owner, me, bg, fill, EDGE_REACH);
    let solid: Vec<usize> = blob.iter().copied().filter(|&i| coverage[i] >= 0.5).collect();
    if solid.len() < MIN_PIXELS {
        return None;
    }
    let [c0, c1, r0, r1] = segment::bounds(&solid);
    let bbox = [c0 as f32, (c1 + 1) as f32, r0 as f32, (r1 + 1) as f32];
    let extent = (bbox[1] - bbox[0]).max(bbox[3] - bbox[2]);
    let (shape, shape_iou) = classify(&coverage);
    Some(DetectedObject {
        color,
        rgb: seen.map(|v| v as u8),
        shape,
        shape_iou,
        size: if extent >= SIZE_THRESHOLD { Size::Large } else { Size::Small },
        extent,
        center: [(bbox[0] + bbox[1]) / 2.0, (bbox[2] + bbox[3]) / 2.0],
        bbox,
        pixels: solid.len(),
    })
}

/// Per attribute, whether an image shows what a spec asks for. `None` where the spec does not ask
/// (no size, place, background or relation named). `count` asks for exactly as many objects as the
/// spec names; `all` holds when every attribute that applies (count included) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Verdict {
    pub color: bool,
    pub shape: bool,
    pub size: Option<bool>,
    pub place: Option<bool>,
    pub background: Option<bool>,
    pub relation: Option<bool>,
    pub count: bool,
    pub all: bool,
}

impl Verdict {
    /// Attribute names, in the order of `marks`.
    pub const ATTRIBUTES: [&'static str; 8] = ["color", "shape", "size", "place", "background", "relation", "count", "all"];

    /// Each attribute's outcome, `None` where the spec did not ask.
    pub fn marks(&self) -> [Option<bool>; 8] {
        [Some(self.color), Some(self.shape), self.size, self.place, self.background, self.relation, Some(self.count), Some(self.all)]
    }
}

/// Verdicts counted per attribute, for accuracy tables.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Tally {
    /// Per attribute (`Verdict::ATTRIBUTES` order): how often it was asked and how often right.
    pub asked: [usize; 8],
    pub right: [usize; 8],
}

impl Tally {
    pub fn add(&mut self, verdict: &Verdict) {
        for (k, mark) in verdict.marks().iter().enumerate() {
            if let Some(ok) = mark {
                self.asked[k] += 1;
                self.right[k] += usize::from(*ok);
            }
        }
    }

    /// Share right per attribute, `None` where never asked.
    pub fn rates(&self) -> [Option<f32>; 8] {
        std::array::from_fn(|k| (self.asked[k] > 0).then(|| self.right[k] as f32 / self.asked[k] as f32))
    }
}

/// Detects and judges in one go.
pub fn check(rgb: &[u8], spec: &Spec) -> Result<Verdict> {
    spec.validate()?;
    Ok(judge(spec, &detect(rgb)?))
}

/// Judges a detection against a spec, pairing each spec object with the detected object that
/// matches it best (objects are never shared).
pub fn judge(spec: &Spec, detection: &Detection) -> Verdict {
    let found = assign(&spec.objects, &detection.objects);
    let each = |test: &dyn Fn(&ObjectSpec, &DetectedObject) -> bool| spec.objects.iter().zip(&found).all(|(s, d)| d.is_some_and(|d| test(s, d)));
    let color = each(&|s, d| d.color == Some(s.color));
    let shape = each(&|s, d| d.shape == s.shape);
    let size = spec.objects.iter().any(|s| s.size.is_some()).then(|| each(&|s, d| s.size.is_none_or(|z| z == d.size)));
    let place = match spec.layout {
        Layout::Single { place: Some(place) } => Some(found.first().copied().flatten().is_some_and(|d| place.contains(d.center))),
        _ => None,
    };
    let relation = match (spec.layout, found.as_slice()) {
        (Layout::Pair { relation }, [a, b]) => Some(matches!((a, b), (Some(a), Some(b)) if relation.holds(a.center, b.center))),
        (Layout::Pair { .. }, _) => Some(false),
        _ => None,
    };
    let background = spec.background.map(|b| detection.background == Some(b));
    let count = detection.objects.len() == spec.objects.len();
    let all = color && shape && count && [size, place, background, relation].iter().all(|v| v.unwrap_or(true));
    Verdict { color, shape, size, place, background, relation, count, all }
}

/// How well a detected object fits a spec object: colour and shape weigh most, size breaks ties.
fn affinity(s: &ObjectSpec, d: &DetectedObject) -> u32 {
    4 * u32::from(d.color == Some(s.color)) + 4 * u32::from(d.shape == s.shape) + u32::from(s.size.is_none_or(|z| z == d.size))
}

/// For each spec object, the detected object given to it: the injective assignment with the
/// highest total affinity, ties going to larger objects. Unmatched spec objects get `None`.
fn assign<'a>(specs: &[ObjectSpec], found: &'a [DetectedObject]) -> Vec<Option<&'a DetectedObject>> {
    let score = |pick: &[Option<usize>]| -> (u32, usize) {
        let affinity_sum = specs.iter().zip(pick).map(|(s, p)| p.map_or(0, |i| affinity(s, &found[i]))).sum();
        let pixels = pick.iter().map(|p| p.map_or(0, |i| found[i].pixels)).sum();
        (affinity_sum, pixels)
    };
    let options: Vec<Option<usize>> = (0..found.len()).map(Some).chain([None]).collect();
    let mut best: (Vec<Option<usize>>, (u32, usize)) = (vec![None; specs.len()], (0, 0));
    let mut consider = |pick: Vec<Option<usize>>| {
        let s = score(&pick);
        if s > best.1 {
            best = (pick, s);
        }
    };
    match specs.len() {
        0 => {}
        1 => options.iter().for_each(|&a| consider(vec![a])),
        _ => {
            for &a in &options {
                for &b in options.iter().filter(|&&b| b.is_none() || b != a) {
                    consider(vec![a, b]);
                }
            }
        }
    }
    best.0.into_iter().map(|p| p.map(|i| &found[i])).collect()
}
