//! Moving two privately drawn concepts apart before their regions are joined. Drawn each on
//! latents of its own ([`super::PrivateViews`]) for every step, a concept is a finished one-object
//! picture on the shared background, centred in its view; joined at fixed region centres, two
//! wide objects ("large", as the clauses ask) can meet at the border and read as one. So the
//! objects are found in their final latents (the cells far from the background, estimated from
//! the view's outer ring) and, when their boxes come closer than [`GAP`] cells along the axis that
//! separates the regions, each moves outward (a roll: its view holds only background beyond the
//! object) as far as its own margin to the image's edge allows; the border between the regions
//! goes to the middle of the gap. On the eight taught concepts of README "Lessons" (64
//! two-concept prompts, 2026-11-27, session 14): 52 composed without moving, 62 with (eleven
//! gained, one lost; those gained were the wide shapes, ell, chevron and dome, meeting at the
//! border). Before that, an object that sticks out of the image (a wide one centred on a region
//! centre near the edge) first moves back inside ([`fits`]), or its part past the edge is lost:
//! seed 2's pairs 32 -> 39 of 64 (session 23, README "Lessons").

use burn::prelude::*;

use super::{region_masks, unroll, Clause, Part};

/// Free latent cells wanted between two objects (4 pixels of the built-in model).
pub const GAP: isize = 1;

/// A cell belongs to the object when its latent is farther from the background's than this share
/// of the view's farthest cell.
const OBJECT_SHARE: f32 = 0.35;

/// The object's box in a view of `dims` `[c, h, w]` whose `values` are channel-major: `[row0,
/// row1, col0, col1]`, inclusive; `None` when no cell stands out.
pub fn object_box(values: &[f32], [c, h, w]: [usize; 3]) -> Option<[isize; 4]> {
    if values.len() != c * h * w || h * w == 0 {
        return None;
    }
    let at = |ch: usize, y: usize, x: usize| values[(ch * h + y) * w + x];
    let ring: Vec<(usize, usize)> = (0..h).flat_map(|y| (0..w).map(move |x| (y, x))).filter(|&(y, x)| y == 0 || x == 0 || y == h - 1 || x == w - 1).collect();
    let background: Vec<f32> = (0..c).map(|ch| ring.iter().map(|&(y, x)| at(ch, y, x)).sum::<f32>() / ring.len() as f32).collect();
    let distance: Vec<f32> = (0..h * w).map(|i| (0..c).map(|ch| (at(ch, i / w, i % w) - background[ch]).powi(2)).sum::<f32>().sqrt()).collect();
    let far = distance.iter().copied().fold(0.0f32, f32::max);
    if far.is_nan() || far <= 0.0 {
        return None;
    }
    let cells: Vec<usize> = (0..h * w).filter(|&i| distance[i] > OBJECT_SHARE * far).collect();
    let rows = cells.iter().map(|&i| (i / w) as isize);
    let cols = cells.iter().map(|&i| (i % w) as isize);
    Some([rows.clone().min()?, rows.max()?, cols.clone().min()?, cols.max()?])
}

/// How far to move the first and the second object along one axis (`-first`, `+second`) so
/// that `[a0, a1]` (the first, nearer the axis' start) and `[b0, b1]` are [`GAP`] cells apart,
/// each within `[0, n)`: `(first, second)`, both >= 0; what the margins do not allow is left out.
pub fn moves([a0, a1]: [isize; 2], [b0, b1]: [isize; 2], n: isize) -> (isize, isize) {
    let deficit = GAP + 1 - (b0 - a1);
    if deficit <= 0 {
        return (0, 0);
    }
    let (room_a, room_b) = (a0.max(0), (n - 1 - b1).max(0));
    share(deficit, [room_a, room_b], (deficit + 1) / 2)
}

/// `total` shared between two moves capped at `caps`: the first takes up to `first_try`, the
/// second what it can of the rest, the first what the second left (as much of `total` as the
/// caps allow).
fn share(total: isize, [cap_a, cap_b]: [isize; 2], first_try: isize) -> (isize, isize) {
    let first = cap_a.min(first_try);
    let second = cap_b.min(total - first);
    (cap_a.min(total - second), second)
}

