//! The shapes world: determinism, geometry, layout rules, held-out discipline, captions and their
//! parser, the scorer's accuracy on clean and degraded renders, and the dataset export round trip.

use std::collections::HashSet;

use lifelong_diffusion::rng::Rng;
use lifelong_diffusion::world::caption::{all_captions, prompt_at, CaptionStyle};
use lifelong_diffusion::world::dataset::{export, record_at, ExportOptions, Record};
use lifelong_diffusion::world::heldout::{is_held_out_combination, is_held_out_pair, seen_pairs, Pair};
use lifelong_diffusion::world::render::{pixel_coverage, Placement, IMAGE_BYTES};
use lifelong_diffusion::world::shapes::{half_height, Outline};
use lifelong_diffusion::world::vocab::compatible;
use lifelong_diffusion::world::*;

fn pair_of(o: &Object) -> Pair {
    Pair { color: o.color, shape: o.shape }
}

fn scenes(seed: u64, n: u64, split: Split) -> Vec<Scene> {
    (0..n).map(|i| scene_at(seed, i, split)).collect()
}

#[test]
fn same_seed_same_scenes_images_and_captions() {
    for i in 0..200 {
        let (a, b) = (record_at(11, i, Split::Train), record_at(11, i, Split::Train));
        assert_eq!(a, b);
        assert_eq!(render(&a.scene), render(&b.scene));
    }
    let differ = (0..200).filter(|&i| scene_at(11, i, Split::Train) != scene_at(12, i, Split::Train)).count();
    assert_eq!(differ, 200);
}

/// Covered area of a shape drawn in a 28 px box at the canvas centre.
fn area(shape: Shape) -> f32 {
    let outline = Outline::new(shape);
    let placement = Placement { center: [32.0, 32.0], scale: [14.0, 14.0] };
    let mut total = 0.0;
    for row in 0..SIZE {
        for col in 0..SIZE {
            total += pixel_coverage(&outline, &placement, col, row);
        }
    }
    total
}

/// Coverage of the pixel centred `(dx, dy)` from the centre of a shape in a 28 px box.
fn covered(shape: Shape, dx: f32, dy: f32) -> f32 {
    let placement = Placement { center: [32.5, 32.5], scale: [14.0, 14.0] };
    let (col, row) = ((32.5 + dx).floor() as usize, (32.5 + dy).floor() as usize);
    pixel_coverage(&Outline::new(shape), &placement, col, row)
}

#[test]
fn shapes_have_their_exact_areas_and_features() {
    let h: f32 = 14.0;
    let pi = std::f32::consts::PI;
    // Star: ten triangles from the centre, each with sides R and r meeting at 36 degrees.
    let r_out = 1.0 / 18f32.to_radians().cos();
    let star = 10.0 * 0.5 * r_out * (0.42 * r_out) * 36f32.to_radians().sin();
    // Heart: a turned square of half diagonal a, plus two half discs of radius a / sqrt 2.
    let a = 2.0 / (1.0 + 2f32.sqrt());
    let heart = 2.0 * a * a + pi * a * a / 2.0;
    let expected = [
        (Shape::Circle, pi),
        (Shape::Square, 4.0),
        (Shape::Triangle, 2.0),
        (Shape::Star, star),
        (Shape::Heart, heart),
        (Shape::Ring, pi * (1.0 - 0.25)),
        (Shape::Cross, 2.0 * 2.0 * (2.0 / 3.0) - (2.0 / 3.0f32).powi(2)),
        (Shape::Diamond, 2.0),
    ];
    for (shape, unit_area) in expected {
        let (got, want) = (area(shape), unit_area * h * h);
        // 4 x 4 supersampling quantises edge pixels to sixteenths, biased where edges sit at thirds.
        assert!((got - want).abs() / want < 0.02, "{shape}: area {got} vs {want}");
    }
    // Features a wrong geometry would lack.
    assert_eq!(covered(Shape::Ring, 0.0, 0.0), 0.0, "ring has a hole");
    assert_eq!(covered(Shape::Ring, 10.0, 0.0), 1.0);
    assert_eq!(covered(Shape::Cross, 9.0, 9.0), 0.0, "cross corners are empty");
    assert_eq!(covered(Shape::Cross, 12.0, 0.0), 1.0, "cross arm reaches out");
    assert_eq!(covered(Shape::Cross, 0.0, -12.0), 1.0);
    assert_eq!(covered(Shape::Triangle, -10.0, -10.0), 0.0, "triangle points up");
    assert_eq!(covered(Shape::Triangle, -10.0, 10.0), 1.0);
    assert_eq!(covered(Shape::Diamond, 10.0, 10.0), 0.0, "diamond corners are empty");
    assert_eq!(covered(Shape::Diamond, 12.0, 0.0), 1.0);
    assert_eq!(covered(Shape::Star, 0.0, -10.0), 1.0, "star points up");
    assert_eq!(covered(Shape::Star, -5.0, -9.0), 0.0, "between the points");
    assert_eq!(covered(Shape::Star, 0.0, 11.5), 0.0, "star has a notch at the bottom");
    assert_eq!(covered(Shape::Heart, 0.0, -12.0), 0.0, "heart has a notch at the top");
    assert_eq!(covered(Shape::Heart, -6.0, -8.0), 1.0);
    assert_eq!(covered(Shape::Heart, 0.0, 11.0), 1.0, "heart has its tip at the bottom");
    assert_eq!(covered(Shape::Square, 13.0, 13.0), 1.0);
    assert_eq!(covered(Shape::Circle, 11.0, 11.0), 0.0);
    for &shape in Shape::ALL {
        assert!(half_height(shape) <= 1.0 && half_height(shape) > 0.9, "{shape} fits its box");
    }
}

