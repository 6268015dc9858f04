//! Shape classification by analysis by synthesis: every shape's template is placed where the
//! object's coverage says it must be (scale from the covered area, position from the centroid:
//! both unchanged by blur), blurred by a few amounts, and compared with the coverage by soft IoU.
//! Placing by area and centroid rather than by bounding box keeps thin points that a blur erodes
//! from shrinking the fit, and the blurred templates let a blurry star still beat a sharp diamond.

use super::render::{pixel_coverage, Placement};
use super::segment::ALPHA_FLOOR;
use super::shapes::{moments, Outline};
use super::vocab::Shape;
use super::SIZE;

/// Template blurs tried, as Gaussian sigmas in pixels (0 = sharp).
const BLURS: [f32; 4] = [0.0, 0.7, 1.0, 1.4];
/// Margin around the covered pixels that the comparison looks at.
const MARGIN: usize = 3;

/// The best-matching shape and its soft IoU, for a canvas-sized coverage map of one object.
pub(crate) fn classify(coverage: &[f32]) -> (Shape, f32) {
    let mass: f32 = coverage.iter().sum();
    if mass <= 0.0 {
        return (Shape::Circle, 0.0);
    }
    let (mut mx, mut my) = (0.0f32, 0.0f32);
    for (i, &a) in coverage.iter().enumerate() {
        mx += a * ((i % SIZE) as f32 + 0.5);
        my += a * ((i / SIZE) as f32 + 0.5);
    }
    let (mx, my) = (mx / mass, my / mass);
    let window = Window::around(coverage);
    let observed = window.cut(coverage);
    let mut best = (Shape::Circle, f32::NEG_INFINITY);
    for &shape in Shape::ALL {
        let m = moments(shape);
        let h = (mass / m.area).sqrt();
        let placement = Placement { center: [mx, my - h * m.centroid_y], scale: [h, h] };
        let template = window.template(&Outline::new(shape), &placement);
        for sigma in BLURS {
            let iou = soft_iou(&observed, &window.blur(&template, sigma));
            if iou > best.1 {
                best = (shape, iou);
            }
        }
    }
    best
}

/// The best soft IoU (over the same blurs as `classify`) of a canvas-sized coverage map with a
/// template given pixel by pixel as `template(col, row)`: the lifelong evaluation's novel shapes
/// (`concepts`) are matched exactly as the world's own shapes are.
pub(crate) fn match_template(coverage: &[f32], template: &dyn Fn(usize, usize) -> f32) -> f32 {
    if coverage.len() != SIZE * SIZE || coverage.iter().all(|&a| a <= 0.0) {
        return 0.0;
    }
    let window = Window::around(coverage);
    let observed = window.cut(coverage);
    let sharp: Vec<f32> = (0..window.h).flat_map(|r| (0..window.w).map(move |c| (window.c0 + c, window.r0 + r))).map(|(col, row)| template(col, row)).collect();
    BLURS.iter().map(|&sigma| soft_iou(&observed, &window.blur(&sharp, sigma))).fold(0.0, f32::max)
}

/// A rectangle of the canvas: columns `c0..c0 + w`, rows `r0..r0 + h`.
struct Window {
    c0: usize,
    r0: usize,
    w: usize,
    h: usize,
}

impl Window {
    /// The covered pixels' box plus `MARGIN`, clipped to the canvas.
    fn around(coverage: &[f32]) -> Self {
        let [mut c0, mut c1, mut r0, mut r1] = [SIZE, 0, SIZE, 0];
        for (i, _) in coverage.iter().enumerate().filter(|(_, &a)| a > 0.0) {
            let (r, c) = (i / SIZE, i % SIZE);
            (c0, c1, r0, r1) = (c0.min(c), c1.max(c), r0.min(r), r1.max(r));
        }
        let (c0, r0) = (c0.saturating_sub(MARGIN), r0.saturating_sub(MARGIN));
        let (c1, r1) = ((c1 + MARGIN + 1).min(SIZE), (r1 + MARGIN + 1).min(SIZE));
        Self { c0, r0, w: c1.saturating_sub(c0), h: r1.saturating_sub(r0) }
    }

    fn cut(&self, canvas: &[f32]) -> Vec<f32> {
        (0..self.h).flat_map(|r| (0..self.w).map(move |c| (self.r0 + r) * SIZE + self.c0 + c)).map(|i| canvas[i]).collect()
    }

    fn template(&self, outline: &Outline, placement: &Placement) -> Vec<f32> {
        (0..self.h).flat_map(|r| (0..self.w).map(move |c| (self.c0 + c, self.r0 + r))).map(|(col, row)| pixel_coverage(outline, placement, col, row)).collect()
    }

    /// Separable Gaussian blur (zero outside the window), then the same floor the image gets.
    fn blur(&self, map: &[f32], sigma: f32) -> Vec<f32> {
        let floor = |v: f32| if v >= ALPHA_FLOOR { v } else { 0.0 };
        if sigma <= 0.0 {
            return map.iter().map(|&v| floor(v)).collect();
        }
        let radius = (3.0 * sigma).ceil() as isize;
        let kernel: Vec<f32> = (-radius..=radius).map(|k| (-((k * k) as f32) / (2.0 * sigma * sigma)).exp()).collect();
        let norm: f32 = kernel.iter().sum();
        let (w, h) = (self.w as isize, self.h as isize);
        let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
            let mut out = vec![0.0f32; src.len()];
            for r in 0..h {
                for c in 0..w {
                    let mut v = 0.0;
                    for (k, weight) in kernel.iter().enumerate() {
                        let o = k as isize - radius;
                        let (rr, cc) = if horizontal { (r, c + o) } else { (r + o, c) };
                        if (0..h).contains(&rr) && (0..w).contains(&cc) {
                            v += weight * src[(rr * w + cc) as usize];
                        }
                    }
                    out[(r * w + c) as usize] = v / norm;
                }
            }
            out
        };
        pass(&pass(map, true), false).into_iter().map(floor).collect()
    }
}

/// Sum of minima over sum of maxima.
fn soft_iou(a: &[f32], b: &[f32]) -> f32 {
    let (both, either) = a.iter().zip(b).fold((0.0f32, 0.0f32), |(s, u), (&x, &y)| (s + x.min(y), u + x.max(y)));
    if either > 0.0 {
        both / either
    } else {
        0.0
    }
}
