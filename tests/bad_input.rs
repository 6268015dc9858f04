//! Every bad input of the runtime issue gets a clear, typed error naming the problem and the file;
//! the CLI exits non-zero without panicking.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::prelude::Device;
use common::fixtures;
use lifelong_diffusion::loader;
use lifelong_diffusion::native::Folder;
use lifelong_diffusion::Error;
use safetensors::tensor::{Dtype, TensorView};

/// A scratch copy of a fixture pipeline that a test may break.
struct Scratch(PathBuf);

impl Scratch {
    fn copy_of(name: &str, tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ld-bad-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        copy_dir(&fixtures().join(name), &dir);
        Self(dir)
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
    fn load(&self) -> Result<(), Error> {
        loader::load(&Folder(self.0.clone()), &Device::flex()).map(|_| ())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Rewrites a safetensors file, letting `edit` change each (name, dtype, shape, bytes).
fn rewrite(path: &Path, edit: impl Fn(&str, Dtype, Vec<usize>, Vec<u8>) -> Option<(Dtype, Vec<usize>, Vec<u8>)>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .filter_map(|(n, v)| edit(&n, v.dtype(), v.shape().to_vec(), v.data().to_vec()).map(|(d, s, b)| (n, d, s, b)))
        .collect();
    let views: Vec<(String, TensorView)> = owned.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

const UNET_SD2: &str = "unet/diffusion_pytorch_model.safetensors";

#[test]
fn truncated_safetensors_names_the_file() {
    let s = Scratch::copy_of("sd2", "trunc");
    let bytes = std::fs::read(s.path(UNET_SD2)).unwrap();
    std::fs::write(s.path(UNET_SD2), &bytes[..bytes.len() / 2]).unwrap();
    match s.load() {
        Err(Error::Safetensors { file, .. }) => assert!(file.ends_with(UNET_SD2), "{file}"),
        other => panic!("expected a safetensors error, got {other:?}"),
    }
}

#[test]
fn header_claiming_gigabytes_is_rejected_without_allocating() {
    let s = Scratch::copy_of("sd2", "huge");
    let mut bytes = 5_000_000_000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(s.path(UNET_SD2), bytes).unwrap();
    assert!(matches!(s.load(), Err(Error::Safetensors { .. })));
}

#[test]
fn wrong_dtype_names_the_tensor() {
    let s = Scratch::copy_of("sd2", "dtype");
    rewrite(&s.path(UNET_SD2), |name, d, shape, b| {
        // An integer dtype of the same width, so the file stays well-formed.
        let int = if d.bitsize() == 16 { Dtype::I16 } else { Dtype::I32 };
        if name == "conv_in.bias" { Some((int, shape, b)) } else { Some((d, shape, b)) }
    });
    match s.load() {
        Err(Error::UnsupportedDtype { name, .. }) => assert_eq!(name, "conv_in.bias"),
        other => panic!("expected UnsupportedDtype, got {other:?}"),
    }
}

#[test]
fn wrong_shape_names_the_tensor() {
    let s = Scratch::copy_of("sd2", "shape");
    rewrite(&s.path(UNET_SD2), |name, d, shape, b| {
        if name == "conv_in.bias" { Some((d, vec![shape[0] / 2, 2], b)) } else { Some((d, shape, b)) }
    });
    match s.load() {
        Err(Error::ShapeMismatch { name, expected, .. }) => {
            assert_eq!(name, "conv_in.bias");
            assert_eq!(expected.len(), 1);
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
}

#[test]
fn missing_and_extra_tensors_are_named() {
    let s = Scratch::copy_of("sd2", "missing");
    rewrite(&s.path(UNET_SD2), |name, d, shape, b| (name != "conv_out.weight").then_some((d, shape, b)));
    match s.load() {
        Err(Error::MissingTensor { name, .. }) => assert_eq!(name, "conv_out.weight"),
        other => panic!("expected MissingTensor, got {other:?}"),
    }
    let s = Scratch::copy_of("sd2", "extra");
    let path = s.path(UNET_SD2);
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut views: Vec<(String, TensorView)> = st.tensors();
    let extra = vec![0u8; 16];
    views.push(("surprise.weight".into(), TensorView::new(Dtype::F32, vec![4], &extra).unwrap()));
    let out = safetensors::serialize(views, None).unwrap();
    std::fs::write(&path, out).unwrap();
    match s.load() {
        Err(Error::UnexpectedTensor { name, .. }) => assert_eq!(name, "surprise.weight"),
        other => panic!("expected UnexpectedTensor, got {other:?}"),
    }
}

#[test]
fn missing_component_folder_is_named() {
    let s = Scratch::copy_of("sd2", "nocomp");
    std::fs::remove_dir_all(s.path("vae")).unwrap();
    let err = s.load().unwrap_err().to_string();
    assert!(err.contains("vae"), "{err}");
}

#[test]
fn missing_config_key_is_named() {
    let s = Scratch::copy_of("sd2", "nokey");
    let path = s.path("unet/config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config.as_object_mut().unwrap().remove("block_out_channels");
    std::fs::write(&path, config.to_string()).unwrap();
    let err = s.load().unwrap_err().to_string();
    assert!(err.contains("block_out_channels") && err.contains("unet/config.json"), "{err}");
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lifelong-diffusion")).args(args).output().expect("cli runs");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "the CLI panicked: {stderr}");
    (out.status.success(), stderr)
}

fn sd2() -> String {
    fixtures().join("sd2").display().to_string()
}

#[test]
fn cli_unknown_scheduler() {
    let (ok, err) = cli(&["generate", "--prompt", "a cat", "--model", &sd2(), "--backend", "cpu", "--scheduler", "plms9000", "--out", "/tmp/ld-x.png"]);
    assert!(!ok);
    assert!(err.contains("plms9000"), "{err}");
}

#[test]
fn cli_empty_prompt() {
    let (ok, err) = cli(&["generate", "--prompt", "  ", "--model", &sd2(), "--backend", "cpu", "--steps", "2", "--out", "/tmp/ld-x.png"]);
    assert!(!ok);
    assert!(err.contains("prompt is empty"), "{err}");
}

#[test]
fn cli_non_writable_output() {
    let (ok, err) = cli(&["generate", "--prompt", "a cat", "--model", &sd2(), "--backend", "cpu", "--steps", "2", "--out", "/nonexistent-dir/x.png"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent-dir/x.png"), "{err}");
}

#[test]
fn cli_long_prompt_is_truncated_with_a_warning() {
    let out = std::env::temp_dir().join(format!("ld-long-{}.png", std::process::id()));
    let prompt = "a very long prompt about a cat ".repeat(20);
    let (ok, err) = cli(&["generate", "--prompt", &prompt, "--model", &sd2(), "--backend", "cpu", "--steps", "2", "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(err.contains("truncated"), "{err}");
    assert!(out.exists());
    let _ = std::fs::remove_file(out);
}

#[test]
fn cli_missing_model_folder() {
    let (ok, err) = cli(&["generate", "--prompt", "a cat", "--model", "/nonexistent-model", "--backend", "cpu", "--out", "/tmp/ld-x.png"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent-model"), "{err}");
}

#[test]
fn tokenizer_context_longer_than_text_encoder_positions() {
    let s = Scratch::copy_of("sd2", "ctx");
    let path = s.path("tokenizer/tokenizer_config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["model_max_length"] = serde_json::json!(100);
    std::fs::write(&path, config.to_string()).unwrap();
    let err = s.load().unwrap_err().to_string();
    assert!(err.contains("max_position_embeddings") && err.contains("tokenizer_config.json"), "{err}");
}

#[test]
fn zero_steps_is_a_scheduler_error() {
    let (ok, err) = cli(&["generate", "--prompt", "a cat", "--model", &sd2(), "--backend", "cpu", "--steps", "0", "--out", "/tmp/ld-x.png"]);
    assert!(!ok);
    assert!(err.contains("steps"), "{err}");
}