/// Pixel box of an object (x0, x1, y0, y1).
fn bounds(o: &Object) -> [f32; 4] {
    let (hx, hy) = (o.extent / 2.0, o.extent / 2.0 * half_height(o.shape));
    [o.center[0] - hx, o.center[0] + hx, o.center[1] - hy, o.center[1] + hy]
}

#[test]
fn places_and_relations_hold_unambiguously_and_objects_fit() {
    for scene in scenes(3, 5000, Split::Train).iter().chain(&scenes(4, 1000, Split::HeldOut)) {
        for o in &scene.objects {
            let [x0, x1, y0, y1] = bounds(o);
            assert!(x0 >= 0.0 && y0 >= 0.0 && x1 <= 64.0 && y1 <= 64.0, "{o:?} leaves the canvas");
            assert!(compatible(o.color, scene.background), "{scene:?}");
            let want = if o.size == Size::Small { 12.5..=15.5 } else { 26.0..=29.0 };
            assert!(want.contains(&o.extent));
        }
        match scene.layout {
            Layout::Single { place } => {
                let place = place.expect("scenes always have a place");
                let holds: Vec<Place> = Place::ALL.iter().copied().filter(|p| p.contains(scene.objects[0].center)).collect();
                assert_eq!(holds, vec![place], "{scene:?}");
            }
            Layout::Pair { relation } => {
                let (a, b) = (&scene.objects[0], &scene.objects[1]);
                let holds: Vec<Relation> = Relation::ALL.iter().copied().filter(|r| r.holds(a.center, b.center)).collect();
                assert_eq!(holds, vec![relation], "{scene:?}");
                assert_ne!(pair_of(a), pair_of(b));
            }
            Layout::Plural => {
                let (a, b) = (&scene.objects[0], &scene.objects[1]);
                assert_eq!((a.color, a.shape, a.size), (b.color, b.shape, b.size));
            }
        }
        if let [a, b] = scene.objects.as_slice() {
            let (p, q) = (bounds(a), bounds(b));
            let gap = (q[0] - p[1]).max(p[0] - q[1]).max(q[2] - p[3]).max(p[2] - q[3]);
            assert!(gap >= 1.99, "objects too close ({gap}): {scene:?}");
        }
    }
}

