//! `eval world` end to end on the 64x64 SD-1-style fixture (random weights: the scores are
//! near zero; the test holds the report's shape, not the model's quality).

use std::process::Command;

fn eval(model: &str) -> std::process::Output {
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(model);
    Command::new(env!("CARGO_BIN_EXE_lifelong-diffusion"))
        .args(["eval", "world", "--model", model.to_str().unwrap(), "--n", "1", "--steps", "2", "--backend", "cpu"])
        .output()
        .unwrap()
}

#[test]
fn report_has_a_row_per_category_and_a_json_line_last() {
    let out = eval("sd1");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    for category in ["single/seen", "single/held-out", "two-object/seen", "two-object/held-out"] {
        assert!(stdout.contains(category), "{stdout}");
    }
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let rows = json["categories"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for row in rows {
        let rate = row["rates"]["all"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&rate));
        let phrases = row["by_phrase"].as_object().unwrap();
        assert_eq!(phrases.len(), 1, "one prompt asks one place or relation: {row}");
    }
    assert!(rows[2]["rates"]["both_objects"].is_number());
}

#[test]
fn a_model_of_another_resolution_is_refused() {
    let out = eval("sd2");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("64x64"));
}
