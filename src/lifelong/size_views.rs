//! Size views of teaching pictures for models of the shapes world: a picture whose words say
//! "large" is also taught with its object shrunk to half around its centre and the words saying
//! "small". Of four pictures two show a concept small, and small probes ("a small <chevron> on
//! the left") were where lessons failed most: drawn as a blob of the concept's colour (README,
//! "Lessons"). Custom Diffusion augments its few pictures in the same spirit (Kumari et al. 2023,
//! sec. 3.2: random rescaling, with the prompt saying "very small").
//!
//! Unlike the place views (src/lifelong/augment.rs), which move latent cells, this works on the
//! pixels (a latent patch cannot be shrunk by half a cell): the shrunk picture is encoded like
//! the others. Only large pictures are shrunk; enlarging a small one would teach its blur.
//!
//! Measured on `eval lifelong`'s eight lessons (README, "Lessons", session 21; one run each):
//! two concepts composed in 59 of 64 prompts against 51, identification 83.6% right after and
//! 86.7% after the last against 83.2% and 84.4%; on by default since.

use burn::prelude::*;

use super::learner::Picture;
use super::selfcheck::{border_median, distance};
use crate::error::{Error, Result};
use crate::world::Size;

/// The shrink factor: the world's small objects fit a box of about 14 px, large ones about 28.
const SHRINK: f32 = 0.5;
/// A pixel this far (RGB distance, channels in [0, 1]) from the border's median colour belongs
/// to the object.
const OBJECT_DISTANCE: f32 = 0.1;

/// The size views of `pictures`: one per picture whose words name the large size and whose
/// object stands out from a plain border.
pub fn size_views(pictures: &[Picture]) -> Result<Vec<Picture>> {
    let mut views = Vec::new();
    for p in pictures {
        let Some(words) = p.words.as_deref().and_then(|w| swap_word(w, Size::Large.name(), Size::Small.name())) else { continue };
        if let Some(image) = shrunk(&p.image)? {
            views.push(Picture { image, words: Some(words) });
        }
    }
    Ok(views)
}

/// `words` with the whole word `from` replaced by `to` once; `None` when `from` is not a word there.
fn swap_word(words: &str, from: &str, to: &str) -> Option<String> {
    let mut found = false;
    let swapped: Vec<&str> = words
        .split(' ')
        .map(|w| {
            if !found && w == from {
                found = true;
                to
            } else {
                w
            }
        })
        .collect();
    found.then(|| swapped.join(" "))
}

/// `image` (`[1, 3, h, w]` in [0, 1]) with its object shrunk by [`SHRINK`] around its centroid and
/// the rest filled with the border's median colour; `None` when no pixel stands out.
fn shrunk(image: &Tensor<4>) -> Result<Option<Tensor<4>>> {
    let [b, c, h, w] = image.dims();
    if b != 1 || c != 3 || h == 0 || w == 0 {
        return Err(Error::InvalidInput(format!("a size view needs one RGB picture, got {:?}", image.dims())));
    }
    let values = image.to_data().convert::<f32>().try_to_vec::<f32>().map_err(|e| Error::InvalidInput(format!("teaching picture: {e:?}")))?;
    let px = |x: usize, y: usize| -> [f32; 3] { std::array::from_fn(|k| values[k * h * w + y * w + x]) };
    let bg = border_median(w, h, &|i| px(i % w, i / w));
    let Some(center) = object_centroid(&px, bg, [h, w]) else { return Ok(None) };
    let sample = |x: f32, y: f32| -> [f32; 3] { bilinear(&px, bg, [h, w], x, y) };
    let mut out = vec![0.0f32; 3 * h * w];
    for y in 0..h {
        for x in 0..w {
            // A 2x2 grid of points per output pixel, each mapped back to the picture: a box filter
            // over the source area the pixel now covers.
            let mut acc = [0.0f32; 3];
            for (ox, oy) in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)] {
                let sx = center[0] + (x as f32 + ox - center[0]) / SHRINK;
                let sy = center[1] + (y as f32 + oy - center[1]) / SHRINK;
                let s = sample(sx, sy);
                (0..3).for_each(|k| acc[k] += s[k] / 4.0);
            }
            (0..3).for_each(|k| out[k * h * w + y * w + x] = acc[k]);
        }
    }
    Ok(Some(Tensor::from_data(TensorData::new(out, [1, 3, h, w]), &image.device())))
}