#[test]
fn training_never_shows_held_out_and_held_out_always_does() {
    let mut seen = HashSet::new();
    let mut kinds = HashSet::new();
    for scene in scenes(5, 30000, Split::Train) {
        for o in &scene.objects {
            assert!(!is_held_out_pair(pair_of(o)), "{scene:?}");
            seen.insert(pair_of(o));
        }
        if let [a, b] = scene.objects.as_slice() {
            assert!(!is_held_out_combination(pair_of(a), pair_of(b)), "{scene:?}");
        }
        assert!(novelty(&scene.spec()).seen());
        kinds.insert(scene.layout.kind());
    }
    assert_eq!(seen.len(), seen_pairs().len(), "training shows every seen pair");
    assert_eq!(kinds.len(), 3);
    let (mut held, mut combinations) = (HashSet::new(), HashSet::new());
    for scene in scenes(6, 3000, Split::HeldOut) {
        let n = novelty(&scene.spec());
        assert!(!n.seen(), "{scene:?}");
        held.extend(scene.objects.iter().map(pair_of).filter(|&p| is_held_out_pair(p)));
        if n.combination {
            let mut key: Vec<(Color, Shape)> = scene.objects.iter().map(|o| (o.color, o.shape)).collect();
            key.sort();
            combinations.insert(key);
        }
    }
    assert_eq!(held.len(), HELD_OUT_PAIRS.len(), "every held-out pair is asked for");
    assert_eq!(combinations.len(), HELD_OUT_COMBINATIONS.len(), "every held-out combination is asked for");
    for kind in [SceneKind::Single, SceneKind::Pair, SceneKind::Plural] {
        for i in 0..300 {
            let p = prompt_at(7, i, Split::HeldOut, kind);
            assert!(!novelty(&p.spec).seen() && p.spec.layout.kind() == kind);
            assert_eq!(canonical(parse(&p.caption).unwrap()), canonical(p.spec.clone()), "{}", p.caption);
            assert!(novelty(&prompt_at(7, i, Split::Train, kind).spec).seen());
        }
    }
}

#[test]
fn one_shape_pairs_name_one_seen_shape_in_two_colours_and_parse_back() {
    let mut styles = HashSet::new();
    let pairs: Vec<_> = one_shape_pairs(77).take(64).collect();
    assert_eq!(pairs, one_shape_pairs(77).take(64).collect::<Vec<_>>(), "deterministic");
    for p in &pairs {
        let [a, b] = [p.spec.objects[0], p.spec.objects[1]];
        assert!(a.shape == b.shape && a.color != b.color, "{}", p.caption);
        assert!(matches!(p.spec.layout, Layout::Pair { .. }), "{}", p.caption);
        assert!(novelty(&p.spec).seen(), "only seen colour-shape pairs: {}", p.caption);
        assert_eq!(canonical(parse(&p.caption).unwrap()), canonical(p.spec.clone()), "{}", p.caption);
        styles.insert(p.caption.starts_with("a ") && p.caption.contains(" background with "));
    }
    assert_eq!(styles.len(), 2, "both background orders are asked");
    assert_ne!(pairs[0], pairs[1]);
}

/// States pairs from their first object's side ("A left of B", never "B right of A").
fn canonical(mut spec: Spec) -> Spec {
    if let Layout::Pair { relation: r @ (Relation::RightOf | Relation::Below) } = spec.layout {
        spec.layout = Layout::Pair { relation: r.converse() };
        spec.objects.swap(0, 1);
    }
    spec
}

#[test]
fn captions_use_the_vocabulary_and_parse_back() {
    let vocabulary: HashSet<&str> = vocabulary().into_iter().collect();
    let mut used = HashSet::new();
    let mut rng = Rng::new(1);
    for scene in scenes(8, 1500, Split::Train).iter().chain(&scenes(9, 300, Split::HeldOut)) {
        let all = all_captions(scene);
        assert!(all.len() >= 4, "{all:?}");
        assert_eq!(all[0], describe(&scene.spec(), CaptionStyle::default()));
        let some = captions(scene, &mut rng, 4);
        assert_eq!(some.len(), 4);
        assert_eq!(some.iter().collect::<HashSet<_>>().len(), 4);
        for caption in &all {
            for word in caption.split(' ') {
                assert!(vocabulary.contains(word), "`{word}` of `{caption}` is not in the vocabulary");
                used.insert(word.to_string());
            }
            let spec = parse(caption).unwrap_or_else(|e| panic!("{caption}: {e}"));
            assert!(states_truth(&canonical(spec), &canonical(scene.spec())), "{caption} vs {scene:?}");
        }
    }
    assert_eq!(used.len(), vocabulary.len(), "every vocabulary word occurs");
    for example in ["a red circle", "a small blue star on the left", "a large green heart at the top on a night background", "a yellow triangle to the left of a purple ring", "two pink squares", "an orange ring"] {
        assert_eq!(describe(&parse(example).unwrap(), CaptionStyle::default()), example);
    }
    for bad in ["", "a blue", "two red circle", "a red circle on the left on the right", "hello", "a red circle above", "a red circle on a blue background", "two red circles on the left"] {
        assert!(parse(bad).is_err(), "`{bad}` should not parse");
    }
}

