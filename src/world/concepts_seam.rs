//! A two-colour pattern's seam. The VAE decodes the border between a pattern's two colours (the
//! orange and blue of `halves`) through a colour near the background's, so a round trip of an exact
//! picture leaves a 1-3 px uncovered line along the seam: on a gray background the object falls
//! apart into two one-colour blobs, and where it holds together the line cuts the diamond's tips
//! and it reads as a circle. Of 16 round trips of `halves` pictures, 6 of the 8 large ones were lost
//! that way (the small ones lose their colours, which no reading recovers). Here the seam is closed
//! again: blobs across a gap of at most `SEAM` px are joined when together they read as a pattern,
//! and a pattern's coverage has its short uncovered runs between its two colours filled.

use super::concepts::NovelConcept;
use super::concepts_score::{read, Blob};
use super::segment;
use super::SIZE;

/// The widest seam, in pixels, that is read as part of a pattern.
pub(super) const SEAM: usize = 3;

/// Whether two boxes `[c0, c1, r0, r1]` (ends inclusive) are at most `SEAM` px apart.
pub(super) fn near(a: [usize; 4], b: [usize; 4]) -> bool {
    let gap = |lo0: usize, hi0: usize, lo1: usize, hi1: usize| lo1.saturating_sub(hi0).max(lo0.saturating_sub(hi1));
    gap(a[0], a[1], b[0], b[1]) <= SEAM + 1 && gap(a[2], a[3], b[2], b[3]) <= SEAM + 1
}

/// Which blob, if any, each pixel belongs to.
pub(super) fn owners(blobs: &[Vec<usize>]) -> Vec<Option<usize>> {
    let mut owner = vec![None; SIZE * SIZE];
    for (k, blob) in blobs.iter().enumerate() {
        blob.iter().for_each(|&i| owner[i] = Some(k));
    }
    owner
}

/// Joins two blobs across a pattern's seam when their boxes lie at most a seam
/// apart, neither reads as a concept alone and together they read as a two-colour one.
pub(super) fn join(rgb: &[u8], bg: [f32; 3], mut blobs: Vec<Vec<usize>>, concepts: &[NovelConcept]) -> Vec<Vec<usize>> {
    let patterns: Vec<NovelConcept> = concepts.iter().filter(|c| c.look.colors().len() == 2).copied().collect();
    if patterns.is_empty() {
        return blobs;
    }
    'again: loop {
        let owner = owners(&blobs);
        let alone: Vec<bool> = (0..blobs.len()).map(|k| read(&Blob { rgb, pixels: &blobs[k], owner: &owner, me: k, bg }, concepts).is_some_and(|d| d.concept().is_some())).collect();
        for i in 0..blobs.len() {
            for j in i + 1..blobs.len() {
                if alone[i] || alone[j] || !near(segment::bounds(&blobs[i]), segment::bounds(&blobs[j])) {
                    continue;
                }
                let union: Vec<usize> = blobs[i].iter().chain(&blobs[j]).copied().collect();
                let mut joined = owner.clone();
                blobs[j].iter().for_each(|&p| joined[p] = Some(i));
                if read(&Blob { rgb, pixels: &union, owner: &joined, me: i, bg }, &patterns).is_some_and(|d| d.concept().is_some()) {
                    blobs[i] = union;
                    blobs.swap_remove(j);
                    continue 'again;
                }
            }
        }
        return blobs;
    }
}

/// `coverage` with every run of at most `SEAM` pixels below one half, lying between two pixels at
/// least half covered along a row or a column that show different colours of the pattern
/// (`side`: which of its two colours each pixel is nearer), raised to the lesser of those two. A
/// gap between pixels of one colour is no seam: it is the gap between an object and the halo a
/// generated picture may draw around it, and closing it would round the outline.
pub(super) fn close(coverage: &[f32], side: &[u8]) -> Vec<f32> {
    let mut out = coverage.to_vec();
    if coverage.len() != SIZE * SIZE || side.len() != coverage.len() {
        return out;
    }
    for line in 0..SIZE {
        close_line(coverage, side, &mut out, |k| line * SIZE + k);
        close_line(coverage, side, &mut out, |k| k * SIZE + line);
    }
    out
}

