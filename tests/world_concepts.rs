//! The lifelong evaluation's novel concepts (issue 5): the identification scorer on rendered ground
//! truth (every concept, places, sizes, backgrounds, seeds), on regular world renders, on
//! two-concept and concept-plus-object scenes, and on blank and junk images. Run with
//! `--nocapture` to see the measured accuracies.

use lifelong_diffusion::world::concepts::*;
use lifelong_diffusion::world::*;

const SEEDS: u64 = 3;

fn rate(right: usize, total: usize) -> f32 {
    right as f32 / total.max(1) as f32
}

#[test]
fn every_concept_is_identified_on_ground_truth() {
    let concepts = novel_concepts();
    let (mut right, mut total) = (0, 0);
    let mut misses: Vec<String> = Vec::new();
    for concept in &concepts {
        let (mut ok, mut n) = (0, 0);
        for &background in &backgrounds_for(concept) {
            for &place in Place::ALL {
                for &size in Size::ALL {
                    for seed in 0..SEEDS {
                        let image = render_concept(concept, place, size, background, seed);
                        let found = identify(&image, &concepts);
                        let hit = found.len() == 1 && found[0].concept() == Some(concept.name);
                        if !hit && misses.len() < 12 {
                            misses.push(format!("{} {place} {size} {background} seed {seed}: {:?}", concept.name, found.iter().map(|d| (d.identity, d.iou)).collect::<Vec<_>>()));
                        }
                        (ok, n) = (ok + usize::from(hit), n + 1);
                    }
                }
            }
        }
        println!("concept {:<10} identified {ok}/{n} ({:.1}%)", concept.name, 100.0 * rate(ok, n));
        (right, total) = (right + ok, total + n);
    }
    let accuracy = rate(right, total);
    println!("ground-truth concept identification: {right}/{total} = {:.2}%", 100.0 * accuracy);
    assert!(accuracy >= 0.98, "accuracy {accuracy}; misses: {misses:#?}");
}

#[test]
fn regular_world_renders_show_no_concept() {
    let concepts = novel_concepts();
    let (mut clean, mut total, mut shape_right, mut objects) = (0, 0, 0, 0);
    let mut misses: Vec<String> = Vec::new();
    for split in [Split::Train, Split::HeldOut] {
        for i in 0..300 {
            let scene = scene_at(5, i, split);
            let found = identify(&render(&scene), &concepts);
            let none = found.iter().all(|d| d.concept().is_none());
            if !none && misses.len() < 12 {
                misses.push(format!("{:?}: {:?}", scene.objects, found.iter().map(|d| (d.identity, d.iou)).collect::<Vec<_>>()));
            }
            (clean, total) = (clean + usize::from(none), total + 1);
            for o in &scene.objects {
                objects += 1;
                shape_right += usize::from(found.iter().any(|d| d.identity == Identity::World(o.shape)));
            }
        }
    }
    let accuracy = rate(clean, total);
    println!("world renders read as no concept: {clean}/{total} = {:.2}%", 100.0 * accuracy);
    println!("world objects read as their world shape: {shape_right}/{objects} = {:.2}%", 100.0 * rate(shape_right, objects));
    assert!(accuracy >= 0.98, "accuracy {accuracy}; misses: {misses:#?}");
}

#[test]
fn two_concept_scenes_show_both_apart() {
    let concepts = novel_concepts();
    let (mut right, mut total) = (0, 0);
    let mut misses: Vec<String> = Vec::new();
    for (k, a) in concepts.iter().enumerate() {
        for (m, b) in concepts.iter().enumerate().filter(|&(m, _)| m != k) {
            for relation in [Relation::LeftOf, Relation::RightOf] {
                let seed = (k * 100 + m) as u64 * 2 + u64::from(relation == Relation::RightOf);
                let backgrounds: Vec<Background> = backgrounds_for(a).into_iter().filter(|bg| backgrounds_for(b).contains(bg)).collect();
                let background = backgrounds[seed as usize % backgrounds.len()];
                let image = render_scene(&pair_scene(Subject::Concept(*a), Subject::Concept(*b), relation, background, seed));
                let hit = two_concepts_present_apart(&image, a, b) && two_concepts_present_apart(&image, b, a);
                if !hit && misses.len() < 12 {
                    misses.push(format!("{} {relation:?} {} on {background}: {:?}", a.name, b.name, identify(&image, &concepts).iter().map(|d| (d.identity, d.iou)).collect::<Vec<_>>()));
                }
                (right, total) = (right + usize::from(hit), total + 1);
            }
        }
    }
    let accuracy = rate(right, total);
    println!("two-concept scenes, both present and apart: {right}/{total} = {:.2}%", 100.0 * accuracy);
    assert!(accuracy >= 0.98, "accuracy {accuracy}; misses: {misses:#?}");
}

