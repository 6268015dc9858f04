//! `teach`, `concepts` and `generate --store` end to end on the tiny SD-1 fixture: a lesson from
//! PNG/JPEG files lands as a store version the generator uses; export/import, remove/restore;
//! a non-image file is refused; a lesson killed mid-way leaves the store at its previous version.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::fixtures;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lifelong-diffusion"))
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ld-teach-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn model() -> String {
    fixtures().join("sd1").to_str().unwrap().to_string()
}

fn ok(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "command failed: {stderr}");
    format!("{}{stderr}", String::from_utf8_lossy(&out.stdout))
}

/// Three pictures of a red blob at different places and sizes, as PNG and JPEG of odd sizes.
fn pictures(dir: &Path) -> Vec<String> {
    let mut paths = Vec::new();
    for (i, (w, h, ext)) in [(80u32, 60u32, "png"), (50, 50, "jpg"), (120, 90, "png")].into_iter().enumerate() {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let (cx, cy) = (w as i32 / 3 + 10 * i as i32, h as i32 / 2);
            let inside = (x as i32 - cx).pow(2) + (y as i32 - cy).pow(2) < (12 + 4 * i as i32).pow(2);
            if inside { image::Rgb([220, 30, 30]) } else { image::Rgb([240, 240, 230]) }
        });
        let path = dir.join(format!("p{i}.{ext}"));
        img.save(&path).unwrap();
        paths.push(path.to_str().unwrap().to_string());
    }
    paths
}

fn teach(store: &Path, name: &str, images: &[String], steps: &str) -> Command {
    let mut cmd = bin();
    cmd.args(["teach", "--name", name, "--store", store.to_str().unwrap(), "--model", &model(), "--steps", steps, "--images"]);
    cmd.args(images);
    cmd
}

fn generate(store: Option<&Path>, out: &Path) -> Output {
    let mut cmd = bin();
    cmd.args(["generate", "--prompt", "a <toy> on the left", "--model", &model(), "--steps", "2", "--backend", "cpu", "--no-attend"]);
    cmd.args(["--out", out.to_str().unwrap()]);
    if let Some(store) = store {
        cmd.args(["--store", store.to_str().unwrap()]);
    }
    cmd.output().unwrap()
}

fn concepts(store: &Path, args: &[&str]) -> String {
    ok(bin().arg("concepts").args(args).args(["--store", store.to_str().unwrap(), "--model", &model()]).output().unwrap())
}

#[test]
fn a_lesson_lands_in_the_store_and_the_generator_uses_it() {
    let dir = temp("flow");
    let store = dir.join("store");
    let images = pictures(&dir);
    // The shared adapter (the routed test below takes the default, routed).
    let log = ok(teach(&store, "toy", &images, "3").args(["--method", "l2dm"]).output().unwrap());
    assert!(log.contains("version 1"), "{log}");
    let list = concepts(&store, &["list"]);
    assert!(list.contains("v1 (current)") && list.contains("<toy>"), "{list}");

    let (with, without) = (dir.join("with.png"), dir.join("without.png"));
    let log = ok(generate(Some(&store), &with));
    assert!(log.contains("<toy>"), "generate names the concepts it uses: {log}");
    ok(generate(Some(&dir.join("empty-store")), &without));
    assert_ne!(std::fs::read(&with).unwrap(), std::fs::read(&without).unwrap(), "the concept changes the image");

    let file = dir.join("toy.safetensors");
    concepts(&store, &["export", "--out", file.to_str().unwrap()]);
    let other = dir.join("other");
    concepts(&other, &["import", file.to_str().unwrap()]);
    assert!(concepts(&other, &["list"]).contains("<toy>"));

    concepts(&store, &["remove", "toy"]);
    let list = concepts(&store, &["list"]);
    assert!(list.contains("v2 (current)"), "{list}");
    concepts(&store, &["restore", "1"]);
    assert!(concepts(&store, &["list"]).contains("v1 (current)"));
}

fn generate_prompt(store: &Path, prompt: &str, out: &Path) -> String {
    generate_with(store, prompt, out, "--no-attend")
}

fn generate_with(store: &Path, prompt: &str, out: &Path, artist: &str) -> String {
    let mut cmd = bin();
    cmd.args(["generate", "--prompt", prompt, "--model", &model(), "--steps", "2", "--backend", "cpu", artist]);
    cmd.args(["--out", out.to_str().unwrap(), "--store", store.to_str().unwrap()]);
    ok(cmd.output().unwrap())
}