/// The finished image of two parts whose objects were moved apart ([`moves`]), the border
/// between their regions in the middle of the gap; `None` for other than two parts or when no
/// object is found.
pub(super) fn settled(parts: &[Part], clauses: &[Clause], latents: &[Tensor<4>], values: &[Vec<f32>]) -> Option<Tensor<4>> {
    let ([a, b], [ca, cb], [la, lb]) = (<&[Part; 2]>::try_from(parts).ok()?, <&[Clause; 2]>::try_from(clauses).ok()?, <&[Tensor<4>; 2]>::try_from(latents).ok()?);
    let [_, c, h, w] = la.dims();
    let boxes = [object_box(values.first()?, [c, h, w])?, object_box(values.get(1)?, [c, h, w])?];
    Some(join([a.shift, b.shift], [ca.center, cb.center], [la, lb], boxes))
}

/// How far to move the first and the second object inward (`+first`, `-second`) along the axis
/// that separates them so that each lies within `[0, n)`: an object drawn centred on a region
/// centre near the edge can stick out of the image, and its view is rolled, so the part beyond
/// the edge is lost (a chevron on the left came out without its left arm in all eight of seed
/// 2's pairs that put it there: README, "Lessons"). Only the room beyond [`GAP`] between the two
/// is used ([`share`]d as [`moves`] shares its deficit), so that fitting never joins the objects.
pub fn fits([a0, a1]: [isize; 2], [b0, b1]: [isize; 2], n: isize) -> (isize, isize) {
    let free = (b0 - a1 - 1 - GAP).max(0);
    let (need_a, need_b) = ((-a0).max(0), (b1 - (n - 1)).max(0));
    share(free, [need_a, need_b], free / 2)
}

/// The move, across the separating axis, that brings `[a0, a1]` within `[0, n)` (0 when it is, or
/// when it is wider than the image): each object has that axis to itself.
fn inside([a0, a1]: [isize; 2], n: isize) -> isize {
    if a1 - a0 + 1 > n {
        0
    } else if a0 < 0 {
        -a0
    } else {
        (n - 1 - a1).min(0)
    }
}

