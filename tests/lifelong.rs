//! Lessons on the tiny SD-1 fixture: a lesson lowers its own denoising loss, the orthogonal-
//! attention term sees identical concepts as fully overlapping, and a saved state reloads exactly.

mod common;

use burn::prelude::*;
use common::lessons::{learner, picture};
use common::{fixtures, values};
use lifelong_diffusion::lifelong::adapter::AdapterConfig;
use lifelong_diffusion::lifelong::compose::Composer;
use lifelong_diffusion::lifelong::invert::{picture_latents, REFINE_FROM};
use lifelong_diffusion::lifelong::learner::{Learner, MemoryOptions, Method, Picture};
use lifelong_diffusion::lifelong::lesson::{Example, LessonOptions, Trainer};
use lifelong_diffusion::lifelong::protect::orthogonality;
use lifelong_diffusion::lifelong::state;
use lifelong_diffusion::loader;
use lifelong_diffusion::native::Folder;
use lifelong_diffusion::pipeline::{decode_latents, encode_latents};
use lifelong_diffusion::rng::Rng;

/// Mean denoising loss of `examples` at fixed timesteps and noise.
fn fixed_loss(trainer: &Trainer, learner: &Learner, examples: &[Example]) -> f32 {
    let mut rng = Rng::new(9);
    let mut total = 0.0;
    for e in examples {
        for t in [200usize, 500, 800] {
            let x0 = e.latents.clone();
            let noise = Tensor::<4>::from_data(TensorData::new(rng.normal_vec(x0.dims().iter().product()), x0.dims()), &trainer.device);
            let x_t = x0.mul_scalar(0.5) + noise.clone().mul_scalar(0.5f32.sqrt() * 1.2);
            let ids = trainer.ids(&[e.prompt.as_str()]).unwrap();
            let pred = trainer.predict(&learner.adapter, x_t, &[t as f32], &ids).unwrap();
            total += values((pred - noise).square().mean())[0];
        }
    }
    total
}

#[test]
fn a_lesson_lowers_its_loss_and_its_state_reloads_exactly() {
    let mut l = learner();
    let pictures = vec![picture(4, 4), picture(30, 20), picture(10, 38)];
    let options = LessonOptions { steps: 40, lr_lora: 1e-2, lr_token: 3e-2, ..LessonOptions::default() };
    let memory = MemoryOptions { keep: 2, candidates: 2, refresh: 1, steps: 2, guidance: 1.0 };
    assert_eq!(l.default_method(), Method::Routed, "an empty state's lessons are routed unless asked");
    let report = l.lesson("toy", &pictures, Method::L2dm, &options, &memory, &mut |_| {}).expect("lesson");
    assert!(report.last_loss.is_finite());
    assert_eq!(l.default_method(), Method::L2dm, "a shared state's lessons stay shared");
    assert_eq!(l.memories.iter().filter(|m| m.concept.as_deref() == Some("toy")).map(|m| m.items.len()).sum::<usize>(), 2);

    // Loss on the lesson's own pictures with the learned state vs. a fresh adapter.
    let examples = l.examples("<toy>", &pictures, options.refine_steps).expect("examples").0;
    let taught = fixed_loss(&l.trainer, &l, &examples);
    let mut fresh = learner();
    fresh.trainer.model.tokenizer.add_token("<toy>").unwrap();
    fresh.adapter.add_concept("toy", "<toy>", l.adapter.concepts[0].token_id, l.adapter.embeddings[0].clone().zeros_like()).unwrap();
    let untaught = fixed_loss(&fresh.trainer, &fresh, &examples);
    eprintln!("loss on the lesson's pictures: taught {taught}, untaught {untaught}");
    assert!(taught < untaught, "the lesson lowers its loss: {taught} vs {untaught}");

    let (concepts, blobs) = state::save(&l, &[], 1).expect("save");
    let mut back = learner();
    state::load(&mut back, &concepts, &blobs).expect("load");
    for (a, b) in l.adapter.params().into_iter().zip(back.adapter.params()) {
        let (a, b) = (values(a), values(b));
        let diff = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff <= 1e-6 * a.iter().fold(1f32, |m, x| m.max(x.abs())), "reloaded state differs by {diff}");
    }
    assert_eq!(back.memories.len(), l.memories.len());
}

#[test]
fn orthogonal_attention_sees_identical_concepts_as_overlapping() {
    let mut l = learner();
    let device = l.trainer.device.clone();
    let e = Tensor::<2>::from_data(TensorData::new(Rng::new(3).normal_vec(32), [1, 32]), &device);
    for name in ["one", "two"] {
        let id = l.trainer.model.tokenizer.add_token(&format!("<{name}>")).unwrap();
        l.adapter.add_concept(name, &format!("<{name}>"), id, e.clone()).unwrap();
    }
    let same = values(orthogonality(&l.trainer, &l.adapter).unwrap())[0];
    l.adapter.embeddings[1] = Tensor::<2>::from_data(TensorData::new(Rng::new(4).normal_vec(32), [1, 32]), &device).require_grad();
    let loss = orthogonality(&l.trainer, &l.adapter).unwrap();
    let different = values(loss.clone())[0];
    eprintln!("OA term: identical concepts {same}, different {different}");
    assert!(same > 0.99, "identical concepts overlap fully: {same}");
    assert!(different < same);
    let grads = loss.backward();
    let g = values(l.adapter.embeddings[1].grad(&grads).expect("the new concept's embedding gets a gradient"));
    assert!(g.iter().any(|v| v.abs() > 0.0));
}

