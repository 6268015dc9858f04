//! Rasterising scenes: a flat background, flat-filled shapes, and anti-aliased edges by 4 x 4
//! supersampling of just the pixels the outline passes through (the signed distance at the
//! pixel centre tells which those are).

use super::scene::{Object, Scene};
use super::shapes::{half_height, Outline};
use super::SIZE;
use crate::{Error, Result};

/// Bytes in one image: 64 x 64 RGB, row-major, channels interleaved.
pub const IMAGE_BYTES: usize = SIZE * SIZE * 3;

const SUBSAMPLES: usize = 4;
/// A pixel whose centre is farther than this (in pixels) from the outline lies wholly on one
/// side: half the pixel's diagonal plus slack for rounding.
const EDGE_BAND: f32 = 0.75;

/// Where a shape lands on the canvas: a point (x, y) in pixels maps to normalised shape coordinates
/// ((x - center.x) / scale.x, (y - center.y) / scale.y).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    pub center: [f32; 2],
    pub scale: [f32; 2],
}

impl Placement {
    /// An object's placement: its box side is `extent` and the shape keeps its proportions.
    pub fn of(object: &Object) -> Self {
        let h = object.extent / 2.0;
        Self { center: object.center, scale: [h, h] }
    }

    /// The pixels (col0, col1, row0, row1), end exclusive and clipped to the canvas, that the
    /// shape can touch.
    pub fn pixel_window(&self, outline: &Outline) -> [usize; 4] {
        let hy = self.scale[1] * half_height(outline.shape());
        let clip = |v: f32| (v.max(0.0) as usize).min(SIZE);
        let [cx, cy] = self.center;
        [clip((cx - self.scale[0]).floor()), clip((cx + self.scale[0]).ceil() + 1.0), clip((cy - hy).floor()), clip((cy + hy).ceil() + 1.0)]
    }
}

/// The fraction of pixel (col, row) the shape covers, in [0, 1].
pub fn pixel_coverage(outline: &Outline, placement: &Placement, col: usize, row: usize) -> f32 {
    let [cx, cy] = placement.center;
    let [sx, sy] = placement.scale;
    let (x, y) = (col as f32 + 0.5, row as f32 + 0.5);
    // Distances scale by at least the smaller scale, so this never overstates the pixel distance.
    let d = outline.sdf((x - cx) / sx, (y - cy) / sy) * sx.min(sy);
    if d > EDGE_BAND {
        return 0.0;
    }
    if d < -EDGE_BAND {
        return 1.0;
    }
    let mut hits = 0;
    for i in 0..SUBSAMPLES {
        let sy_ = row as f32 + (i as f32 + 0.5) / SUBSAMPLES as f32;
        for j in 0..SUBSAMPLES {
            let sx_ = col as f32 + (j as f32 + 0.5) / SUBSAMPLES as f32;
            if outline.sdf((sx_ - cx) / sx, (sy_ - cy) / sy) <= 0.0 {
                hits += 1;
            }
        }
    }
    hits as f32 / (SUBSAMPLES * SUBSAMPLES) as f32
}

/// Renders a scene to 64 x 64 RGB bytes (row-major, channels interleaved).
pub fn render(scene: &Scene) -> Vec<u8> {
    let mut image = vec![0u8; IMAGE_BYTES];
    if let Ok(buffer) = <&mut [u8; IMAGE_BYTES]>::try_from(image.as_mut_slice()) {
        render_into(scene, buffer);
    }
    image
}

/// Renders a scene into a caller's buffer (for filling one slot of a batch without copying).
pub fn render_into(scene: &Scene, image: &mut [u8; IMAGE_BYTES]) {
    let bg = scene.background.rgb();
    for pixel in image.chunks_exact_mut(3) {
        pixel.copy_from_slice(&bg);
    }
    for object in &scene.objects {
        draw(image, object);
    }
}

/// Blends one flat-filled object over whatever is below it, weighted by coverage.
fn draw(image: &mut [u8; IMAGE_BYTES], object: &Object) {
    let outline = Outline::new(object.shape);
    let placement = Placement::of(object);
    let color = object.color.rgb().map(f32::from);
    let [c0, c1, r0, r1] = placement.pixel_window(&outline);
    for row in r0..r1 {
        for col in c0..c1 {
            let cover = pixel_coverage(&outline, &placement, col, row);
            if cover <= 0.0 {
                continue;
            }
            let at = (row * SIZE + col) * 3;
            for (k, value) in image[at..at + 3].iter_mut().enumerate() {
                let below = f32::from(*value);
                *value = (below + (color[k] - below) * cover).round() as u8;
            }
        }
    }
}

/// Encodes RGB bytes as a PNG, each pixel blown up to `scale` x `scale` (nearest neighbour) for
/// eyeballing.
pub fn png_bytes(rgb: &[u8], width: usize, height: usize, scale: usize) -> Result<Vec<u8>> {
    let scale = scale.max(1);
    if rgb.len() != width * height * 3 {
        return Err(Error::InvalidInput(format!("png: {} bytes is not {width} x {height} RGB", rgb.len())));
    }
    let mut big = Vec::with_capacity(rgb.len() * scale * scale);
    for row in rgb.chunks_exact(width * 3) {
        let mut line = Vec::with_capacity(row.len() * scale);
        for pixel in row.chunks_exact(3) {
            for _ in 0..scale {
                line.extend_from_slice(pixel);
            }
        }
        for _ in 0..scale {
            big.extend_from_slice(&line);
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, (width * scale) as u32, (height * scale) as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let fail = |e: png::EncodingError| Error::InvalidInput(format!("png: {e}"));
    let mut writer = encoder.write_header().map_err(fail)?;
    writer.write_image_data(&big).map_err(fail)?;
    writer.finish().map_err(fail)?;
    Ok(out)
}

/// Lays 64 x 64 images out in a grid (`columns` wide, 2 px gaps of black) for eyeballing; returns
/// the RGB bytes and the sheet's width and height.
pub fn contact_sheet(images: &[Vec<u8>], columns: usize) -> (Vec<u8>, usize, usize) {
    const GAP: usize = 2;
    let columns = columns.clamp(1, images.len().max(1));
    let rows = images.len().div_ceil(columns).max(1);
    let (width, height) = (columns * (SIZE + GAP) - GAP, rows * (SIZE + GAP) - GAP);
    let mut sheet = vec![0u8; width * height * 3];
    for (k, image) in images.iter().enumerate().filter(|(_, im)| im.len() == IMAGE_BYTES) {
        let (x0, y0) = ((k % columns) * (SIZE + GAP), (k / columns) * (SIZE + GAP));
        for row in 0..SIZE {
            let at = ((y0 + row) * width + x0) * 3;
            sheet[at..at + SIZE * 3].copy_from_slice(&image[row * SIZE * 3..(row + 1) * SIZE * 3]);
        }
    }
    (sheet, width, height)
}