/// A lesson on an empty store is routed unless asked otherwise: the concept's block is used only
/// by prompts that name it (a plain prompt draws exactly what the model draws without the
/// store), and a shared lesson on that store is refused with the fix, leaving the version as it
/// was.
#[test]
fn a_routed_store_uses_a_concept_only_where_the_prompt_names_it() {
    let dir = temp("routed");
    let store = dir.join("store");
    let images = pictures(&dir);
    let log = ok(teach(&store, "toy", &images, "3").output().unwrap());
    assert!(log.contains("taught <toy> (routed)"), "an empty store's lesson is routed by default: {log}");
    let plain = "a red circle on the left";
    let (with, without, named) = (dir.join("with.png"), dir.join("without.png"), dir.join("named.png"));
    generate_prompt(&store, plain, &with);
    generate_prompt(&dir.join("empty-store"), plain, &without);
    assert_eq!(std::fs::read(&with).unwrap(), std::fs::read(&without).unwrap(), "a plain prompt draws the base model");
    let log = generate_prompt(&store, "a <toy> on the left", &named);
    assert!(log.contains("<toy>"), "{log}");
    // A prompt naming a routed concept draws at ROUTED_GUIDANCE unless --guidance is given.
    let at = |g: &str| {
        let out = dir.join(format!("named-{g}.png"));
        generate_with(&store, "a <toy> on the left", &out, &format!("--guidance={g}"));
        std::fs::read(out).unwrap()
    };
    let named = std::fs::read(&named).unwrap();
    assert_eq!(named, at(&lifelong_diffusion::lifelong::state::ROUTED_GUIDANCE.to_string()), "the default for a routed concept");
    assert_ne!(named, at("7.5"), "not the plain prompts' 7.5");

    let out = teach(&store, "other", &images, "2").args(["--method", "l2dm"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--method routed"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(concepts(&store, &["list"]).contains("v1 (current)"));

    // Two routed concepts in one prompt are composed by region, unless the artist is off.
    // A routed store's lessons are routed without asking.
    ok(teach(&store, "pet", &images, "2").output().unwrap());
    let both = "a <toy> to the left of a <pet>";
    let log = generate_with(&store, both, &dir.join("both.png"), "--attend");
    assert!(log.contains("composing by region: a large <toy> in the center on a gray background | a large <pet> in the center on a gray background"), "{log}");
    let log = generate_with(&store, both, &dir.join("default.png"), "--orthogonal=8");
    assert!(log.contains("composing") && !log.contains("attend: step"), "composed by default, without the latent updates: {log}");
    let log = generate_prompt(&store, both, &dir.join("summed.png"));
    assert!(!log.contains("composing"), "--no-attend sums the blocks: {log}");
}

#[test]
fn a_file_that_is_no_image_is_refused_and_nothing_is_written() {
    let dir = temp("bad");
    let store = dir.join("store");
    let text = dir.join("notes.png");
    std::fs::write(&text, "this is not a picture").unwrap();
    let out = teach(&store, "toy", &[text.to_str().unwrap().to_string()], "3").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("notes.png") && err.contains("PNG, JPEG or WebP"), "{err}");
    assert!(!store.join("manifest.json").exists(), "nothing saved");
    let bad_name = teach(&store, "Bad Name", &pictures(&dir), "3").output().unwrap();
    assert!(!bad_name.status.success() && String::from_utf8_lossy(&bad_name.stderr).contains("Bad Name"));
}

#[test]
fn a_lesson_killed_midway_leaves_the_previous_version() {
    let dir = temp("kill");
    let store = dir.join("store");
    let images = pictures(&dir);
    ok(teach(&store, "toy", &images, "2").output().unwrap());
    let manifest = std::fs::read(store.join("manifest.json")).unwrap();

    let mut child = teach(&store, "second", &images, "100000").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Long enough to be inside the lesson (loading the tiny model takes well under a second).
    std::thread::sleep(std::time::Duration::from_secs(4));
    child.kill().unwrap();
    child.wait().unwrap();

    assert_eq!(std::fs::read(store.join("manifest.json")).unwrap(), manifest, "the manifest is untouched");
    let list = concepts(&store, &["list"]);
    assert!(list.contains("v1 (current)") && !list.contains("<second>"), "{list}");
    ok(generate(Some(&store), &dir.join("after.png")));
}