/// LoRA on every supported projection (cross- and self-attention, feed-forward): merged into the
/// weights for generation, the UNet predicts what the unmerged adapter predicts, and the state
/// saves and reloads with every site.
#[test]
fn every_target_merges_and_reloads() {
    use lifelong_diffusion::lifelong::adapter::Target;
    let device = Device::flex();
    let base = loader::load(&Folder(fixtures().join("sd1")), &device).expect("sd1");
    let trained = loader::load(&Folder(fixtures().join("sd1")), &device.clone().autodiff()).expect("sd1");
    let config = AdapterConfig { rank: 2, alpha: 4.0, targets: Target::ALL.to_vec() };
    let mut l = Learner::new(base, device.clone(), trained, config.clone()).expect("learner");
    let mut rng = Rng::new(5);
    let ad = l.trainer.device.clone();
    l.adapter.up = l.adapter.up.iter().map(|u| Tensor::from_data(TensorData::new(rng.normal_vec(u.dims().iter().product()), u.dims()), &ad).mul_scalar(0.05)).collect();
    assert!(l.adapter.sites.iter().any(|s| s.ends_with("attn1.to_q")) && l.adapter.sites.iter().any(|s| s.ends_with("ff.net.2")));

    let x = Tensor::<4>::from_data(TensorData::new(rng.normal_vec(4 * 8 * 8), [1, 4, 8, 8]), &device);
    let ids = l.trainer.ids(&["a red square"]).unwrap();
    let context = l.adapter.frozen(&device).encode_ids(&l.base.text_encoder, &ids, &device).unwrap();
    let unmerged = l.adapter.frozen(&device).apply_unet(&l.base.unet).unwrap().forward(x.clone(), 500.0, &context);
    let mut model = l.base.clone();
    l.adapter.install(&mut model).expect("install");
    let merged = model.unet.forward(x.clone(), 500.0, &context);
    let plain = l.base.unet.forward(x, 500.0, &context);
    let gap = values((merged.clone() - unmerged).abs().max())[0];
    let effect = values((merged - plain).abs().max())[0];
    eprintln!("merged vs unmerged {gap}, adapter effect {effect}");
    assert!(effect > 1e-3, "the adapter changes the prediction: {effect}");
    assert!(gap < 1e-4 * (1.0 + effect), "merged LoRA equals the unmerged one: {gap}");

    let (concepts, blobs) = state::save(&l, &[], 1).expect("save");
    let base = loader::load(&Folder(fixtures().join("sd1")), &device).expect("sd1");
    let trained = loader::load(&Folder(fixtures().join("sd1")), &device.clone().autodiff()).expect("sd1");
    let mut back = Learner::new(base, device, trained, AdapterConfig::default()).expect("learner");
    state::load(&mut back, &concepts, &blobs).expect("load");
    assert_eq!((back.adapter.config.rank, &back.adapter.config.targets), (config.rank, &config.targets));
    assert_eq!(back.adapter.sites, l.adapter.sites);
}

