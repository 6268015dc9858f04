//! Golden image of the built-in model (issue: the built-in miniature SD): the CLI with no `--model`
//! renders a fixed prompt and seed on the cpu backend, and the PNG must match the committed golden.
//!
//! The golden belongs to one export of the built-in model: `builtin_golden.json` records a hash of
//! the UNet and VAE weights it was made with. After re-exporting the model (tools/train.sh), remake it:
//! `LD_UPDATE_GOLDEN=1 cargo test --test golden` (and look at the new PNG before committing it).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Per-channel tolerance in 8-bit steps: the CPU backend is deterministic, but float summation order
/// may change with burn versions; anything visible is a real change.
const MAX_ABS: u8 = 3;
const MAX_MEAN: f64 = 0.5;

const PROMPT: &str = "a small red star on the left";
const SEED: &str = "1";
const STEPS: &str = "20";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// FNV-1a over the weight files that decide the image (no hashing crate needed for a fingerprint).
fn weights_fingerprint() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in ["unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"] {
        let bytes = std::fs::read(root().join("www/models/builtin").join(part)).expect("built-in model file");
        for b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn read_rgb(path: &Path) -> (Vec<u8>, u32, u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).expect("png")));
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size().expect("png size")];
    let info = reader.next_frame(&mut buf).expect("png frame");
    buf.truncate(info.buffer_size());
    assert_eq!(info.color_type, png::ColorType::Rgb, "{} is not RGB", path.display());
    (buf, info.width, info.height)
}

fn render(out: &Path) {
    let result = Command::new(env!("CARGO_BIN_EXE_lifelong-diffusion"))
        .args(["generate", "--prompt", PROMPT, "--seed", SEED, "--steps", STEPS, "--backend", "cpu", "--out"])
        .arg(out)
        .output()
        .expect("run the CLI");
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
}

#[test]
fn builtin_model_renders_the_golden_image_on_cpu() {
    let golden = root().join("tests/fixtures/builtin_golden.png");
    let meta_path = root().join("tests/fixtures/builtin_golden.json");
    let fingerprint = weights_fingerprint();
    let out = std::env::temp_dir().join(format!("ld-golden-{}.png", std::process::id()));
    render(&out);
    if std::env::var_os("LD_UPDATE_GOLDEN").is_some() {
        std::fs::copy(&out, &golden).expect("write golden");
        let meta = serde_json::json!({ "prompt": PROMPT, "seed": SEED, "steps": STEPS, "backend": "cpu", "weights_fnv1a": fingerprint });
        std::fs::write(&meta_path, serde_json::to_string_pretty(&meta).unwrap() + "\n").expect("write golden meta");
        return;
    }
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&meta_path).expect("golden meta")).unwrap();
    assert_eq!(
        meta["weights_fnv1a"].as_str(),
        Some(fingerprint.as_str()),
        "www/models/builtin changed since the golden was made: remake it with `LD_UPDATE_GOLDEN=1 cargo test --test golden`"
    );
    let (actual, w, h) = read_rgb(&out);
    let (expected, gw, gh) = read_rgb(&golden);
    assert_eq!((w, h), (gw, gh), "image size");
    let diffs: Vec<u8> = actual.iter().zip(&expected).map(|(a, b)| a.abs_diff(*b)).collect();
    let max = diffs.iter().copied().max().unwrap_or(0);
    let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
    let _ = std::fs::remove_file(&out);
    assert!(max <= MAX_ABS && mean <= MAX_MEAN, "differs from the golden: max {max}/255, mean {mean:.3}/255");
}
