//! Exact shape geometry as signed distance functions in normalised coordinates: x spans [-1, 1]
//! and y spans [-half_height, half_height] (y down), so every shape's bounding box is exactly as
//! wide as its box and its height is `2 * half_height(shape)` (1 for most, less for star and heart).

use super::vocab::Shape;

const RING_INNER: f32 = 0.5;
const CROSS_ARM: f32 = 1.0 / 3.0;
/// Inner over outer radius of the star; a regular pentagram has 0.382, a little fuller keeps the
/// points legible at 14 px.
const STAR_INNER: f32 = 0.42;
const MAX_VERTICES: usize = 10;

/// Half of a shape's bounding-box height in normalised units (its half width is 1).
pub fn half_height(shape: Shape) -> f32 {
    match shape {
        // A five-pointed star is 2R cos 18deg wide and R (1 + cos 36deg) tall.
        Shape::Star => (1.0 + 36f32.to_radians().cos()) / (2.0 * 18f32.to_radians().cos()),
        // See the heart's constants below: its tip is as far below the centre as its top is above.
        Shape::Heart => HEART_TIP,
        _ => 1.0,
    }
}

// The heart is a square turned 45 degrees (half diagonal `HEART_A`) with a circle on each of its
// two upper sides; scaled so it is 2 wide and centred vertically.
const HEART_A: f32 = 0.828_427_1; // 2 / (1 + sqrt 2)
const HEART_TIP: f32 = 0.914_213_6; // (1.5 + sqrt 0.5) / 2 * HEART_A
const HEART_RADIUS: f32 = 0.585_786_4; // HEART_A / sqrt 2

/// A shape ready for distance queries (its polygon, if any, computed once).
#[derive(Debug, Clone)]
pub struct Outline {
    shape: Shape,
    vertices: [[f32; 2]; MAX_VERTICES],
    len: usize,
}

impl Outline {
    pub fn new(shape: Shape) -> Self {
        let mut vertices = [[0.0; 2]; MAX_VERTICES];
        let polygon: &[[f32; 2]] = &match shape {
            Shape::Triangle => vec![[0.0, -1.0], [1.0, 1.0], [-1.0, 1.0]],
            Shape::Star => star_vertices(),
            Shape::Heart => {
                let (a, t) = (HEART_A, HEART_TIP);
                vec![[0.0, t], [-a, t - a], [0.0, t - 2.0 * a], [a, t - a]]
            }
            _ => Vec::new(),
        };
        vertices[..polygon.len()].copy_from_slice(polygon);
        Self { shape, vertices, len: polygon.len() }
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Signed distance to the outline (negative inside), in normalised units. Exact except where
    /// noted; where not exact its magnitude is smaller than the true distance, never larger, so a
    /// caller can trust "farther than d from the edge".
    pub fn sdf(&self, x: f32, y: f32) -> f32 {
        let r = (x * x + y * y).sqrt();
        match self.shape {
            Shape::Circle => r - 1.0,
            // Intersection of the disc and the outside of the hole: exact inside, smaller outside.
            Shape::Ring => (r - 1.0).max(RING_INNER - r),
            Shape::Square => rect(x, y, 1.0, 1.0),
            // Union of two bars: exact outside, smaller inside.
            Shape::Cross => rect(x, y, 1.0, CROSS_ARM).min(rect(x, y, CROSS_ARM, 1.0)),
            // Distance to the nearest edge's line: exact inside, smaller near the outer corners.
            Shape::Diamond => (x.abs() + y.abs() - 1.0) * std::f32::consts::FRAC_1_SQRT_2,
            Shape::Triangle | Shape::Star => polygon(&self.vertices[..self.len], x, y),
            Shape::Heart => {
                let c = HEART_A / 2.0;
                let cy = HEART_TIP - 1.5 * HEART_A;
                let lobes = circle(x + c, y - cy, HEART_RADIUS).min(circle(x - c, y - cy, HEART_RADIUS));
                polygon(&self.vertices[..self.len], x, y).min(lobes)
            }
        }
    }
}

fn circle(x: f32, y: f32, radius: f32) -> f32 {
    (x * x + y * y).sqrt() - radius
}

/// Exact distance to an axis-aligned rectangle of half sides `hx`, `hy` centred at the origin.
fn rect(x: f32, y: f32, hx: f32, hy: f32) -> f32 {
    let (qx, qy) = (x.abs() - hx, y.abs() - hy);
    let outside = (qx.max(0.0).powi(2) + qy.max(0.0).powi(2)).sqrt();
    outside + qx.max(qy).min(0.0)
}

/// Exact signed distance to a simple polygon: the nearest edge gives the distance, the crossing
/// parity the sign. Crate-visible for the lifelong evaluation's novel shapes (`concepts`).
pub(crate) fn polygon(v: &[[f32; 2]], x: f32, y: f32) -> f32 {
    let mut best = f32::INFINITY;
    let mut inside = false;
    let mut j = v.len() - 1;
    for i in 0..v.len() {
        let (a, b) = (v[j], v[i]);
        let (ex, ey) = (b[0] - a[0], b[1] - a[1]);
        let (wx, wy) = (x - a[0], y - a[1]);
        let t = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0.0, 1.0);
        let (dx, dy) = (wx - ex * t, wy - ey * t);
        best = best.min(dx * dx + dy * dy);
        if (a[1] > y) != (b[1] > y) && x < a[0] + ex * (y - a[1]) / ey {
            inside = !inside;
        }
        j = i;
    }
    if inside {
        -best.sqrt()
    } else {
        best.sqrt()
    }
}

/// Five outer points (the first straight up) alternating with five inner ones, scaled to be 2
/// wide and shifted so the bounding box is centred.
fn star_vertices() -> Vec<[f32; 2]> {
    let outer = 1.0 / 18f32.to_radians().cos();
    let shift = outer * (1.0 - 36f32.to_radians().cos()) / 2.0;
    (0..10)
        .map(|k| {
            let angle = (-90.0 + 36.0 * k as f32).to_radians();
            let radius = if k % 2 == 0 { outer } else { outer * STAR_INNER };
            [radius * angle.cos(), radius * angle.sin() + shift]
        })
        .collect()
}

/// A shape's area and centroid in normalised units (the centroid's x is 0 for every shape).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moments {
    pub area: f32,
    pub centroid_y: f32,
}

/// Samples per side of the grid that measures `moments` (error well under 0.1%).
const MOMENT_GRID: usize = 400;

/// Area and centroid, measured once per process on a fine grid (exact enough, and correct by
/// construction for every shape, unlike a table of hand-derived formulas).
pub fn moments(shape: Shape) -> Moments {
    static TABLE: std::sync::OnceLock<Vec<Moments>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| Shape::ALL.iter().map(|&s| measure(s)).collect());
    table[shape.index()]
}

fn measure(shape: Shape) -> Moments {
    let outline = Outline::new(shape);
    let step = 2.0 / MOMENT_GRID as f32;
    let (mut count, mut sum_y) = (0usize, 0.0f64);
    for i in 0..MOMENT_GRID {
        let y = -1.0 + (i as f32 + 0.5) * step;
        for j in 0..MOMENT_GRID {
            let x = -1.0 + (j as f32 + 0.5) * step;
            if outline.sdf(x, y) <= 0.0 {
                count += 1;
                sum_y += f64::from(y);
            }
        }
    }
    let area = count as f32 * step * step;
    Moments { area, centroid_y: if count > 0 { (sum_y / count as f64) as f32 } else { 0.0 } }
}