/// The routed method: each concept's LoRA block is its own, so a prompt without concepts gets the
/// base model, and teaching a second concept leaves what the first one's prompts predict exactly
/// as it was (the merge keeps each block's trained strength).
#[test]
fn routed_lessons_isolate_concepts_and_leave_plain_prompts_alone() {
    let mut l = learner();
    let device = Device::flex();
    let options = LessonOptions { steps: 4, lr_lora: 1e-2, ..LessonOptions::default() };
    let memory = MemoryOptions::default();
    let predict = |l: &Learner, prompt: &str| {
        let x = Tensor::<4>::from_data(TensorData::new(Rng::new(7).normal_vec(4 * 8 * 8), [1, 4, 8, 8]), &device);
        let adapter = l.adapter.routed(&l.adapter.concepts_in(prompt)).frozen(&device);
        let context = adapter.encode_ids(&l.base.text_encoder, &l.trainer.ids(&[prompt]).unwrap(), &device).unwrap();
        values(adapter.apply_unet(&l.base.unet).unwrap().forward(x, 500.0, &context))
    };
    let gap = |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    l.lesson("one", &[picture(4, 4), picture(30, 20)], Method::Routed, &options, &memory, &mut |_| {}).expect("lesson one");
    assert_eq!(l.default_method(), Method::Routed, "a routed state's lessons stay routed");
    let base_plain = {
        let mut fresh = learner();
        fresh.adapter.concepts.clear();
        predict(&fresh, "a red square")
    };
    let one_after_first = predict(&l, "a <one> on the left");
    l.lesson("two", &[picture(10, 38), picture(40, 4)], Method::Routed, &options, &memory, &mut |_| {}).expect("lesson two");
    let one_after_second = predict(&l, "a <one> on the left");
    let two = predict(&l, "a <two> on the left");
    let plain = predict(&l, "a red square");
    assert_eq!(l.adapter.routes.len(), 2);
    eprintln!("plain vs base {}, <one> before/after the second lesson {}, <two> vs <one> {}",
        gap(&plain, &base_plain), gap(&one_after_first, &one_after_second), gap(&two, &one_after_second));
    assert!(gap(&plain, &base_plain) < 1e-5, "plain prompts get the base model");
    assert!(gap(&one_after_first, &one_after_second) < 1e-5, "the second lesson leaves <one> as it was");
    assert!(gap(&two, &one_after_second) > 1e-4, "<two> draws with its own block");
    let rank = AdapterConfig::default().rank;
    assert_eq!(l.adapter.routes, vec![0..rank, rank..2 * rank], "one block of the configured rank per concept");

    // Two named concepts compose by region (one concept's prompt or a shared adapter does not).
    let both = "a <one> to the left of a <two>";
    let composer = Composer::plan(&l.adapter, &l.base, both, [8, 8]).expect("plan").expect("two routed concepts compose");
    assert!(Composer::plan(&l.adapter, &l.base, "a <one> on the left", [8, 8]).expect("plan").is_none());
    let x = Tensor::<4>::from_data(TensorData::new(Rng::new(7).normal_vec(2 * 4 * 8 * 8), [2, 4, 8, 8]), &device);
    let mut all = l.base.clone();
    state::install_for(&mut all, &l.adapter, both).expect("install");
    let context = l.adapter.frozen(&device).encode_ids(&l.base.text_encoder, &l.trainer.ids(&["", both]).unwrap(), &device).unwrap();
    let composed = values(composer.predict(x.clone(), 500.0, &context));
    let summed = values(all.unet.forward(x.clone(), 500.0, &context));
    assert_eq!(composed.len(), summed.len());
    assert!(composed.iter().all(|v| v.is_finite()));
    assert!(gap(&composed, &summed) > 1e-4, "each region draws with its own block, not the summed ones");
    let prompts: Vec<&str> = composer.clauses.iter().map(|c| c.prompt.as_str()).collect();
    assert_eq!(prompts, ["a large <one> in the center on a gray background", "a large <two> in the center on a gray background"]);
    // Deep inside the left half the prediction is <one>'s block alone on its clause, on the
    // latents rolled two columns right (its region's centre to the image's) and rolled back;
    // inside the right half <two>'s, rolled the other way.
    for (k, shift, columns) in [(0usize, 2isize, 0..2), (1, -2, 6..8)] {
        let mut own = l.base.clone();
        l.adapter.routed(&[k]).install(&mut own).expect("install");
        let ctx = l.adapter.frozen(&device).encode_ids(&l.base.text_encoder, &l.trainer.ids(&["", prompts[k]]).unwrap(), &device).unwrap();
        let alone = own.unet.forward(x.clone().roll_dim(shift, 3), 500.0, &ctx).roll_dim(-shift, 3);
        let region = |t: Tensor<4>| values(t.narrow(3, columns.start, columns.len()));
        let (a, b) = (region(composer.predict(x.clone(), 500.0, &context)), region(alone));
        assert!(gap(&a, &b) < 1e-3, "region {k} is its concept's own prediction: {}", gap(&a, &b));
    }

    // A shared-adapter lesson on a routed state would train every concept's block: refused.
    let refused = l.lesson("three", &[picture(4, 4)], Method::L2dm, &options, &memory, &mut |_| {});
    assert!(refused.unwrap_err().to_string().contains("--method routed"));

    // The store keeps the blocks: reloaded, each prompt routes as before.
    let (concepts, blobs) = state::save(&l, &[], 1).expect("save");
    assert_eq!(concepts.iter().map(|c| c.rank_rows).collect::<Vec<_>>(), vec![Some([0, rank]), Some([rank, 2 * rank])]);
    let mut back = learner();
    state::load(&mut back, &concepts, &blobs).expect("load");
    assert_eq!(back.adapter.routes, l.adapter.routes);
    assert!(gap(&predict(&back, "a <one> on the left"), &one_after_second) < 1e-5);
    assert!(gap(&predict(&back, "a red square"), &base_plain) < 1e-5);

    // A manifest whose concepts disagree (one routed, one not) or overlap is refused.
    let mut mixed = concepts.clone();
    mixed[1].rank_rows = None;
    assert!(state::load(&mut learner(), &mixed, &blobs).unwrap_err().to_string().contains("inconsistent"));
    let mut overlap = concepts.clone();
    overlap[1].rank_rows = Some([rank / 2, rank + 1]);
    assert!(state::load(&mut learner(), &overlap, &blobs).unwrap_err().to_string().contains("another concept's"));
}

