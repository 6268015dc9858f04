//! Shared test helpers: fixture files, devices, tolerances.
#![allow(dead_code)]

pub mod lessons;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::prelude::*;
use safetensors::tensor::Dtype;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A reference tensor: shape and values as f32 (integers converted).
#[derive(Debug, Clone)]
pub struct Ref {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl Ref {
    pub fn tensor<const D: usize>(&self, device: &Device) -> Tensor<D> {
        let shape: [usize; D] = self.shape.clone().try_into().expect("rank");
        Tensor::from_data(TensorData::new(self.values.clone(), shape), device)
    }

    pub fn ids(&self) -> Vec<i64> {
        self.values.iter().map(|&v| v as i64).collect()
    }
}

/// Every tensor of a safetensors fixture, by name.
pub fn load_refs(path: &Path) -> HashMap<String, Ref> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("fixture parses");
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
                Dtype::I64 => data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
                Dtype::U8 => data.iter().map(|&b| b as f32).collect(),
                other => panic!("{name}: unexpected dtype {other:?}"),
            };
            (name, Ref { shape: view.shape().to_vec(), values })
        })
        .collect()
}

static WGPU: OnceLock<Option<Device>> = OnceLock::new();

/// The devices every numeric test runs on: burn-flex (CPU), and wgpu when an adapter exists
/// (lavapipe in CI). Set `LD_TEST_BACKENDS=cpu` to skip wgpu locally.
pub fn devices() -> Vec<(&'static str, Device)> {
    let mut out = vec![("cpu", Device::flex())];
    if std::env::var("LD_TEST_BACKENDS").map(|v| v.contains("wgpu")).unwrap_or(true) {
        if let Some(d) = WGPU.get_or_init(|| Device::wgpu_options().init().ok()) {
            out.push(("wgpu", d.clone()));
        }
    }
    out
}

/// Largest absolute difference divided by the reference's largest magnitude.
pub fn relative_error(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len(), "length mismatch");
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let diff = actual.iter().zip(expected).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

pub fn max_abs_diff(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len(), "length mismatch");
    actual.iter().zip(expected).fold(0f32, |m, (a, b)| m.max((a - b).abs()))
}

pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 tensor")
}

/// Asserts `actual` matches `expected` within `tol` relative error, with a useful message.
pub fn assert_close<const D: usize>(what: &str, actual: Tensor<D>, expected: &Ref, tol: f32) {
    assert_eq!(actual.dims().to_vec(), expected.shape, "{what}: shape");
    let got = values(actual);
    let err = relative_error(&got, &expected.values);
    assert!(err <= tol, "{what}: relative error {err:e} > {tol:e}");
    eprintln!("{what}: relative error {err:e} (tolerance {tol:e})");
}
