//! L2DM's concept-gated shared adapter (`--method l2dm`, src/model/gate.rs and
//! src/lifelong/gate.rs) on the tiny SD-1 fixture: a block is exactly zero on prompts without its
//! concept's token, so lessons never move plain prompts or the empty prompt; each lesson adds a
//! block and leaves the earlier ones and their tokens as they were; the state reloads exactly.

mod common;

use burn::prelude::*;
use common::lessons::{learner, picture};
use common::values;
use lifelong_diffusion::lifelong::learner::{Learner, MemoryOptions, Method};
use lifelong_diffusion::lifelong::lesson::LessonOptions;
use lifelong_diffusion::lifelong::state;
use lifelong_diffusion::model::gate::gate_channels;
use lifelong_diffusion::rng::Rng;

/// The prediction of the whole installed state for `prompt` (the generation path: the text
/// encoding appends the gates) on a fixed latent.
fn predict(l: &Learner, prompt: &str) -> Vec<f32> {
    let device = Device::flex();
    let x = Tensor::<4>::from_data(TensorData::new(Rng::new(7).normal_vec(4 * 8 * 8), [1, 4, 8, 8]), &device);
    let mut model = l.base.clone();
    l.adapter.install(&mut model).expect("install");
    let context = lifelong_diffusion::pipeline::encode_text(&model, prompt, &device, &mut Vec::new()).expect("encode");
    values(model.unet.forward(x, 500.0, &context))
}

fn base(l: &Learner, prompt: &str) -> Vec<f32> {
    let device = Device::flex();
    let x = Tensor::<4>::from_data(TensorData::new(Rng::new(7).normal_vec(4 * 8 * 8), [1, 4, 8, 8]), &device);
    let context = lifelong_diffusion::pipeline::encode_text(&l.base, prompt, &device, &mut Vec::new()).expect("encode");
    values(l.base.unet.forward(x, 500.0, &context))
}

fn gap(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn gate_channels_mark_each_token_and_what_it_reaches() {
    let ids = vec![vec![1, 50, 7, 60, 2], vec![1, 7, 2, 2, 2]];
    let g = values(gate_channels(&ids, &[60, 50], &Device::flex()));
    // Row 0: token 60 at position 3, token 50 at position 1; channels [one-hot 60, one-hot 50,
    // reach 60, reach 50] per position.
    let row0: Vec<[f32; 4]> = (0..5).map(|p| g[p * 4..p * 4 + 4].try_into().unwrap()).collect();
    assert_eq!(row0, vec![[0., 0., 0., 0.], [0., 1., 0., 1.], [0., 0., 0., 1.], [1., 0., 1., 1.], [0., 0., 1., 1.]]);
    assert!(g[20..].iter().all(|&v| v == 0.0), "a row without the tokens has no gate");
}

#[test]
fn gated_lessons_leave_every_prompt_without_their_concepts_exactly_as_the_base_draws_it() {
    let mut l = learner();
    let memory = MemoryOptions { keep: 2, candidates: 2, refresh: 1, steps: 2, guidance: 1.0 };
    let options = LessonOptions { steps: 8, lr_lora: 1e-2, lr_token: 3e-2, ..LessonOptions::default() };
    l.remember_base(&["a red square".to_string()], &memory, 0).expect("base memory");
    l.lesson("one", &[picture(4, 4), picture(30, 20)], Method::L2dm, &options, &memory, &mut |_| {}).expect("lesson one");
    assert_eq!(l.default_method(), Method::L2dm, "a gated state's lessons stay gated");
    let one = predict(&l, "a <one>");
    l.lesson("two", &[picture(10, 38), picture(40, 4)], Method::L2dm, &options, &memory, &mut |_| {}).expect("lesson two");
    assert_eq!(l.adapter.config.rank, 16, "one block a concept");
    assert_eq!(l.adapter.routes, vec![0..8, 8..16]);
    for prompt in ["a red square", "", "a blue circle to the left of a green triangle"] {
        let moved = gap(&predict(&l, prompt), &base(&l, prompt));
        assert!(moved < 1e-5, "{prompt:?} is the base model's ({moved})");
    }
    let apart = gap(&predict(&l, "a <two>"), &predict(&l, "a <one>"));
    let held = gap(&predict(&l, "a <one>"), &one);
    eprintln!("<two> vs <one> {apart}, <one> moved by lesson two {held}");
    assert!(apart > 1e-3, "the blocks act on their own prompts: {apart}");
    assert!(held < 1e-5, "<one>'s block and token stay as they were: moved {held}");
    // A prompt naming <one> draws without <two>'s block.
    let only_one = l.adapter.routed(&[0]);
    let rows = |a: &lifelong_diffusion::lifelong::adapter::Adapter, at: usize| values(a.up[0].clone().narrow(0, at, 8));
    assert!(rows(&only_one, 8).iter().all(|&v| v == 0.0), "<two>'s block is left out");
    assert_eq!(rows(&only_one, 0), rows(&l.adapter, 0), "<one>'s block stays");

    // A routed lesson cannot join a gated state.
    let refused = l.lesson("three", &[picture(4, 4)], Method::Routed, &options, &memory, &mut |_| {});
    assert!(refused.unwrap_err().to_string().contains("--method l2dm"));

    // The store records the gated blocks; reloaded, every prompt draws as before.
    let (concepts, blobs) = state::save(&l, &[], 2).expect("save");
    assert!(concepts.iter().all(|c| c.gated), "entries say their block is gated");
    let mut back = learner();
    state::load(&mut back, &concepts, &blobs).expect("load");
    assert!(back.adapter.gated && back.adapter.routes == l.adapter.routes);
    for prompt in ["a <one>", "a <two>", "a <one> to the left of a <two>", "a red square"] {
        assert!(gap(&predict(&back, prompt), &predict(&l, prompt)) < 1e-5, "{prompt:?} after reload");
    }
    let mut mixed = concepts.clone();
    mixed[1].gated = false;
    assert!(state::load(&mut learner(), &mixed, &blobs).unwrap_err().to_string().contains("inconsistent"));
}