#[test]
fn method_names_are_the_ones_the_store_records() {
    use Method::*;
    for m in [L2dm, L2dmNullSpace, L2dmNoTame, L2dmNoEcd, L2dmNoOa, L2dmNoNullSpace, Finetune, Ewc, LoraMerge, Routed] {
        assert_eq!(serde_json::to_value(m).unwrap(), m.name());
    }
}

/// The unconditional anchor is for adapters that every prompt sees: a routed block only ever
/// draws prompts naming its concept (guidance's empty pass included), so its lesson leaves the
/// anchor out. The anchor protects the base's empty-prompt branch, so the unprotected finetune
/// baseline leaves it out too; a protected shared-adapter lesson (here EWC's) keeps it.
#[test]
fn routed_and_finetune_lessons_leave_out_the_unconditional_anchor() {
    let lesson = |method: Method, uncond: f32| {
        let mut l = learner();
        let options = LessonOptions { steps: 2, lr_lora: 1e-2, uncond, ..LessonOptions::default() };
        let memory = MemoryOptions { keep: 1, candidates: 1, refresh: 1, steps: 1, guidance: 1.0 };
        let report = l.lesson("one", &[picture(4, 4), picture(30, 20)], method, &options, &memory, &mut |_| {}).expect("lesson");
        report.last_loss
    };
    assert_eq!(lesson(Method::Routed, 0.0), lesson(Method::Routed, 5.0), "a routed lesson ignores the anchor's weight");
    assert_eq!(lesson(Method::Finetune, 0.0), lesson(Method::Finetune, 5.0), "finetune has no protection, the anchor included");
    assert_ne!(lesson(Method::Ewc, 0.0), lesson(Method::Ewc, 5.0), "a protected shared lesson adds the anchor");
}

/// Place views on the built-in model (src/lifelong/augment.rs): each of the tee's four teaching
/// pictures gives four views, and each decodes to a tee at the place its words now name. A
/// lesson trains on them only when asked, and only for a shapes-world model.
#[test]
fn place_views_move_the_object_where_their_words_say() {
    use lifelong_diffusion::lifelong::augment::place_views;
    use lifelong_diffusion::pipeline::{image_to_rgb8, rgb8_to_image, Pipeline};
    use lifelong_diffusion::world::concepts::{best_concept, concept_by_name, identify, novel_concepts, teaching_images};
    use lifelong_diffusion::world::Place;
    let device = Device::flex();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www/models/builtin");
    let base = loader::load(&Folder(dir.clone()), &device).expect("built-in model");
    let trained = loader::load(&Folder(dir), &device.clone().autodiff()).expect("built-in model");
    let tee = concept_by_name("tee").unwrap();
    let pictures: Vec<Picture> = teaching_images(&tee, 4, 0)
        .into_iter()
        .map(|(rgb, words)| Picture { image: rgb8_to_image(&rgb, 64, &device), words: Some(words.prompt(&tee).replace(&tee.token(), "{}")) })
        .collect();
    let lesson = |world: bool, place_views: bool| {
        let mut l = Learner::new(base.clone(), device.clone(), trained.clone(), AdapterConfig::default()).expect("learner");
        if !world {
            l.base.world = None;
        }
        let options = LessonOptions { steps: 1, place_views, init_search: false, refine_steps: 0, ..LessonOptions::default() };
        l.lesson("tee", &pictures, Method::Routed, &options, &MemoryOptions::default(), &mut |_| {}).expect("lesson").last_loss
    };
    assert_ne!(lesson(true, true), lesson(true, false), "a world lesson with place views trains on more than the pictures");
    assert_eq!(lesson(false, true), lesson(false, false), "other models' lessons ignore the option");

    let l = Learner::new(base.clone(), device.clone(), trained.clone(), AdapterConfig::default()).expect("learner");
    let (examples, _) = l.examples(&tee.token(), &pictures, LessonOptions::default().refine_steps).expect("examples");
    let all = novel_concepts();
    let pipeline = Pipeline::new(base.clone(), device.clone());
    for example in &examples {
        let plain = Example { latents: Tensor::from_data(example.latents.to_data(), &device), prompt: example.prompt.clone() };
        let views = place_views(&plain, 64).expect("views");
        assert_eq!(views.len(), 4, "{}", example.prompt);
        for view in views {
            let rgb = image_to_rgb8(&pipeline.decode(view.latents)).unwrap();
            let found = identify(&rgb, &all);
            let place = Place::ALL.iter().copied().find(|p| view.prompt.contains(p.phrase())).unwrap();
            let at: Vec<[f32; 2]> = found.iter().map(|d| d.center).collect();
            assert_eq!(best_concept(&rgb, &all), Some("tee"), "{}", view.prompt);
            assert!(at.len() == 1 && place.contains(at[0]), "{}: one object, in place: {at:?}", view.prompt);
        }
    }
}

