//! `generate` composes a relation prompt of two plain objects by region on the built-in model
//! (src/lifelong/compose.rs, `Composer::plan_objects`): each object is drawn from its one-object
//! clause in its region, so the relation comes out right where the model alone draws the order
//! at random; `--no-compose` draws the prompt whole; other checkpoints compose only on request.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use lifelong_diffusion::world::{check, parse};

fn generate(prompt: &str, seed: &str, steps: &str, extra: &[&str]) -> (String, Vec<u8>) {
    static RUN: AtomicUsize = AtomicUsize::new(0);
    let out = std::env::temp_dir().join(format!("ld-compose-{}-{}.png", std::process::id(), RUN.fetch_add(1, Ordering::Relaxed)));
    let run = Command::new(env!("CARGO_BIN_EXE_lifelong-diffusion"))
        .args(["generate", "--prompt", prompt, "--seed", seed, "--steps", steps, "--backend", "cpu", "--out"])
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "generate failed: {log}");
    let rgb = image::open(&out).unwrap().to_rgb8().into_raw();
    let _ = std::fs::remove_file(&out);
    (log, rgb)
}

#[test]
fn the_builtin_model_draws_relations_by_region() {
    for (prompt, seed) in [("a red circle above a blue square", "3"), ("a small green heart to the right of a large yellow star on a night background", "5")] {
        let (log, rgb) = generate(prompt, seed, "20", &[]);
        assert!(log.contains("composing by region: "), "{log}");
        let verdict = check(&rgb, &parse(prompt).unwrap()).unwrap();
        assert_eq!(verdict.relation, Some(true), "{prompt}: {verdict:?}");
        assert!(verdict.color && verdict.shape, "{prompt}: {verdict:?}");
    }
    let (log, _) = generate("a red circle above a blue square", "3", "20", &["--no-compose"]);
    assert!(!log.contains("composing") && log.contains("orthogonal attention: a red circle"), "drawn whole: {log}");
    // One object, or no relation: nothing to compose.
    let (log, _) = generate("a red circle and a blue square", "3", "2", &[]);
    assert!(!log.contains("composing"), "{log}");
}

#[test]
fn other_checkpoints_compose_only_when_asked() {
    let model: PathBuf = common::fixtures().join("sd1");
    let model = model.to_str().unwrap();
    let (log, _) = generate("a cat above a dog", "1", "2", &["--model", model]);
    assert!(!log.contains("composing"), "{log}");
    let (log, _) = generate("a cat above a dog", "1", "2", &["--model", model, "--compose"]);
    assert!(log.contains("composing by region: a large cat in the center on a gray background | a large dog in the center on a gray background"), "{log}");
}
