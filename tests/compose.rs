//! The layout that composes routed concepts (src/lifelong/compose.rs): clauses and regions read
//! from the prompt's own words.

use burn::prelude::Device;
use lifelong_diffusion::lifelong::compose::{layout, object_layout, region_masks, Clause};

fn prompts(clauses: &[Clause]) -> Vec<&str> {
    clauses.iter().map(|c| c.prompt.as_str()).collect()
}

#[test]
fn a_relation_places_both_clauses() {
    let c = layout("a <a> to the left of a <b>", &["<a>", "<b>"]).expect("layout");
    // Without a background of the prompt's, every clause names the same one.
    assert_eq!(prompts(&c), ["a large <a> in the center on a gray background", "a large <b> in the center on a gray background"]);
    assert_eq!([c[0].center, c[1].center], [[0.25, 0.5], [0.75, 0.5]]);
    let c = layout("a small <a> above a <b>", &["<a>", "<b>"]).expect("layout");
    assert_eq!(prompts(&c), ["a small <a> in the center on a gray background", "a large <b> in the center on a gray background"], "a size the user gives stays");
    assert!(c[0].center[1] < c[1].center[1], "above is higher in the image");
    // Tokens given in another order than the prompt names them: clauses follow `tokens`.
    let c = layout("a <a> below an <b>", &["<b>", "<a>"]).expect("layout");
    assert_eq!(prompts(&c), ["a large <b> in the center on a gray background", "a large <a> in the center on a gray background"]);
    assert!(c[0].center[1] < c[1].center[1], "<b> is above <a>");
    // The background is the scene's: every clause gets it.
    let c = layout("a <a> to the right of a <b> on a sand background", &["<a>", "<b>"]).expect("layout");
    assert_eq!(prompts(&c), ["a large <a> in the center on a sand background", "a large <b> in the center on a sand background"]);
    assert!(c[0].center[0] > c[1].center[0]);
    let c = layout("a night background with a <a> above a <b>", &["<a>", "<b>"]).expect("layout");
    assert_eq!(prompts(&c), ["a large <a> in the center on a night background", "a large <b> in the center on a night background"]);
}

#[test]
fn own_places_win_and_plain_lists_go_left_to_right() {
    let c = layout("a <a> at the bottom and a <b> at the top", &["<a>", "<b>"]).expect("layout");
    assert_eq!(prompts(&c), ["a large <a> in the center on a gray background", "a large <b> in the center on a gray background"]);
    assert_eq!([c[0].center, c[1].center], [[0.5, 0.75], [0.5, 0.25]]);
    let c = layout("a <a>, a <b> and a <c>", &["<a>", "<b>", "<c>"]).expect("layout");
    assert_eq!(prompts(&c), ["a <a> in the center on a gray background", "a <b> in the center on a gray background", "a <c> in the center on a gray background"], "three regions: no size added");
    assert!(c[0].center[0] < c[1].center[0] && c[1].center[0] < c[2].center[0]);
    // Without a relation or a separator the second clause starts after the first token.
    let c = layout("a <a> next to a <b>", &["<a>", "<b>"]).expect("layout");
    assert_eq!(prompts(&c), ["a large <a> in the center on a gray background", "next to a large <b> in the center on a gray background"]);
}

#[test]
fn plain_relation_prompts_split_into_their_two_objects() {
    let c = object_layout("a yellow triangle to the left of a purple ring").expect("layout");
    assert_eq!(prompts(&c), ["a large yellow triangle in the center on a gray background", "a large purple ring in the center on a gray background"]);
    assert_eq!([c[0].center, c[1].center], [[0.25, 0.5], [0.75, 0.5]]);
    let c = object_layout("a large black triangle below a small green heart on a sky background").expect("layout");
    assert_eq!(prompts(&c), ["a large black triangle in the center on a sky background", "a small green heart in the center on a sky background"]);
    assert!(c[0].center[1] > c[1].center[1], "below is lower in the image");
    // No relation, two relations, or a side with no object: no layout (the prompt is drawn whole).
    assert!(object_layout("a red circle and a blue square").is_none());
    assert!(object_layout("a red circle on the left").is_none());
    assert!(object_layout("a red circle above a blue square to the left of a star").is_none());
    assert!(object_layout("above a blue square").is_none());
    assert!(object_layout("a blue square above").is_none());
    assert!(object_layout("a <moon> above a blue square").is_none(), "a learned concept composes by concept");
}

#[test]
fn no_layout_when_a_token_is_missing_or_places_clash() {
    assert!(layout("a <a> on the left", &["<a>", "<b>"]).is_none());
    assert!(layout("a <a> on the left and a <b> on the left", &["<a>", "<b>"]).is_none());
}

#[test]
fn regions_partition_the_latent() {
    let device = Device::flex();
    let masks = region_masks(&[[0.25, 0.5], [0.75, 0.5]], [4, 6], &device);
    let v: Vec<f32> = masks.clone().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    // Row 0 of the left region: near 1 at the left edge, 1/2 on the border, near 0 at the right.
    assert!(v[0] > 0.99 && v[5] < 0.01, "{:?}", &v[..6]);
    assert!(v[..6].windows(2).all(|p| p[0] > p[1]), "falls off across the border: {:?}", &v[..6]);
    let cover: Vec<f32> = masks.sum_dim(0).into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    assert!(cover.iter().all(|&c| (c - 1.0).abs() < 1e-6), "the weights sum to 1 in every cell");
}