/// Caption dropout trains a share of the concept's rows on the empty prompt. With every row
/// dropped, the concept's token is in no prompt, so its embedding meets no gradient and its
/// learning rate changes nothing; with none dropped it does.
#[test]
fn prompt_dropout_trains_rows_on_the_empty_prompt() {
    let embedding = |prompt_dropout: f32, lr_token: f64| {
        let mut l = learner();
        let options = LessonOptions { steps: 2, lr_lora: 1e-2, lr_token, prompt_dropout, ..LessonOptions::default() };
        let memory = MemoryOptions { keep: 1, candidates: 1, refresh: 1, steps: 1, guidance: 1.0 };
        l.lesson("one", &[picture(4, 4), picture(30, 20)], Method::Routed, &options, &memory, &mut |_| {}).expect("lesson");
        values(l.adapter.embeddings[0].clone())
    };
    assert_eq!(embedding(1.0, 1e-2), embedding(1.0, 0.5), "every row dropped: the token is never trained");
    assert_ne!(embedding(0.0, 1e-2), embedding(0.0, 0.5), "no row dropped: the token is trained");
}

/// A lesson with a moving average ends with the average, not the last step's tensors: a decay
/// near 0 follows the last step, a large one stays nearer the start.
#[test]
fn a_lesson_with_a_moving_average_ends_with_the_average() {
    let block = |ema: f64| {
        let mut l = learner();
        let options = LessonOptions { steps: 3, lr_lora: 1e-2, ema, ..LessonOptions::default() };
        let memory = MemoryOptions { keep: 1, candidates: 1, refresh: 1, steps: 1, guidance: 1.0 };
        l.lesson("one", &[picture(4, 4), picture(30, 20)], Method::Routed, &options, &memory, &mut |_| {}).expect("lesson");
        values(l.adapter.up[0].clone())
    };
    let (last, follows, averaged) = (block(0.0), block(1e-9), block(0.9));
    let gap = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(gap(&last, &follows) < 1e-6, "a decay near 0 is the last step");
    assert!(gap(&last, &averaged) > 1e-6, "a decay of 0.9 is not");
    let norm = |a: &[f32]| a.iter().map(|x| x * x).sum::<f32>();
    assert!(norm(&averaged) < norm(&last), "the up factors start at zero, so their average is smaller");
}

/// A prompt naming a routed concept draws at `ROUTED_GUIDANCE` unless guidance is asked for; a
/// plain prompt, or a concept of a shared adapter, keeps the plain default.
#[test]
fn prompts_naming_routed_concepts_default_to_their_own_guidance() {
    let memory = MemoryOptions { keep: 1, candidates: 1, refresh: 1, steps: 1, guidance: 1.0 };
    let options = LessonOptions { steps: 1, lr_lora: 1e-2, ..LessonOptions::default() };
    let taught = |method: Method| {
        let mut l = learner();
        l.lesson("one", &[picture(4, 4)], method, &options, &memory, &mut |_| {}).expect("lesson");
        l
    };
    let routed = taught(Method::Routed);
    let token = routed.adapter.concepts[0].token.clone();
    let named = format!("a {token} on the left");
    assert_eq!(state::guidance_for(Some(&routed.adapter), &named, None, 7.5), state::ROUTED_GUIDANCE);
    assert_eq!(state::guidance_for(Some(&routed.adapter), &named, Some(9.0), 7.5), 9.0, "asked for wins");
    assert_eq!(state::guidance_for(Some(&routed.adapter), "a red circle", None, 7.5), 7.5, "no concept named");
    assert_eq!(state::guidance_for(None, &named, None, 7.5), 7.5, "no store");
    let shared = taught(Method::Finetune);
    assert_eq!(state::guidance_for(Some(&shared.adapter), &named, None, 7.5), 7.5, "a shared adapter's concept");
    const { assert!(state::ROUTED_GUIDANCE < 7.5) };
}

