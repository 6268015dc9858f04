//! Place views of teaching pictures for models of the shapes world: a picture whose words name
//! a place ("on the left") is also taught with its object moved to each other place, the words
//! changed to match. Four pictures show a concept at four places and two sizes, so a probe such
//! as "a large <tee> on the right" asks for a combination no picture showed, and there the base
//! model's nearest shape showed through (a cross for the tee, a ring for the crescent: README,
//! "Lessons"). Custom Diffusion augments its few pictures in the same spirit (Kumari et al. 2023,
//! sec. 3.2: random rescaling, with the prompt saying "very small" or "zoomed in").
//!
//! The move is done on the latents, not the pixels: the VAE is convolutional, so the object's
//! latent patch moved by whole cells is the object moved by whole cells' worth of pixels, and no
//! picture is encoded or refined again. Only the object's cells ([`object_cells`]: a ring of soft
//! edges included) move; the cells it leaves take the background's latent, and everything else
//! stays as encoded. The image's outermost ring of cells carries the VAE's own edge values (zero
//! padding), which the decoder needs to draw a plain border: there a vacated cell copies the
//! nearest border cell the object never covered, and the object's soft ring never overwrites it
//! (its core does: an object may touch the edge).

use burn::prelude::*;

use super::lesson::Example;
use super::memory::OBJECT_THRESHOLD;
use crate::error::{Error, Result};
use crate::world::{place_anchor, Background, Place, Size};

/// `example` with its object moved to each place its prompt does not name, one view per place;
/// empty when the prompt names no place or no object stands out from the background.
pub fn place_views(example: &Example, image_side: usize) -> Result<Vec<Example>> {
    let Some(named) = Place::ALL.iter().copied().find(|p| example.prompt.contains(p.phrase())) else {
        return Ok(Vec::new());
    };
    let [_, c, h, w] = example.latents.dims();
    let values = latent_values(&example.latents)?;
    let median = interior_medians(&values, [c, h, w]);
    let cells = object_cells(&values, &median, [c, h, w]);
    let Some(bbox) = core_box(&cells, w) else { return Ok(Vec::new()) };
    if (bbox[2] - bbox[0] + 2) * (bbox[3] - bbox[1] + 2) * 2 > h * w {
        // Half the picture or more "differs from the background": not a flat-background picture.
        return Ok(Vec::new());
    }
    let cell = image_side as f32 / w as f32;
    let device = example.latents.device();
    let mut views = Vec::new();
    for place in Place::ALL.iter().copied().filter(|&p| p != named) {
        let shift = shift_to(bbox, place, cell, [h, w]);
        let moved = moved_object(&values, &cells, &median, [c, h, w], shift);
        views.push(Example {
            latents: Tensor::from_data(TensorData::new(moved, [1, c, h, w]), &device),
            prompt: example.prompt.replacen(named.phrase(), place.phrase(), 1),
        });
    }
    Ok(views)
}

/// `example` under each shorter true caption: its prompt with every non-empty subset of its
/// optional phrases (size word, place, background) left out, as the shapes world's captions
/// leave them out (src/world/caption.rs: size, place and background are each optional). A
/// lesson's pictures are captioned in full, while the prompts a user writes (and the eval's
/// probes, "a small <tee> on the left") leave some out; taught only full captions, a concept's
/// block had never seen its token without a background phrase. Textual Inversion likewise
/// teaches each picture under many templates (Gal et al. 2022, sec. 4 and appendix).
pub fn caption_views(example: &Example) -> Vec<Example> {
    let phrases = optional_phrases(&example.prompt);
    (1u32..1 << phrases.len())
        .map(|mask| {
            let prompt = phrases.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).fold(example.prompt.clone(), |p, (_, phrase)| p.replacen(phrase.as_str(), "", 1));
            Example { latents: example.latents.clone(), prompt }
        })
        .collect()
}

/// The optional phrases `prompt` holds, each with the space before it, as written there.
fn optional_phrases(prompt: &str) -> Vec<String> {
    let size = Size::ALL.iter().map(|s| format!(" {}", s.name()));
    let place = Place::ALL.iter().map(|p| format!(" {}", p.phrase()));
    let background = Background::ALL.iter().map(|b| format!(" on a {b} background"));
    [size.collect::<Vec<_>>(), place.collect(), background.collect()]
        .into_iter()
        .filter_map(|group| group.into_iter().find(|phrase| contains_phrase(prompt, phrase)))
        .collect()
}

/// Whether `phrase` (which starts with a space) occurs in `prompt` ending at a word boundary.
fn contains_phrase(prompt: &str, phrase: &str) -> bool {
    prompt.match_indices(phrase).any(|(i, _)| prompt[i + phrase.len()..].chars().next().is_none_or(|c| c == ' '))
}