/// [`settled`] for two views with their rolls (`shifts`, `[rows, columns]` as the parts'), region
/// centres (`[x, y]`) and objects' boxes in the views ([`object_box`]).
fn join(shifts: [[isize; 2]; 2], centers: [[f32; 2]; 2], latents: [&Tensor<4>; 2], boxes: [[isize; 4]; 2]) -> Tensor<4> {
    let [_, _, h, w] = latents[0].dims();
    // The axis that separates the two regions (0: rows, 1: columns) and the centres'
    // coordinate along it.
    let axis = usize::from((centers[0][0] - centers[1][0]).abs() >= (centers[0][1] - centers[1][1]).abs());
    let coord = 1 - axis;
    // An object's extent along an axis in image cells (a view's cell v is the image's v - shift).
    let extent = |k: usize, ax: usize| [boxes[k][2 * ax] - shifts[k][ax], boxes[k][2 * ax + 1] - shifts[k][ax]];
    let (lo_k, hi_k) = if centers[0][coord] <= centers[1][coord] { (0, 1) } else { (1, 0) };
    let (lo, hi) = (extent(lo_k, axis), extent(hi_k, axis));
    let n = [h, w][axis] as isize;
    let (inward_lo, inward_hi) = fits(lo, hi, n);
    let (lo, hi) = ([lo[0] + inward_lo, lo[1] + inward_lo], [hi[0] - inward_hi, hi[1] - inward_hi]);
    let (back, forth) = moves(lo, hi, n);
    let border = ((lo[1] - back + 1) + (hi[0] + forth)) as f32 / (2 * n) as f32;
    let mut centers = centers;
    centers[lo_k][coord] = border - 0.25;
    centers[hi_k][coord] = border + 0.25;
    let mut shifts = shifts;
    // Displaced by d in the image, the view's cell v lands on v - (shift - d).
    shifts[lo_k][axis] += back - inward_lo;
    shifts[hi_k][axis] -= forth - inward_hi;
    let across = 1 - axis;
    let m = [h, w][across] as isize;
    for k in [lo_k, hi_k] {
        shifts[k][across] -= inside(extent(k, across), m);
    }
    let masks = region_masks(&centers, [h, w], &latents[0].device());
    let placed = |k: usize| unroll(latents[k].clone(), shifts[k]) * masks.clone().narrow(0, k, 1).cast(latents[k].dtype());
    placed(0) + placed(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_move_apart_within_their_margins() {
        assert_eq!(moves([1, 6], [9, 14], 16), (0, 0), "two free cells between: already apart");
        assert_eq!(moves([1, 6], [8, 13], 16), (0, 0), "one free cell: apart");
        assert_eq!(moves([2, 7], [8, 13], 16), (1, 0), "touching: one cell makes the gap");
        assert_eq!(moves([2, 8], [8, 13], 16), (1, 1), "sharing a cell: one cell each way");
        assert_eq!(moves([0, 7], [7, 12], 16), (0, 2), "no room before the first: the second moves alone");
        assert_eq!(moves([0, 7], [7, 15], 16), (0, 0), "no room on either side: left as drawn");
    }

    #[test]
    fn objects_past_the_edge_move_inward_within_the_free_room() {
        assert_eq!(fits([1, 6], [9, 14], 16), (0, 0), "both inside: stay");
        assert_eq!(fits([-2, 4], [9, 14], 16), (2, 0), "two cells past the start, room for them");
        assert_eq!(fits([-2, 4], [9, 17], 16), (1, 2), "both out, three free cells beyond the gap");
        assert_eq!(fits([-3, 4], [7, 14], 16), (1, 0), "only one free cell beyond the gap: never closer than it");
        assert_eq!(fits([-3, 4], [6, 14], 16), (0, 0), "no free room: left as drawn");
        assert_eq!(inside([-2, 5], 16), 2);
        assert_eq!(inside([10, 18], 16), -3);
        assert_eq!(inside([3, 9], 16), 0);
        assert_eq!(inside([-2, 16], 16), 0, "wider than the image: left as drawn");
    }

    #[test]
    fn the_object_is_what_stands_out_from_the_ring() {
        let (c, h, w) = (4, 8, 8);
        let mut v = vec![0.5f32; c * h * w];
        for ch in 0..c {
            for y in 2..5 {
                for x in 3..7 {
                    v[(ch * h + y) * w + x] = -1.0 + ch as f32;
                }
            }
        }
        assert_eq!(object_box(&v, [c, h, w]), Some([2, 4, 3, 6]));
        assert_eq!(object_box(&vec![0.0; c * h * w], [c, h, w]), None, "a blank view has no object");
        assert_eq!(object_box(&v[1..], [c, h, w]), None, "values of another shape");
    }

    /// A view `[1, 1, 5, 16]`: ones on rows 1..4 and `cols` (the object), zeros elsewhere.
    fn view(cols: std::ops::Range<usize>) -> (Tensor<4>, [isize; 4]) {
        let v: Vec<f32> = (0..5 * 16).map(|i| if (1..4).contains(&(i / 16)) && cols.contains(&(i % 16)) { 1.0 } else { 0.0 }).collect();
        let found = object_box(&v, [1, 5, 16]).expect("an object");
        (Tensor::from_data(TensorData::new(v, [1, 1, 5, 16]), &Device::flex()), found)
    }

    /// The columns of the joined image's middle row where an object is.
    fn joined(cols: std::ops::Range<usize>, shift: isize, center: f32) -> Vec<usize> {
        let ((a, box_a), (b, box_b)) = (view(cols.clone()), view(cols));
        let image = join([[0, shift], [0, -shift]], [[center, 0.5], [1.0 - center, 0.5]], [&a, &b], [box_a, box_b]);
        let v: Vec<f32> = image.narrow(2, 2, 1).into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        (0..16).filter(|&x| v[x] > 0.5).collect()
    }

    #[test]
    fn joined_objects_that_would_touch_get_a_gap() {
        let both = |a: std::ops::Range<usize>, b: std::ops::Range<usize>| a.chain(b).collect::<Vec<_>>();
        // Objects on view columns 5..12, rolled four columns out: columns 1..8 and 9..16, one
        // free column between: joined as drawn.
        assert_eq!(joined(5..12, 4, 0.25), both(1..8, 9..16));
        // Rolled three columns out they would share column 8: each moves one column outward.
        assert_eq!(joined(5..12, 3, 0.3), both(1..8, 9..16));
        // Objects on view columns 6..10 rolled eight columns out would stick two columns out of
        // the image each (and wrap round, masked away): each moves back inside.
        assert_eq!(joined(6..10, 8, 0.2), both(0..4, 12..16));
    }
}