#[test]
fn a_routed_lesson_keeps_the_candidate_its_self_check_scores_best() {
    let mut l = learner();
    let options = LessonOptions { steps: 6, lr_lora: 1e-2, candidates: 3, ..LessonOptions::default() };
    let memory = MemoryOptions { keep: 1, candidates: 1, refresh: 1, steps: 2, guidance: 1.0 };
    // A second concept: its candidates are drawn with the first one's token already taken.
    let first = LessonOptions { steps: 2, candidates: 1, ..options.clone() };
    l.lesson("zero", &[picture(40, 40)], Method::Routed, &first, &memory, &mut |_| {}).expect("first lesson");
    let report = l.lesson("one", &[picture(4, 4), picture(30, 20)], Method::Routed, &options, &memory, &mut |_| {}).expect("lesson");
    let steps: Vec<usize> = report.scores.iter().map(|s| s.0).collect();
    assert_eq!(steps, [3, 4, 6], "candidates over the second half, the last step included");
    let best = report.scores.iter().map(|s| s.1).fold(f32::MIN, f32::max);
    let kept = report.scores.iter().rev().find(|s| s.1 == best).expect("a best score").0;
    assert_eq!(report.kept_step, kept, "the best-scoring candidate (the later one on a tie): {:?}", report.scores);
    let (_, params) = report.candidates.iter().find(|c| c.0 == kept).expect("the kept candidate");
    // The second block is the merged adapter's last `rank` rows of each projection.
    let rank = AdapterConfig::default().rank;
    let held = l.adapter.routed(&[1]);
    let n = held.down.len();
    let got: Vec<Vec<f32>> = held.down.iter().map(|d| values(d.clone().narrow(1, rank, rank))).collect();
    let want: Vec<Vec<f32>> = params[..n].iter().cloned().map(values).collect();
    assert_eq!(got, want, "the learner holds the kept candidate's state");
    let plain = LessonOptions { candidates: 1, ..options };
    let report = learner().lesson("one", &[picture(4, 4)], Method::Routed, &plain, &memory, &mut |_| {}).expect("lesson");
    assert!(report.scores.is_empty() && report.kept_step == 6, "one candidate: the last state, no self-check");
}

#[test]
fn a_concept_starts_at_the_word_that_best_explains_its_pictures() {
    let mut l = learner();
    let words = |w: &str| Picture { words: Some(w.into()), ..picture(8, 8) };
    let pictures = vec![words("red square on the left"), Picture { image: picture(30, 20).image, words: Some("red square".into()) }];
    // lr_token 0: the embedding stays where it started.
    let options = LessonOptions { steps: 2, lr_token: 0.0, ..LessonOptions::default() };
    let memory = MemoryOptions { keep: 1, candidates: 1, refresh: 1, steps: 2, guidance: 1.0 };
    let report = l.lesson("toy", &pictures, Method::Routed, &options, &memory, &mut |_| {}).expect("lesson");
    // The fixture's CLIP vocabulary is too large to search: the candidates are the user's words.
    let ranked: Vec<&str> = report.init_words.iter().map(|w| w.0.as_str()).collect();
    let distinct: std::collections::HashSet<&&str> = ranked.iter().collect();
    assert!(ranked.len() == 3 && distinct.len() == 3, "the three best, each once: {ranked:?}");
    assert!(ranked.iter().all(|w| ["left", "red", "square", "the"].contains(w)), "only the words of the prompts: {ranked:?}");
    assert!(report.init_words.windows(2).all(|p| p[0].1 <= p[1].1), "best first: {:?}", report.init_words);
    let id = l.trainer.model.tokenizer.token_id(&format!("{}</w>", ranked[0])).expect("a vocabulary word") as usize;
    let table = l.trainer.model.text_encoder.token_embedding.val();
    assert_eq!(values(l.adapter.embeddings[0].clone()), values(table.narrow(0, id, 1)), "the embedding starts at the best word's");

    let off = LessonOptions { init_search: false, ..options };
    let report = learner().lesson("toy", &pictures, Method::Routed, &off, &memory, &mut |_| {}).expect("lesson");
    assert!(report.init_words.is_empty(), "without the search: the mean embedding");
    let bare = vec![picture(8, 8), picture(30, 20)];
    let report = learner().lesson("toy", &bare, Method::Routed, &options, &memory, &mut |_| {}).expect("lesson");
    assert!(report.init_words.is_empty(), "pictures without words: no search, the mean embedding");
}

/// Squared error between `images` and what the model's decoder makes of `latents`.
fn decode_error(model: &loader::LoadedModel, latents: Tensor<4>, images: Tensor<4>) -> f32 {
    let decoded = decode_latents(model, latents);
    values((decoded - images.mul_scalar(2.0).sub_scalar(1.0)).square().mean())[0]
}

#[test]
fn refined_latents_decode_closer_to_the_pictures_than_the_encoders() {
    let l = learner();
    let model = &l.trainer.model;
    let images = Tensor::cat(vec![picture(4, 4).image, picture(30, 20).image], 0);
    let images = Tensor::<4>::from_data(images.to_data(), &l.trainer.device);
    let encoded = picture_latents(model, images.clone(), 0);
    assert!(!encoded.refined);
    let encoded = encoded.latents;
    assert_eq!(values(encoded.clone()), values(encode_latents(model, images.clone())), "0 steps: the encoder's latents");
    // The fixture's random VAE loses every picture: far more than REFINE_FROM of the pixels.
    let refined = picture_latents(model, images.clone(), 10);
    assert!(refined.refined && refined.far_share > REFINE_FROM, "{refined:?}");
    let refined = refined.latents;
    let (before, after) = (decode_error(model, encoded.clone(), images.clone()), decode_error(model, refined.clone(), images));
    eprintln!("decoder error: encoder's latents {before}, refined {after}");
    assert!(after < 0.9 * before, "refinement lowers the decoder's error: {before} -> {after}");
    let moved = values((refined - encoded).square().mean())[0];
    assert!(moved > 0.0 && moved.is_finite());
}