/// `close` along one row or column, `at(k)` its k-th pixel.
fn close_line(coverage: &[f32], side: &[u8], out: &mut [f32], at: impl Fn(usize) -> usize) {
    let mut last: Option<usize> = None;
    for k in 0..SIZE {
        let a = coverage[at(k)];
        if a < 0.5 {
            continue;
        }
        if let Some(p) = last.filter(|&p| k - p > 1 && k - p - 1 <= SEAM && side[at(p)] != side[at(k)]) {
            let fill = a.min(coverage[at(p)]);
            for m in p + 1..k {
                out[at(m)] = out[at(m)].max(fill);
            }
        }
        last = Some(k);
    }
}

#[cfg(test)]
mod tests {
    use super::super::concepts::{concept_by_name, identify, novel_concepts, render_concept};
    use super::super::vocab::{Background, Color, Place, Size};
    use super::*;

    /// A large `halves` on gray with, in each row, the `wipe` px before its blue part painted
    /// background (as the VAE leaves the seam) and the blue part moved `shift` px further right.
    fn halves_with_seam(wipe: usize, shift: usize) -> Vec<u8> {
        let c = concept_by_name("halves").expect("a concept");
        let image = render_concept(&c, Place::Center, Size::Large, Background::Gray, 4);
        let bg = [image[0], image[1], image[2]];
        let mut out = image.clone();
        for r in 0..SIZE {
            let px = |c: usize| -> [u8; 3] { std::array::from_fn(|k| image[(r * SIZE + c) * 3 + k]) };
            let Some(first) = (0..SIZE).find(|&c| px(c) == Color::Blue.rgb()) else { continue };
            for c in first.saturating_sub(wipe)..SIZE {
                let from = if c >= first + shift { px(c - shift) } else { bg };
                out[(r * SIZE + c) * 3..(r * SIZE + c + 1) * 3].copy_from_slice(&from);
            }
        }
        out
    }

    #[test]
    fn a_pattern_cut_along_its_seam_reads_whole_and_two_apart_objects_stay_two() {
        let all = novel_concepts();
        for wipe in 0..=SEAM {
            let found = identify(&halves_with_seam(wipe, 0), &all);
            assert_eq!(found.len(), 1, "seam {wipe}: {found:?}");
            assert_eq!(found[0].concept(), Some("halves"), "seam {wipe}: {found:?}");
        }
        let found = identify(&halves_with_seam(SEAM, 4), &all);
        assert!(found.len() == 2 && found.iter().all(|d| d.concept().is_none()), "{found:?}");
    }

    fn square_with_slit(slit: usize) -> Vec<f32> {
        (0..SIZE * SIZE)
            .map(|i| {
                let (r, c) = (i / SIZE, i % SIZE);
                let inside = (20..40).contains(&r) && (20..40).contains(&c);
                let cut = (30..30 + slit).contains(&c);
                if inside && !cut {
                    1.0
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Left of column 30 one colour, from it the other.
    fn halves_sides() -> Vec<u8> {
        (0..SIZE * SIZE).map(|i| u8::from(i % SIZE >= 30)).collect()
    }

    #[test]
    fn a_seam_up_to_three_pixels_between_the_two_colours_closes() {
        for slit in 1..=SEAM {
            let closed = close(&square_with_slit(slit), &halves_sides());
            assert_eq!(closed, square_with_slit(0), "slit {slit}");
        }
        let wide = square_with_slit(SEAM + 1);
        assert_eq!(close(&wide, &halves_sides()), wide, "wider than a seam");
        let one_colour = square_with_slit(2);
        assert_eq!(close(&one_colour, &vec![0; SIZE * SIZE]), one_colour, "a gap within one colour");
    }

    #[test]
    fn boxes_meet_across_a_seam_not_across_a_gap() {
        let left = [10, 19, 10, 30];
        assert!(near(left, [21, 30, 12, 28]));
        assert!(near(left, [20 + SEAM, 30, 12, 28]));
        assert!(!near(left, [21 + SEAM, 30, 12, 28]));
        assert!(!near(left, [21, 30, 32 + SEAM, 40]));
        assert!(near([21, 30, 12, 28], left));
    }
}
