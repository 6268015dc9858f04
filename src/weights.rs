//! Safetensors bytes -> burn parameters, by diffusers' checkpoint key.
//!
//! A [`VarBuilder`] walks a model's key tree the way candle's does (`vb.pp("to_out.0")`): every
//! module asks it for the tensors it needs with the shape its config implies, so the name, dtype
//! and shape of every tensor are checked against the config, and after building, any tensor left
//! unclaimed is reported ([`VarBuilder::finish`]). The same builder can draw seeded random
//! weights instead, for shape tests at full scale (e.g. SD-1.5) without a checkpoint.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use burn::module::Param;
use burn::prelude::*;
use safetensors::tensor::{Dtype, Metadata};
use safetensors::SafeTensors;

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Where tensors come from.
enum Source {
    /// One safetensors file held in memory, header parsed once.
    File { bytes: Vec<u8>, data_start: usize, metadata: Metadata },
    /// Seeded random values with the requested shape (scale `std`), for tests and benches.
    Random { rng: RefCell<Rng>, std: f32 },
}

struct Inner {
    source: Source,
    file: String,
    device: Device,
    used: RefCell<BTreeSet<String>>,
}

/// A cursor into a weight file at a key prefix.
#[derive(Clone)]
pub struct VarBuilder {
    inner: Rc<Inner>,
    prefix: String,
}

impl VarBuilder {
    /// Parses a safetensors file held in `bytes`; `file` names it in errors.
    pub fn from_bytes(bytes: Vec<u8>, file: impl Into<String>, device: &Device) -> Result<Self> {
        let file = file.into();
        let (header_len, metadata) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::Safetensors { file: file.clone(), reason: e.to_string() })?;
        let source = Source::File { data_start: 8 + header_len, metadata, bytes };
        Ok(Self::with_source(source, file, device))
    }

    /// Seeded random weights: every requested tensor is drawn as N(0, std^2).
    pub fn random(seed: u64, std: f32, device: &Device) -> Self {
        let source = Source::Random { rng: RefCell::new(Rng::new(seed)), std };
        Self::with_source(source, "<random weights>".into(), device)
    }

    fn with_source(source: Source, file: String, device: &Device) -> Self {
        let inner = Inner { source, file, device: device.clone(), used: RefCell::new(BTreeSet::new()) };
        Self { inner: Rc::new(inner), prefix: String::new() }
    }

    /// A builder one level down the key tree: `vb.pp("attn1").pp("to_q")`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) };
        Self { inner: self.inner.clone(), prefix }
    }

    /// The key prefix this builder stands at (for error messages).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) }
    }

    /// True when the file holds `name` under this prefix (random sources hold everything).
    pub fn contains(&self, name: &str) -> bool {
        match &self.inner.source {
            Source::File { metadata, .. } => metadata.info(&self.key(name)).is_some(),
            Source::Random { .. } => true,
        }
    }

    /// True when any tensor lives under `prefix.` (for optional sub-modules).
    pub fn contains_prefix(&self, name: &str) -> bool {
        let key = format!("{}.", self.key(name));
        match &self.inner.source {
            Source::File { metadata, .. } => metadata.offset_keys().iter().any(|k| k.starts_with(&key)),
            Source::Random { .. } => true,
        }
    }

    /// Marks `name` as accounted for without reading it (buffers such as CLIP's `position_ids`).
    pub fn skip(&self, name: &str) {
        if self.contains(name) {
            self.inner.used.borrow_mut().insert(self.key(name));
        }
    }

    /// Reads `name` as f32 values, checking that its shape is `shape`.
    pub fn values(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let key = self.key(name);
        let file = &self.inner.file;
        let values = match &self.inner.source {
            Source::Random { rng, std } => {
                let n = shape.iter().product();
                rng.borrow_mut().normal_vec(n).into_iter().map(|v| v * std).collect()
            }
            Source::File { bytes, data_start, metadata } => {
                let info = metadata.info(&key).ok_or_else(|| Error::MissingTensor { file: file.clone(), name: key.clone() })?;
                if info.shape != shape {
                    return Err(Error::ShapeMismatch { file: file.clone(), name: key, expected: shape.to_vec(), found: info.shape.clone() });
                }
                let (start, end) = info.data_offsets;
                let raw = &bytes[data_start + start..data_start + end];
                decode(raw, info.dtype).ok_or_else(|| Error::UnsupportedDtype { file: file.clone(), name: key.clone(), dtype: format!("{:?}", info.dtype) })?
            }
        };
        self.inner.used.borrow_mut().insert(key);
        Ok(values)
    }

    /// Reads `name` as a tensor of rank `D` on the builder's device.
    pub fn tensor<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        let values = self.values(name, &shape)?;
        Ok(Tensor::from_data(TensorData::new(values, shape), &self.inner.device))
    }

    /// Like [`Self::tensor`], wrapped as a trainable parameter.
    pub fn param<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Param<Tensor<D>>> {
        Ok(Param::from_tensor(self.tensor(name, shape)?))
    }

    /// Errors on the first tensor of the file that no module claimed.
    pub fn finish(&self) -> Result<()> {
        let Source::File { metadata, .. } = &self.inner.source else { return Ok(()) };
        let used = self.inner.used.borrow();
        let mut keys = metadata.offset_keys();
        keys.sort();
        match keys.into_iter().find(|k| !used.contains(k)) {
            Some(name) => Err(Error::UnexpectedTensor { file: self.inner.file.clone(), name }),
            None => Ok(()),
        }
    }
}

/// Little-endian F32/F16/BF16 bytes to f32; `None` for other dtypes.
fn decode(raw: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    let values = match dtype {
        Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        _ => return None,
    };
    Some(values)
}