#[test]
fn only_pictures_the_built_in_vae_loses_are_refined() {
    use lifelong_diffusion::pipeline::rgb8_to_image;
    use lifelong_diffusion::world::concepts::{concept_by_name, teaching_images};
    let device = Device::flex().autodiff();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www/models/builtin");
    let model = loader::load(&Folder(dir), &device).expect("built-in model");
    let latents = |name: &str| {
        let concept = concept_by_name(name).unwrap();
        let images = teaching_images(&concept, 4, 0).iter().map(|(rgb, _)| rgb8_to_image(rgb, 64, &device)).collect();
        // One step: the test is of the gate, not of the refinement.
        picture_latents(&model, Tensor::cat(images, 0), 1)
    };
    let (stripes, halves, arrow) = (latents("stripes"), latents("halves"), latents("arrow"));
    eprintln!("pixels lost by the round trip: stripes {}, halves {}, arrow {}", stripes.far_share, halves.far_share, arrow.far_share);
    assert!(stripes.refined, "the VAE blurs thin stripes: refine ({})", stripes.far_share);
    // Since the decoder learnt two-colour fills (tools/codec_shapes.py), halves come back too.
    assert!(!halves.refined, "two halves come back as they went: keep the encoder's latents ({})", halves.far_share);
    assert!(!arrow.refined, "a flat red arrow comes back as it went: keep the encoder's latents ({})", arrow.far_share);
}

/// The composer's private steps (MultiDiffusion's bootstrapping, src/lifelong/compose.rs): while
/// they run, each region is its own concept's one-object drawing, whatever the other region
/// names; with the regions sharing the latents from the first step, the other concept reaches in.
#[test]
fn private_steps_draw_each_region_from_its_own_concept_alone() {
    let mut l = learner();
    let options = LessonOptions { steps: 3, lr_lora: 1e-2, ..LessonOptions::default() };
    for (name, at) in [("one", (4, 4)), ("two", (30, 20)), ("three", (10, 38))] {
        l.lesson(name, &[picture(at.0, at.1)], Method::Routed, &options, &MemoryOptions::default(), &mut |_| {}).expect("lesson");
    }
    let left_region = |other: &str, share: f32| {
        let prompt = format!("a <one> to the left of a <{other}>");
        let pipeline = l.pipeline_for(&prompt).expect("pipeline");
        let [_, h, w] = pipeline.latent_shape();
        let mut composer = Composer::plan(&l.adapter, &l.base, &prompt, [h, w]).expect("plan").expect("composes");
        composer.private_share = share;
        let options = lifelong_diffusion::pipeline::GenerateOptions { prompt, steps: 4, seed: 3, ..Default::default() };
        let mut run = pipeline.start(&options).expect("start");
        run.set_composer(Some(composer)).expect("composer");
        while run.step().expect("step").is_some() {}
        // The leftmost eighth of the columns: deep inside the left region, where the other
        // region's weight is below 1e-4 (compose::FEATHER).
        values(run.finish_latents().narrow(3, 0, (w / 8).max(1)))
    };
    let gap = |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    let (private_two, private_three) = (left_region("two", 1.0), left_region("three", 1.0));
    let (shared_two, shared_three) = (left_region("two", 0.0), left_region("three", 0.0));
    eprintln!("left region, <two> vs <three> on the right: private {}, shared {}", gap(&private_two, &private_three), gap(&shared_two, &shared_three));
    assert!(private_two.iter().all(|v| v.is_finite()));
    assert!(gap(&private_two, &private_three) < 1e-3, "private steps: the left region is <one>'s alone");
    assert!(gap(&shared_two, &shared_three) > 1e-3, "shared latents: the right region's concept reaches the left");
}

