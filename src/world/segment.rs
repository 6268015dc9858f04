//! Image segmentation for the scorer: the background colour, the connected blobs of object
//! pixels, each blob's colour and its coverage (alpha) map. Every object pixel is read as a mix of
//! the background and one colour, which is exactly what anti-aliasing and blur produce; thresholds
//! sit far from every gap in the palette, and tiny blobs are dropped as speckles, so that a
//! generative model's noisy, blurred, slightly off-colour images still read right.

use super::vocab::{Background, Color};
use super::SIZE;

/// A pixel is in the background palette vote if it is this close to a background colour.
const BACKGROUND_VOTE_DISTANCE: f32 = 60.0;
/// A background wins only with at least this share of the canvas.
const BACKGROUND_MIN_SHARE: f32 = 0.3;
/// Pixels closer than this to the background colour are background outright: under half of the
/// smallest contrast the world draws (white on sand, 71), and about three noise sigmas at 8/255.
const FOREGROUND_DISTANCE: f32 = 30.0;
/// Blobs with fewer pixels than this are speckles. The smallest object (a 12.5 px star) covers
/// about 50 pixels.
pub(crate) const MIN_PIXELS: usize = 10;

pub(crate) fn distance(a: [f32; 3], b: [f32; 3]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

pub(crate) fn pixel(rgb: &[u8], i: usize) -> [f32; 3] {
    [f32::from(rgb[3 * i]), f32::from(rgb[3 * i + 1]), f32::from(rgb[3 * i + 2])]
}

fn to_f32(c: [u8; 3]) -> [f32; 3] {
    c.map(f32::from)
}

/// Per-channel median of the given pixels (a histogram per channel, so linear time).
pub(crate) fn median(rgb: &[u8], pixels: &[usize]) -> [f32; 3] {
    let mut out = [0.0; 3];
    for (k, value) in out.iter_mut().enumerate() {
        let mut histogram = [0usize; 256];
        for &i in pixels {
            histogram[rgb[3 * i + k] as usize] += 1;
        }
        let (mut seen, half) = (0, pixels.len().div_ceil(2));
        for (level, count) in histogram.iter().enumerate() {
            seen += count;
            if seen >= half {
                *value = level as f32;
                break;
            }
        }
    }
    out
}

/// The background by majority vote of nearest background colours, and the colour actually seen
/// there (the median of the voters; of the whole image if no background wins).
pub(crate) fn background(rgb: &[u8]) -> (Option<Background>, [f32; 3]) {
    let n = SIZE * SIZE;
    let mut voters: Vec<Vec<usize>> = vec![Vec::new(); Background::ALL.len()];
    for i in 0..n {
        let p = pixel(rgb, i);
        let nearest = Background::ALL.iter().map(|b| (distance(p, to_f32(b.rgb())), b.index())).min_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((_, k)) = nearest.filter(|(d, _)| *d < BACKGROUND_VOTE_DISTANCE) {
            voters[k].push(i);
        }
    }
    let (best, votes) = voters.iter().enumerate().max_by_key(|(_, v)| v.len()).map(|(k, v)| (k, v.len())).unwrap_or((0, 0));
    if (votes as f32) < BACKGROUND_MIN_SHARE * n as f32 {
        let all: Vec<usize> = (0..n).collect();
        return (None, median(rgb, &all));
    }
    (Some(Background::ALL[best]), median(rgb, &voters[best]))
}

/// Where a pixel falls relative to the line from the background colour `bg` to colour `c`: the
/// mix `alpha` in [0, 1] nearest to it and how far it lies from that mix.
pub(crate) fn on_line(p: [f32; 3], bg: [f32; 3], c: [f32; 3]) -> (f32, f32) {
    let axis = [c[0] - bg[0], c[1] - bg[1], c[2] - bg[2]];
    let offset = [p[0] - bg[0], p[1] - bg[1], p[2] - bg[2]];
    let norm = (axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2]).max(1.0);
    let alpha = ((offset[0] * axis[0] + offset[1] * axis[1] + offset[2] * axis[2]) / norm).clamp(0.0, 1.0);
    let residual = [offset[0] - alpha * axis[0], offset[1] - alpha * axis[1], offset[2] - alpha * axis[2]];
    (alpha, (residual[0] * residual[0] + residual[1] * residual[1] + residual[2] * residual[2]).sqrt())
}

/// A pixel farther than this from every background-to-palette line is "some other colour".
const OFF_PALETTE: f32 = 40.0;

/// Whether a pixel belongs to an object: it differs from the background and is at least half
/// covered by the palette colour whose mix with the background explains it best (or is explained
/// by none). Half-covered, not merely different: a blur bridges the 2 px gap between two objects
/// with faint mixes, and those must not join the objects into one blob.
pub(crate) fn is_foreground(p: [f32; 3], bg: [f32; 3]) -> bool {
    if distance(p, bg) <= FOREGROUND_DISTANCE {
        return false;
    }
    let best = Color::ALL.iter().map(|c| on_line(p, bg, to_f32(c.rgb()))).min_by(|a, b| a.1.total_cmp(&b.1));
    best.is_none_or(|(alpha, residual)| residual > OFF_PALETTE || alpha >= 0.5)
}

