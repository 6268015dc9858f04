//! Null-space lessons (`--method l2dm-null-space`, src/lifelong/null_space.rs) on the tiny SD-1 fixture: a
//! second lesson leaves the first concept's prompt, a remembered plain prompt and the empty
//! prompt as they were, while the shared adapter trained without the null space moves them; two
//! shared concepts compose by region; the grown state reloads exactly.

mod common;

use burn::prelude::*;
use common::lessons::{learner, picture};
use common::values;
use lifelong_diffusion::lifelong::compose::Composer;
use lifelong_diffusion::lifelong::learner::{Learner, MemoryOptions, Method};
use lifelong_diffusion::lifelong::lesson::LessonOptions;
use lifelong_diffusion::lifelong::state;
use lifelong_diffusion::rng::Rng;

const WATCHED: [&str; 3] = ["a <one>", "a red square", ""];

fn predict(l: &Learner, prompt: &str) -> Vec<f32> {
    let device = Device::flex();
    let x = Tensor::<4>::from_data(TensorData::new(Rng::new(7).normal_vec(4 * 8 * 8), [1, 4, 8, 8]), &device);
    let adapter = l.adapter.frozen(&device);
    let context = adapter.encode_ids(&l.base.text_encoder, &l.trainer.ids(&[prompt]).unwrap(), &device).unwrap();
    values(adapter.apply_unet(&l.base.unet).unwrap().forward(x, 500.0, &context))
}

fn gap(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// Two lessons with `method`; per watched prompt how far the second moved it, how far `<two>`'s
/// prediction is from `<one>`'s, and the learner.
fn two_lessons(method: Method, image_sites: bool) -> (Vec<f32>, f32, Learner) {
    let mut l = learner();
    let memory = MemoryOptions { keep: 2, candidates: 2, refresh: 1, steps: 2, guidance: 1.0 };
    let options = LessonOptions { steps: 6, lr_lora: 1e-2, lr_token: 3e-2, image_sites, uncond: 0.0, ..LessonOptions::default() };
    l.remember_base(&["a red square".to_string()], &memory, 0).expect("base memory");
    l.lesson("one", &[picture(4, 4), picture(30, 20)], method, &options, &memory, &mut |_| {}).expect("lesson one");
    let before: Vec<Vec<f32>> = WATCHED.iter().map(|p| predict(&l, p)).collect();
    let embedding = values(l.adapter.embeddings[0].clone());
    let report = l.lesson("two", &[picture(10, 38), picture(40, 4)], method, &options, &memory, &mut |_| {}).expect("lesson two");
    let moved = WATCHED.iter().zip(&before).map(|(p, b)| gap(&predict(&l, p), b)).collect();
    let apart = gap(&predict(&l, "a <two>"), &predict(&l, "a <one>"));
    if method == Method::L2dmNullSpace {
        let (k, d) = report.protected.expect("a null-space lesson reports its basis");
        assert!(0 < k && k < d, "{k} of {d} directions protected");
        assert_eq!(values(l.adapter.embeddings[0].clone()), embedding, "<one>'s embedding is frozen");
        assert_eq!(l.adapter.config.rank, 16, "the second lesson adds a block");
    }
    (moved, apart, l)
}

#[test]
fn a_null_space_lesson_on_the_text_sites_leaves_earlier_prompts_as_they_were() {
    let (guarded, apart, l) = two_lessons(Method::L2dmNullSpace, false);
    let (open, _, _) = two_lessons(Method::L2dmNoNullSpace, false);
    eprintln!("moved by the second lesson ({WATCHED:?}): null space {guarded:?}, without {open:?}; <two> vs <one> {apart}");
    assert!(apart > 1e-3, "<two> draws differently from <one>: {apart}");
    for (i, prompt) in WATCHED.iter().enumerate() {
        assert!(guarded[i] < 0.05 * apart, "{prompt:?} moved {} (<two> vs <one>: {apart})", guarded[i]);
        assert!(guarded[i] < 0.2 * open[i].max(1e-9), "{prompt:?}: null space {} vs without {}", guarded[i], open[i]);
    }

    // Two concepts of the shared adapter compose by region, as routed ones do, each region
    // drawn by the whole adapter from its own clause.
    let composer = Composer::plan(&l.adapter, &l.base, "a <one> to the left of a <two>", [8, 8]).expect("plan").expect("two shared concepts compose");
    let clauses: Vec<&str> = composer.clauses.iter().map(|c| c.prompt.as_str()).collect();
    assert_eq!(clauses, ["a large <one> in the center on a gray background", "a large <two> in the center on a gray background"]);

    // The grown shared state reloads exactly.
    let (concepts, blobs) = state::save(&l, &[], 2).expect("save");
    let mut back = learner();
    state::load(&mut back, &concepts, &blobs).expect("load");
    for prompt in ["a <one>", "a <two>", "a red square"] {
        assert!(gap(&predict(&back, prompt), &predict(&l, prompt)) < 1e-5, "{prompt:?} after reload");
    }
}