/// A lesson keeps its pictures' looks (a silhouette and a colour each) with the concept, the store
/// carries them, and a composition keeps, per region, the drawing that matches them best
/// (`Composer::tries`); a store from before looks were kept composes as before, one drawing each.
#[test]
fn a_composition_keeps_each_concepts_drawing_closest_to_its_looks() {
    use lifelong_diffusion::lifelong::selfcheck::signature;
    use lifelong_diffusion::pipeline::image_to_rgb8;
    let mut l = learner();
    let options = LessonOptions { steps: 2, lr_lora: 1e-2, ..LessonOptions::default() };
    let (one, two) = (picture(4, 4), picture(30, 20));
    l.lesson("one", &[one.clone(), picture(40, 40)], Method::Routed, &options, &MemoryOptions::default(), &mut |_| {}).expect("lesson one");
    l.lesson("two", std::slice::from_ref(&two), Method::Routed, &options, &MemoryOptions::default(), &mut |_| {}).expect("lesson two");
    let looks: Vec<usize> = l.adapter.concepts.iter().map(|c| c.looks.len()).collect();
    assert_eq!(looks, [2, 1], "one look per picture");

    let (concepts, blobs) = state::save(&l, &[], 1).expect("save");
    let mut back = learner();
    state::load(&mut back, &concepts, &blobs).expect("load");
    assert_eq!(back.adapter.concepts, l.adapter.concepts, "the looks come back from the store");

    let prompt = "a <one> to the left of a <two>";
    let [_, h, w] = l.pipeline_for(prompt).expect("pipeline").latent_shape();
    let mut composer = Composer::plan(&back.adapter, &back.base, prompt, [h, w]).expect("plan").expect("composes");
    composer.tries = 3;
    let total = 4;
    let sampler = || Ok(lifelong_diffusion::scheduler::create(&back.base.scheduler_config, None, total)?);
    // The first drawing of each region starts from zeros, the others from constants 10, 20
    // (region one) and 30, 40 (region two): constant latents stay constant in any region's view.
    let mut next = 0.0;
    let mut noise = || {
        next += 10.0;
        Tensor::<4>::full([1, 4, h, w], next, &Device::flex())
    };
    let zeros = Tensor::<4>::zeros([1, 4, h, w], &Device::flex());
    let mut views = composer.private_views(&zeros, total, &sampler, &mut noise).expect("views").expect("private steps");
    assert!(composer.to_choose(&views, total - 1).is_none(), "nothing to choose before the last step");
    let drawings = composer.to_choose(&views, total).expect("three drawings a region");
    assert_eq!(drawings.iter().map(|d| d.dims()[0]).collect::<Vec<_>>(), [3, 3], "one batch of three drawings a region");
    let rgb = |p: &lifelong_diffusion::lifelong::learner::Picture| image_to_rgb8(&p.image).expect("rgb");
    let blank = vec![25u8; 3 * 64 * 64];
    assert!(signature(&blank, 64, 64).is_none());
    // Region one's third drawing shows its lesson picture, region two's first shows its own.
    let shown = [blank.clone(), blank.clone(), rgb(&one), rgb(&two), blank.clone(), blank];
    let image = values(composer.choose(&mut views, &shown, 64, 64));
    let at = |x: usize| image[(h / 2) * w + x];
    eprintln!("chosen image, middle row: left {} right {}", at(0), at(w - 1));
    assert!((at(0) - 20.0).abs() < 1e-3, "region one keeps its third drawing: {}", at(0));
    assert!(at(w - 1).abs() < 1e-3, "region two keeps its first drawing: {}", at(w - 1));
    assert!(composer.to_choose(&views, total).is_none(), "chosen once");

    // A store written before looks were kept: no looks, one drawing a region.
    let old = lifelong_diffusion::lifelong::store::StateBlobs { adapter: blobs.adapter.iter().filter(|t| !t.name.ends_with(".looks")).cloned().collect(), memories: blobs.memories.clone() };
    let mut older = learner();
    state::load(&mut older, &concepts, &old).expect("load an older store");
    assert!(older.adapter.concepts.iter().all(|c| c.looks.is_empty()));
    let composer = Composer::plan(&older.adapter, &older.base, prompt, [h, w]).expect("plan").expect("composes");
    let views = composer.private_views(&zeros, total, &sampler, &mut noise).expect("views").expect("private steps");
    assert!(composer.to_choose(&views, total).is_none(), "nothing to choose without looks");

    // A region's drawings are one batch; each is the drawing it would be in a smaller batch
    // (region one's first two and region two's first, with two tries against three).
    let pipeline = l.pipeline_for(prompt).expect("pipeline");
    let options = lifelong_diffusion::pipeline::GenerateOptions { prompt: prompt.into(), steps: 3, seed: 5, ..Default::default() };
    let drawn = |tries: usize| {
        let mut composer = Composer::plan(&l.adapter, &l.base, prompt, [h, w]).expect("plan").expect("composes");
        composer.tries = tries;
        let mut run = pipeline.start(&options).expect("start");
        run.set_composer(Some(composer)).expect("composer");
        while run.step().expect("step").is_some() {}
        run.to_choose().expect("drawings to choose").into_iter().map(values).collect::<Vec<_>>()
    };
    let gap = |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    let (three, two) = (drawn(3), drawn(2));
    assert_eq!((three.len(), two.len()), (6, 4), "every drawing of each region, decoded");
    for (a, b) in [(0, 0), (1, 1), (3, 2)] {
        assert!(gap(&three[a], &two[b]) < 1e-4, "drawing {a} of three tries is drawing {b} of two: {}", gap(&three[a], &two[b]));
    }
    assert!(gap(&three[0], &three[1]) > 1e-3, "different noise, different drawings");

    // And a whole generation with the choice runs to a finite image.
    let mut composer = Composer::plan(&l.adapter, &l.base, prompt, [h, w]).expect("plan");
    composer.as_mut().expect("composes").tries = 2;
    let image = pipeline.generate_composed(&options, None, composer, &mut |_| {}).expect("generate").image;
    assert!(values(image).iter().all(|v| v.is_finite()));
}