/// Whether `partial` states nothing but what `full` states.
fn states_truth(partial: &Spec, full: &Spec) -> bool {
    let layout_ok = match (partial.layout, full.layout) {
        (Layout::Single { place: None }, Layout::Single { .. }) => true,
        (a, b) => a == b,
    };
    let objects_ok = partial.objects.len() == full.objects.len()
        && partial.objects.iter().zip(&full.objects).all(|(p, f)| p.color == f.color && p.shape == f.shape && p.size.is_none_or(|s| Some(s) == f.size));
    layout_ok && objects_ok && partial.background.is_none_or(|b| Some(b) == full.background)
}

/// How a test spoils a render, roughly as a generative model might.
#[derive(Clone, Copy)]
struct Spoil {
    /// Gaussian blur sigma in pixels (0 = none).
    blur: f32,
    /// Gaussian noise sigma in 0..255 units.
    noise: f32,
    /// Per-image colour drift: each channel scaled by 1 +- `drift`/100 and offset by +- `drift`/2.
    drift: f32,
}

fn blur(image: &[u8], sigma: f32) -> Vec<f32> {
    let values: Vec<f32> = image.iter().map(|&v| f32::from(v)).collect();
    if sigma <= 0.0 {
        return values;
    }
    let radius = (3.0 * sigma).ceil() as i32;
    let kernel: Vec<f32> = (-radius..=radius).map(|k| (-((k * k) as f32) / (2.0 * sigma * sigma)).exp()).collect();
    let norm: f32 = kernel.iter().sum();
    let at = |x: i32| x.clamp(0, SIZE as i32 - 1) as usize;
    let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
        let mut dst = vec![0.0f32; IMAGE_BYTES];
        for r in 0..SIZE {
            for c in 0..SIZE {
                for ch in 0..3 {
                    let mut v = 0.0;
                    for (k, w) in kernel.iter().enumerate() {
                        let o = k as i32 - radius;
                        let (rr, cc) = if horizontal { (r, at(c as i32 + o)) } else { (at(r as i32 + o), c) };
                        v += w * src[(rr * SIZE + cc) * 3 + ch];
                    }
                    dst[(r * SIZE + c) * 3 + ch] = v / norm;
                }
            }
        }
        dst
    };
    pass(&pass(&values, true), false)
}

fn spoil(image: &[u8], rng: &mut Rng, how: Spoil) -> Vec<u8> {
    let gain: Vec<f32> = (0..3).map(|_| 1.0 + how.drift / 100.0 * (2.0 * rng.uniform() as f32 - 1.0)).collect();
    let offset: Vec<f32> = (0..3).map(|_| how.drift / 2.0 * (2.0 * rng.uniform() as f32 - 1.0)).collect();
    blur(image, how.blur)
        .iter()
        .enumerate()
        .map(|(i, v)| (v * gain[i % 3] + offset[i % 3] + how.noise * rng.normal()).round().clamp(0.0, 255.0) as u8)
        .collect()
}

/// Share of scenes right per attribute (`Verdict::ATTRIBUTES` order), a fifth of them held out.
fn accuracy(n: u64, how: Option<Spoil>) -> [f32; 8] {
    let mut tally = Tally::default();
    let mut rng = Rng::new(99);
    for i in 0..n {
        let scene = scene_at(2024, i, if i % 5 == 4 { Split::HeldOut } else { Split::Train });
        let mut image = render(&scene);
        if let Some(how) = how {
            image = spoil(&image, &mut rng, how);
        }
        tally.add(&check(&image, &scene.spec()).unwrap());
    }
    tally.rates().map(|r| r.unwrap_or(0.0))
}

fn table(acc: [f32; 8]) -> String {
    Verdict::ATTRIBUTES.iter().zip(acc).map(|(a, v)| format!("{a} {:.2}%", v * 100.0)).collect::<Vec<_>>().join(", ")
}

#[test]
fn scorer_reads_clean_renders() {
    let acc = accuracy(1200, None);
    eprintln!("clean: {}", table(acc));
    for (name, value) in Verdict::ATTRIBUTES.iter().zip(acc) {
        assert!(value >= 0.99, "{name}: {value}");
    }
}

