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
use lifelong_diffusion::model::gate::{gate_channels, negative_gates};
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

/// The prediction of guidance's negative half (the empty prompt) beside `prompt`, as
/// `Pipeline::start` builds it.
fn predict_negative(l: &Learner, prompt: &str) -> Vec<f32> {
    let device = Device::flex();
    let x = Tensor::<4>::from_data(TensorData::new(Rng::new(7).normal_vec(4 * 8 * 8), [1, 4, 8, 8]), &device);
    let mut model = l.base.clone();
    l.adapter.install(&mut model).expect("install");
    let encode = |text: &str| lifelong_diffusion::pipeline::encode_text(&model, text, &device, &mut Vec::new()).expect("encode");
    let context = negative_gates(encode(""), &encode(prompt), model.gate_tokens.len());
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
    // Row 0: token 60 at position 3, token 50 at position 1; channels [open 60, open 50,
    // reach 60, reach 50] per position.
    let row0: Vec<[f32; 4]> = (0..5).map(|p| g[p * 4..p * 4 + 4].try_into().unwrap()).collect();
    assert_eq!(row0, vec![[1., 1., 0., 0.], [1., 1., 0., 1.], [1., 1., 0., 1.], [1., 1., 1., 1.], [1., 1., 1., 1.]]);
    assert!(g[20..].iter().all(|&v| v == 0.0), "a row without the tokens has no gate");
}

#[test]
fn the_negative_prompt_opens_the_blocks_its_prompt_opens_over_all_its_text() {
    let device = Device::flex();
    let d = 3;
    let features = |rows: usize| Tensor::<3>::from_data(TensorData::new(Rng::new(3).normal_vec(rows * 4 * d), [rows, 4, d]), &device);
    let with = |f: Tensor<3>, ids: &[i64]| Tensor::cat(vec![f, gate_channels(&[ids.to_vec()], &[60, 50], &device)], 2);
    let prompt = with(features(1), &[1, 7, 60, 2]);
    let negative = with(features(1), &[1, 2, 2, 2]);
    let out = values(negative_gates(negative.clone(), &prompt, 2));
    let text = values(negative.narrow(2, 0, d));
    for p in 0..4 {
        let row = &out[p * (d + 4)..(p + 1) * (d + 4)];
        assert_eq!(&row[..d], &text[p * d..(p + 1) * d], "the negative prompt's features stay");
        assert_eq!(&row[d..], &[1., 0., 1., 0.], "60's block open everywhere, 50's closed (position {p})");
    }
    let plain = with(features(1), &[1, 7, 8, 2]);
    let negative = with(features(1), &[1, 2, 2, 2]);
    assert_eq!(values(negative_gates(negative.clone(), &plain, 2)), values(negative), "a plain prompt's negative half stays closed");
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
        let negative = gap(&predict_negative(&l, prompt), &base(&l, ""));
        assert!(negative < 1e-5, "guidance's negative half beside {prompt:?} is the base model's ({negative})");
    }
    // Beside a prompt naming <two>, the negative half draws with <two>'s block, as a routed
    // block installed for the prompt does.
    let opened = gap(&predict_negative(&l, "a <two>"), &base(&l, ""));
    assert!(opened > 1e-4, "the negative half opens <two>'s block: {opened}");
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