fn latent_values(latents: &Tensor<4>) -> Result<Vec<f32>> {
    latents.to_data().convert::<f32>().try_to_vec::<f32>().map_err(|e| Error::InvalidInput(format!("teaching latents: {e:?}")))
}

/// `[x0, y0, x1, y1)` of the object's core cells (`w` cells a row).
fn core_box(cells: &[Cell], w: usize) -> Option<[usize; 4]> {
    let cells: Vec<(usize, usize)> = cells.iter().enumerate().filter(|(_, &k)| k == Cell::Core).map(|(i, _)| (i % w, i / w)).collect();
    let x0 = cells.iter().map(|c| c.0).min()?;
    let y0 = cells.iter().map(|c| c.1).min()?;
    let x1 = cells.iter().map(|c| c.0).max()? + 1;
    let y1 = cells.iter().map(|c| c.1).max()? + 1;
    Some([x0, y0, x1, y1])
}

/// Whether cell `p` of a `[h, w]` grid lies inside its outermost ring. The VAE's latents differ
/// from the background along the image's border (zero padding), so the ring is left out of the
/// background's median and of the object's core; it is never "the object" on its own.
fn interior(p: usize, [h, w]: [usize; 2]) -> bool {
    let (y, x) = (p / w, p % w);
    y > 0 && x > 0 && y + 1 < h && x + 1 < w
}

/// The background's latent: per channel, the median over the interior cells.
fn interior_medians(values: &[f32], [c, h, w]: [usize; 3]) -> Vec<f32> {
    let n = h * w;
    (0..c)
        .map(|ch| {
            let mut v: Vec<f32> = (0..n).filter(|&p| interior(p, [h, w])).map(|p| values[ch * n + p]).collect();
            v.sort_by(f32::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        })
        .collect()
}

/// What a latent cell shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    Background,
    /// A neighbour of the core: the object's soft edge, or background next to it.
    Edge,
    Core,
}

/// The object's core: interior cells farther than `OBJECT_THRESHOLD` (`memory::object_mask`'s)
/// of the largest distance from the background latent; its edge: their other eight neighbours (border ring included).
/// All background when nothing stands out.
fn object_cells(values: &[f32], median: &[f32], [c, h, w]: [usize; 3]) -> Vec<Cell> {
    let n = h * w;
    let dist: Vec<f32> = (0..n).map(|p| (0..c).map(|ch| (values[ch * n + p] - median[ch]).powi(2)).sum::<f32>().sqrt()).collect();
    let largest = (0..n).filter(|&p| interior(p, [h, w])).map(|p| dist[p]).fold(0.0, f32::max);
    let core = |y: i64, x: i64| {
        y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w && {
            let p = y as usize * w + x as usize;
            interior(p, [h, w]) && dist[p] > OBJECT_THRESHOLD * largest
        }
    };
    (0..n)
        .map(|p| {
            let (y, x) = ((p / w) as i64, (p % w) as i64);
            let near = (-1..=1).any(|dy| (-1..=1).any(|dx| core(y + dy, x + dx)));
            match (largest > 1e-6, core(y, x), near) {
                (false, _, _) => Cell::Background,
                (true, true, _) => Cell::Core,
                (true, false, true) => Cell::Edge,
                (true, false, false) => Cell::Background,
            }
        })
        .collect()
}

/// For a border-ring cell `p` the object covers: the nearest cell along the same edge that it
/// does not (the edge's own latent there); `p` itself when the whole edge is covered.
fn border_stand_in(p: usize, cells: &[Cell], [h, w]: [usize; 2]) -> usize {
    let (y, x) = (p / w, p % w);
    let free = |q: usize| cells[q] == Cell::Background;
    let along: Vec<usize> = if y == 0 || y + 1 == h { (0..w).map(|x2| y * w + x2).collect() } else { (0..h).map(|y2| y2 * w + x).collect() };
    along.into_iter().filter(|&q| free(q)).min_by_key(|&q| (q / w).abs_diff(y) + (q % w).abs_diff(x)).unwrap_or(p)
}

/// Whole cells `[dx, dy]` that bring the core's box to `place`'s anchor, kept so the core stays
/// inside the `[h, w]` grid (its soft ring may leave it). The core's cells are those the object
/// covers most of, so its half extent in pixels is about the box's half.
fn shift_to(bbox: [usize; 4], place: Place, cell: f32, [h, w]: [usize; 2]) -> [i64; 2] {
    let [x0, y0, x1, y1] = bbox.map(|v| v as f32);
    let half = ((x1 - x0).max(y1 - y0) * 0.5).max(0.5) * cell;
    let [ax, ay] = place_anchor(place, half);
    let axis = |anchor_px: f32, lo: f32, hi: f32, n: usize| {
        let d = (anchor_px / cell - (lo + hi) * 0.5).round() as i64;
        d.clamp(-(lo as i64), n as i64 - hi as i64)
    };
    [axis(ax, x0, x1, w), axis(ay, y0, y1, h)]
}