#[test]
fn scorer_reads_blurred_noisy_renders() {
    let acc = accuracy(1200, Some(Spoil { blur: 1.0, noise: 8.0, drift: 0.0 }));
    eprintln!("blur 1px + noise 8/255: {}", table(acc));
    for (name, value) in Verdict::ATTRIBUTES.iter().zip(acc) {
        assert!(value >= 0.99, "{name}: {value}");
    }
}

#[test]
fn scorer_judges_every_true_caption_true_and_wrong_ones_false() {
    for scene in scenes(21, 150, Split::Train) {
        let detection = detect(&render(&scene)).unwrap();
        for caption in all_captions(&scene) {
            let v = judge(&parse(&caption).unwrap(), &detection);
            assert!(v.all, "{caption}: {v:?} {detection:?}");
        }
        // A colour the scene does not show, so no pairing of objects can make it right.
        let absent = Color::ALL.iter().copied().find(|c| scene.objects.iter().all(|o| o.color != *c)).unwrap();
        let mut wrong = scene.spec();
        wrong.objects.iter_mut().for_each(|o| o.color = absent);
        let v = judge(&wrong, &detection);
        assert!(!v.color && !v.all);
    }
    assert!(detect(&[0u8; 10]).is_err());
    let scene = scene_at(1, 0, Split::Train);
    let as_float: Vec<f32> = render(&scene).iter().map(|&v| f32::from(v) / 255.0).collect();
    assert!(judge(&scene.spec(), &detect_f32(&as_float).unwrap()).all);
    let blank = detect(&vec![180u8; IMAGE_BYTES]).unwrap();
    assert_eq!((blank.background, blank.objects.len()), (Some(Background::Gray), 0));
}

#[test]
fn export_round_trip() {
    let dir = std::env::temp_dir().join(format!("ld-world-export-{}", std::process::id()));
    let options = ExportOptions { seed: 5, n: 37, split: Split::HeldOut };
    let mut progress = Vec::new();
    export(&dir, &options, &mut |done| progress.push(done)).unwrap();
    assert_eq!(progress.last(), Some(&37));
    let images = std::fs::read(dir.join("images.u8")).unwrap();
    assert_eq!(images.len(), 37 * 64 * 64 * 3);
    let lines: Vec<String> = std::fs::read_to_string(dir.join("scenes.jsonl")).unwrap().lines().map(String::from).collect();
    assert_eq!(lines.len(), 37);
    for (i, line) in lines.iter().enumerate() {
        let record: Record = serde_json::from_str(line).unwrap();
        assert_eq!(record, record_at(5, i as u64, Split::HeldOut));
        assert!(record.captions.len() >= 3);
        assert_eq!(&images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES], render(&record.scene).as_slice());
        let raw: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(raw["index"], i);
        assert!(raw["scene"]["layout"]["kind"].is_string() && raw["scene"]["objects"][0]["color"].is_string());
    }
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    assert_eq!((meta["n"].as_u64(), meta["seed"].as_u64(), meta["size"].as_u64()), (Some(37), Some(5), Some(64)));
    assert_eq!(meta["split"], "heldout");
    assert_eq!(meta["vocabulary"].as_array().unwrap().len(), vocabulary().len());
    assert_eq!(meta["colors"]["pink"], serde_json::json!([240, 110, 170]));
    assert_eq!(meta["held_out"]["pairs"].as_array().unwrap().len(), HELD_OUT_PAIRS.len());
    assert_eq!(meta["held_out"]["combinations"][0][1]["shape"], "square");
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().ends_with(".tmp")).collect();
    assert!(leftovers.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Harsher spoils, for the record (`cargo test --release --test world spoil_table -- --ignored --nocapture`).
#[test]
#[ignore]
fn spoil_table() {
    for (blur, noise, drift) in [(0.0, 16.0, 0.0), (1.0, 16.0, 0.0), (1.5, 8.0, 0.0), (0.0, 0.0, 10.0), (1.0, 8.0, 10.0), (1.5, 16.0, 10.0), (2.0, 12.0, 10.0)] {
        let acc = accuracy(2000, Some(Spoil { blur, noise, drift }));
        eprintln!("blur {blur} noise {noise} drift {drift}: {}", table(acc));
    }
}