/// 8-connected components of the foreground, largest first, speckles dropped.
pub(crate) fn blobs(rgb: &[u8], bg: [f32; 3]) -> Vec<Vec<usize>> {
    let foreground: Vec<bool> = (0..SIZE * SIZE).map(|i| is_foreground(pixel(rgb, i), bg)).collect();
    components(&foreground)
}

/// 8-connected components of a canvas-sized foreground mask, largest first, speckles dropped
/// (apart from `blobs` so that the concepts scorer can widen the foreground rule).
pub(crate) fn components(foreground: &[bool]) -> Vec<Vec<usize>> {
    let n = SIZE * SIZE;
    if foreground.len() != n {
        return Vec::new();
    }
    let mut seen = vec![false; n];
    let mut out = Vec::new();
    for start in 0..n {
        if !foreground[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        let (mut blob, mut stack) = (Vec::new(), vec![start]);
        while let Some(i) = stack.pop() {
            blob.push(i);
            for j in neighbours(i) {
                if foreground[j] && !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        if blob.len() >= MIN_PIXELS {
            out.push(blob);
        }
    }
    out.sort_by_key(|b| std::cmp::Reverse(b.len()));
    out
}

/// The up to 8 pixels around pixel `i`.
fn neighbours(i: usize) -> impl Iterator<Item = usize> {
    let (row, col) = ((i / SIZE) as isize, (i % SIZE) as isize);
    let inside = |v: isize| (0..SIZE as isize).contains(&v);
    [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
        .into_iter()
        .map(move |(dr, dc)| (row + dr, col + dc))
        .filter(move |&(r, c)| inside(r) && inside(c))
        .map(|(r, c)| r as usize * SIZE + c as usize)
}

/// A blob's colour as seen: the median of the half of its pixels farthest from the background, so
/// anti-aliased and blurred edges do not pull it toward the background.
pub(crate) fn fill_color(rgb: &[u8], blob: &[usize], bg: [f32; 3]) -> [f32; 3] {
    median(rgb, &core(rgb, blob, bg))
}

fn core(rgb: &[u8], blob: &[usize], bg: [f32; 3]) -> Vec<usize> {
    let mut by_distance: Vec<(f32, usize)> = blob.iter().map(|&i| (distance(pixel(rgb, i), bg), i)).collect();
    by_distance.sort_by(|a, b| b.0.total_cmp(&a.0));
    by_distance[..blob.len().div_ceil(2)].iter().map(|&(_, i)| i).collect()
}

/// The palette colour whose mixes with the background best explain the blob's core pixels, and the
/// median distance of those pixels from its line. Mixes, not the colour itself: a small blurred
/// object never reaches its full colour, but its pixels stay on the line to it.
pub(crate) fn fit_color(rgb: &[u8], blob: &[usize], bg: [f32; 3]) -> (Color, f32) {
    let core = core(rgb, blob, bg);
    let cost = |c: Color| {
        let mut residuals: Vec<f32> = core.iter().map(|&i| on_line(pixel(rgb, i), bg, to_f32(c.rgb())).1).collect();
        residuals.sort_by(f32::total_cmp);
        residuals.get(residuals.len() / 2).copied().unwrap_or(f32::INFINITY)
    };
    Color::ALL.iter().map(|&c| (c, cost(c))).min_by(|a, b| a.1.total_cmp(&b.1)).unwrap_or((Color::Black, f32::INFINITY))
}

/// Coverage maps below this are treated as background noise (in the image and in templates alike).
pub(crate) const ALPHA_FLOOR: f32 = 0.15;

/// The object's coverage over the whole canvas: for the blob's pixels and those within `reach`
/// of its box that belong to no other blob, how far each lies along the line from the
/// background to `fill`; zero elsewhere and below `ALPHA_FLOOR`.
pub(crate) fn coverage(rgb: &[u8], blob: &[usize], owner: &[Option<usize>], me: usize, bg: [f32; 3], fill: [f32; 3], reach: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; SIZE * SIZE];
    let [c0, c1, r0, r1] = bounds(blob);
    for row in r0.saturating_sub(reach)..(r1 + reach + 1).min(SIZE) {
        for col in c0.saturating_sub(reach)..(c1 + reach + 1).min(SIZE) {
            let i = row * SIZE + col;
            if owner[i].is_some_and(|o| o != me) {
                continue;
            }
            let alpha = on_line(pixel(rgb, i), bg, fill).0;
            out[i] = if alpha >= ALPHA_FLOOR { alpha } else { 0.0 };
        }
    }
    out
}

/// The bounding box (col0, col1, row0, row1, inclusive) of a set of pixels.
pub(crate) fn bounds(pixels: &[usize]) -> [usize; 4] {
    pixels.iter().fold([SIZE, 0, SIZE, 0], |[c0, c1, r0, r1], &i| {
        let (r, c) = (i / SIZE, i % SIZE);
        [c0.min(c), c1.max(c), r0.min(r), r1.max(r)]
    })
}