/// Centroid (in pixel coordinates, pixel centres at +0.5) of the pixels far from `bg`.
fn object_centroid(px: &impl Fn(usize, usize) -> [f32; 3], bg: [f32; 3], [h, w]: [usize; 2]) -> Option<[f32; 2]> {
    let (mut sx, mut sy, mut n) = (0.0f32, 0.0f32, 0usize);
    for y in 0..h {
        for x in 0..w {
            if distance(px(x, y), bg) > OBJECT_DISTANCE {
                sx += x as f32 + 0.5;
                sy += y as f32 + 0.5;
                n += 1;
            }
        }
    }
    (n > 0).then(|| [sx / n as f32, sy / n as f32])
}

/// Bilinear sample at `(x, y)` (pixel centres at +0.5); `bg` outside the image.
fn bilinear(px: &impl Fn(usize, usize) -> [f32; 3], bg: [f32; 3], [h, w]: [usize; 2], x: f32, y: f32) -> [f32; 3] {
    let (fx, fy) = (x - 0.5, y - 0.5);
    let (x0, y0) = (fx.floor(), fy.floor());
    let (tx, ty) = (fx - x0, fy - y0);
    let at = |xi: f32, yi: f32| -> [f32; 3] {
        if xi < 0.0 || yi < 0.0 || xi >= w as f32 || yi >= h as f32 {
            bg
        } else {
            px(xi as usize, yi as usize)
        }
    };
    let [a, b, c, d] = [at(x0, y0), at(x0 + 1.0, y0), at(x0, y0 + 1.0), at(x0 + 1.0, y0 + 1.0)];
    std::array::from_fn(|k| (a[k] * (1.0 - tx) + b[k] * tx) * (1.0 - ty) + (c[k] * (1.0 - tx) + d[k] * tx) * ty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{image_to_rgb8, rgb8_to_image};
    use crate::world::concepts::{best_concept, concept_by_name, identify, novel_concepts, render_concept};
    use crate::world::{Background, Place};

    #[test]
    fn a_large_picture_shrinks_to_a_small_one_of_the_same_concept_in_place() {
        let device = Device::flex();
        let all = novel_concepts();
        for name in ["chevron", "tee", "halves"] {
            let c = concept_by_name(name).unwrap();
            let large = render_concept(&c, Place::Left, Size::Large, Background::Gray, 3);
            let picture = Picture { image: rgb8_to_image(&large, 64, &device), words: Some("large {} on the left on a gray background".into()) };
            let views = size_views(&[picture]).unwrap();
            assert_eq!(views.len(), 1);
            assert_eq!(views[0].words.as_deref(), Some("small {} on the left on a gray background"));
            let rgb = image_to_rgb8(&views[0].image).unwrap();
            assert_eq!(best_concept(&rgb, &all), Some(name), "{name}");
            let [before, after] = [&large, &rgb].map(|img| identify(img, &all)[0].clone());
            assert!((after.extent / before.extent - SHRINK).abs() < 0.1, "{name}: {} -> {}", before.extent, after.extent);
            // Shrunk around its centroid, the box's centre moves by half their gap (a tee's bar).
            assert!((0..2).all(|k| (after.center[k] - before.center[k]).abs() < 3.0), "{name}: {:?} -> {:?}", before.center, after.center);
        }
    }

    #[test]
    fn small_pictures_and_pictures_without_words_get_no_view() {
        let device = Device::flex();
        let c = concept_by_name("tee").unwrap();
        let image = rgb8_to_image(&render_concept(&c, Place::Left, Size::Small, Background::Gray, 3), 64, &device);
        let pictures = [Picture { image: image.clone(), words: Some("small {} on the left".into()) }, Picture { image: image.clone(), words: None }, Picture { image, words: Some("largest {}".into()) }];
        assert!(size_views(&pictures).unwrap().is_empty());
    }
}