/// The latents with the object's cells moved by `[dx, dy]`: the background where it was (see
/// the module's note on the border ring), its values where it lands, the rest unchanged.
fn moved_object(values: &[f32], cells: &[Cell], median: &[f32], [c, h, w]: [usize; 3], [dx, dy]: [i64; 2]) -> Vec<f32> {
    let n = h * w;
    let mut out = values.to_vec();
    let object: Vec<usize> = (0..n).filter(|&p| cells[p] != Cell::Background).collect();
    for &p in &object {
        let stand_in = (!interior(p, [h, w])).then(|| border_stand_in(p, cells, [h, w]));
        for ch in 0..c {
            out[ch * n + p] = stand_in.map_or(median[ch], |q| values[ch * n + q]);
        }
    }
    for &p in &object {
        let (x, y) = ((p % w) as i64 + dx, (p / w) as i64 + dy);
        if x < 0 || y < 0 || x >= w as i64 || y >= h as i64 {
            continue;
        }
        let q = y as usize * w + x as usize;
        if cells[p] == Cell::Edge && !interior(q, [h, w]) {
            continue;
        }
        for ch in 0..c {
            out[ch * n + q] = values[ch * n + p];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16 x 16 grid of background 0 with a 3 x 3 object of 5.0 at cells (2..5, 6..9).
    fn example(prompt: &str) -> Example {
        let (c, h, w) = (4, 16, 16);
        let mut v = vec![0.0f32; c * h * w];
        for ch in 0..c {
            for y in 6..9 {
                for x in 2..5 {
                    v[ch * h * w + y * w + x] = 5.0;
                }
            }
        }
        Example { latents: Tensor::from_data(TensorData::new(v, [1, c, h, w]), &Device::flex()), prompt: prompt.into() }
    }

    fn bright_cells(e: &Example) -> Vec<(usize, usize)> {
        let v = latent_values(&e.latents).unwrap();
        (0..256).filter(|&p| v[p] > 2.5).map(|p| (p % 16, p / 16)).collect()
    }

    #[test]
    fn moves_the_object_to_every_other_place_and_says_so() {
        let views = place_views(&example("a large <x> on the left on a gray background"), 64).unwrap();
        let prompts: Vec<&str> = views.iter().map(|v| v.prompt.as_str()).collect();
        assert_eq!(prompts, ["a large <x> on the right on a gray background", "a large <x> at the top on a gray background", "a large <x> at the bottom on a gray background", "a large <x> in the center on a gray background"]);
        for view in &views {
            let cells = bright_cells(view);
            assert_eq!(cells.len(), 9, "the whole object moves, nothing else becomes object: {}", view.prompt);
            let (cx, cy) = (cells.iter().map(|c| c.0 as f32).sum::<f32>() / 9.0 * 4.0 + 2.0, cells.iter().map(|c| c.1 as f32).sum::<f32>() / 9.0 * 4.0 + 2.0);
            let place = Place::ALL.iter().copied().find(|p| view.prompt.contains(p.phrase())).unwrap();
            assert!(place.contains([cx, cy]), "{} lands at ({cx}, {cy})", view.prompt);
        }
    }

    #[test]
    fn caption_views_leave_out_every_subset_of_size_place_and_background() {
        let views = caption_views(&example("a large <x> on the left on a night background"));
        let prompts: Vec<&str> = views.iter().map(|v| v.prompt.as_str()).collect();
        assert_eq!(
            prompts,
            [
                "a <x> on the left on a night background",
                "a large <x> on a night background",
                "a <x> on a night background",
                "a large <x> on the left",
                "a <x> on the left",
                "a large <x>",
                "a <x>",
            ]
        );
        assert_eq!(caption_views(&example("a <x> on the right")).iter().map(|v| v.prompt.as_str()).collect::<Vec<_>>(), ["a <x>"]);
        assert!(caption_views(&example("a <x>")).is_empty(), "nothing optional, no views");
        assert!(caption_views(&example("a <x> largely")).is_empty(), "a word boundary ends a phrase");
    }

    #[test]
    fn no_place_word_or_no_object_means_no_views() {
        assert!(place_views(&example("a <x> on a gray background"), 64).unwrap().is_empty());
        let flat = Example { latents: Tensor::zeros([1, 4, 16, 16], &Device::flex()), prompt: "a <x> on the left".into() };
        assert!(place_views(&flat, 64).unwrap().is_empty());
    }
}
