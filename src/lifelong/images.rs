//! Teaching pictures to the model's input: centre crop to a square, resize, RGB in [0, 1].
//! Decoding happens at the edges (the `image` crate in the CLI, `createImageBitmap` in the page).

use burn::prelude::*;

use crate::error::{Error, Result};

/// Interleaved 8-bit RGB `width x height` -> `[1, 3, size, size]` in [0, 1]: the largest centred
/// square, resampled by averaging a grid of bilinear samples per output pixel (an area filter
/// when shrinking, bilinear when enlarging), so small and huge photos both come out clean.
pub fn fit_rgb8(rgb: &[u8], width: usize, height: usize, size: usize, device: &Device) -> Result<Tensor<4>> {
    if width == 0 || height == 0 || rgb.len() != width * height * 3 {
        return Err(Error::InvalidInput(format!("an image of {width}x{height} pixels needs {} RGB bytes, got {}", width * height * 3, rgb.len())));
    }
    if size == 0 {
        return Err(Error::InvalidInput("the target size must be at least 1 pixel".into()));
    }
    let side = width.min(height);
    // Whole-pixel crop offsets; samples never reach outside the crop, so nothing bleeds in.
    let (cx, cy) = ((width - side) / 2, (height - side) / 2);
    let (x0, y0) = (cx as f32, cy as f32);
    let step = side as f32 / size as f32;
    let taps = (step.ceil() as usize).clamp(1, 8);
    let sample = |x: f32, y: f32, c: usize| -> f32 {
        let (lo_x, hi_x) = (x0, (cx + side - 1) as f32);
        let (lo_y, hi_y) = (y0, (cy + side - 1) as f32);
        let (x, y) = ((x - 0.5).clamp(lo_x, hi_x), (y - 0.5).clamp(lo_y, hi_y));
        let (xi, yi) = (x.floor() as usize, y.floor() as usize);
        let (x1, y1) = ((xi + 1).min(cx + side - 1), (yi + 1).min(cy + side - 1));
        let (fx, fy) = (x - xi as f32, y - yi as f32);
        let p = |xx: usize, yy: usize| f32::from(rgb[(yy * width + xx) * 3 + c]);
        let top = p(xi, yi) * (1.0 - fx) + p(x1, yi) * fx;
        let bottom = p(xi, y1) * (1.0 - fx) + p(x1, y1) * fx;
        top * (1.0 - fy) + bottom * fy
    };
    let mut out = vec![0f32; 3 * size * size];
    for oy in 0..size {
        for ox in 0..size {
            for c in 0..3 {
                let mut acc = 0.0;
                for ty in 0..taps {
                    for tx in 0..taps {
                        let sx = x0 + (ox as f32 + (tx as f32 + 0.5) / taps as f32) * step;
                        let sy = y0 + (oy as f32 + (ty as f32 + 0.5) / taps as f32) * step;
                        acc += sample(sx, sy, c);
                    }
                }
                out[c * size * size + oy * size + ox] = acc / (taps * taps) as f32 / 255.0;
            }
        }
    }
    Ok(Tensor::from_data(TensorData::new(out, [1, 3, size, size]), device))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_the_centre_and_keeps_flat_colours() {
        // 6x2: a red 2x2 square in the middle, blue on both sides.
        let mut rgb = Vec::new();
        for _y in 0..2 {
            for x in 0..6 {
                rgb.extend_from_slice(if (2..4).contains(&x) { &[255, 0, 0] } else { &[0, 0, 255] });
            }
        }
        let t = fit_rgb8(&rgb, 6, 2, 4, &Device::flex()).unwrap();
        let v: Vec<f32> = t.into_data().try_to_vec::<f32>().unwrap();
        assert!(v[..16].iter().all(|&r| (r - 1.0).abs() < 1e-6), "red channel all 1: {:?}", &v[..16]);
        assert!(v[32..].iter().all(|&b| b.abs() < 1e-6), "no blue from outside the crop");
    }

    #[test]
    fn rejects_wrong_sizes() {
        assert!(fit_rgb8(&[0; 5], 2, 1, 4, &Device::flex()).is_err());
        assert!(fit_rgb8(&[], 0, 0, 4, &Device::flex()).is_err());
    }
}