#[test]
fn a_concept_beside_a_world_object_reads_as_both() {
    let concepts = novel_concepts();
    let (mut right, mut total) = (0, 0);
    for (k, concept) in concepts.iter().enumerate() {
        for (m, &shape) in Shape::ALL.iter().enumerate() {
            let color = Color::ALL[(k + m) % Color::ALL.len()];
            let bgs: Vec<Background> = backgrounds_for(concept).into_iter().filter(|&bg| vocab::compatible(color, bg)).collect();
            let seed = (k * 10 + m) as u64;
            let scene = pair_scene(Subject::Concept(*concept), Subject::World(color, shape), Relation::ALL[m % 4], bgs[m % bgs.len()], seed);
            let found = identify(&render_scene(&scene), &concepts);
            let hit = found.len() == 2 && found.iter().any(|d| d.concept() == Some(concept.name)) && found.iter().any(|d| d.identity == Identity::World(shape));
            (right, total) = (right + usize::from(hit), total + 1);
        }
    }
    let accuracy = rate(right, total);
    println!("concept + world object scenes read as both: {right}/{total} = {:.2}%", 100.0 * accuracy);
    assert!(accuracy >= 0.98, "accuracy {accuracy}");
}

#[test]
fn blank_and_junk_images_give_nothing_and_never_panic() {
    let concepts = novel_concepts();
    for &background in Background::ALL {
        let blank: Vec<u8> = (0..IMAGE_BYTES).map(|i| background.rgb()[i % 3]).collect();
        assert!(identify(&blank, &concepts).is_empty(), "{background}");
        assert_eq!(best_concept(&blank, &concepts), None);
    }
    assert!(identify(&[], &concepts).is_empty());
    assert!(identify(&[7u8; 100], &concepts).is_empty());
    let mut rng = lifelong_diffusion::rng::Rng::new(3);
    for _ in 0..20 {
        let noise: Vec<u8> = (0..IMAGE_BYTES).map(|_| (rng.next_u32() % 256) as u8).collect();
        let _ = identify(&noise, &concepts);
    }
    let all_concept_colour: Vec<u8> = (0..IMAGE_BYTES).map(|i| Color::Yellow.rgb()[i % 3]).collect();
    let _ = identify(&all_concept_colour, &concepts);
    let (a, b) = (&concepts[0], &concepts[1]);
    let one = render_concept(a, Place::Left, Size::Large, Background::Night, 1);
    assert!(!two_concepts_present_apart(&one, a, b), "one concept alone is not two");
}

/// Gaussian blur (edge-clamped, separable) then Gaussian noise, as a generative model's images are
/// soft and grainy.
fn spoil(image: &[u8], sigma: f32, noise: f32, rng: &mut lifelong_diffusion::rng::Rng) -> Vec<u8> {
    let radius = (3.0 * sigma).ceil() as i32;
    let kernel: Vec<f32> = (-radius..=radius).map(|k| (-((k * k) as f32) / (2.0 * sigma * sigma)).exp()).collect();
    let norm: f32 = kernel.iter().sum();
    let at = |x: i32| x.clamp(0, SIZE as i32 - 1) as usize;
    let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
        (0..IMAGE_BYTES)
            .map(|i| {
                let (r, c, ch) = ((i / 3) / SIZE, (i / 3) % SIZE, i % 3);
                let tap = |o: i32| if horizontal { r * SIZE + at(c as i32 + o) } else { at(r as i32 + o) * SIZE + c };
                kernel.iter().enumerate().map(|(k, w)| w * src[tap(k as i32 - radius) * 3 + ch]).sum::<f32>() / norm
            })
            .collect()
    };
    let values: Vec<f32> = image.iter().map(|&v| f32::from(v)).collect();
    pass(&pass(&values, true), false).iter().map(|v| (v + noise * rng.normal()).round().clamp(0.0, 255.0) as u8).collect()
}

#[test]
fn concepts_are_identified_on_blurred_noisy_renders() {
    let concepts = novel_concepts();
    let mut rng = lifelong_diffusion::rng::Rng::new(17);
    let (mut right, mut total, mut world_clean, mut world_total) = (0, 0, 0, 0);
    let mut misses: Vec<String> = Vec::new();
    for (k, concept) in concepts.iter().enumerate() {
        for (j, &place) in Place::ALL.iter().enumerate() {
            for &size in Size::ALL {
                let bgs = backgrounds_for(concept);
                let background = bgs[(k + j) % bgs.len()];
                let image = spoil(&render_concept(concept, place, size, background, (k * 10 + j) as u64), 1.0, 8.0, &mut rng);
                let hit = best_concept(&image, &concepts) == Some(concept.name);
                if !hit && misses.len() < 12 {
                    misses.push(format!("{} {place} {size} {background}: {:?}", concept.name, identify(&image, &concepts).iter().map(|d| (d.identity, d.iou)).collect::<Vec<_>>()));
                }
                (right, total) = (right + usize::from(hit), total + 1);
            }
        }
    }
    for i in 0..200 {
        let image = spoil(&render(&scene_at(8, i, Split::Train)), 1.0, 8.0, &mut rng);
        world_clean += usize::from(identify(&image, &concepts).iter().all(|d| d.concept().is_none()));
        world_total += 1;
    }
    let (accuracy, clean) = (rate(right, total), rate(world_clean, world_total));
    println!("blur 1px + noise 8/255: concepts identified {right}/{total} = {:.2}%, world renders read as no concept {world_clean}/{world_total} = {:.2}%", 100.0 * accuracy, 100.0 * clean);
    if !misses.is_empty() {
        println!("misses: {misses:#?}");
    }
    assert!(accuracy >= 0.9 && clean >= 0.95, "accuracy {accuracy}, world {clean}; misses: {misses:#?}");
}
