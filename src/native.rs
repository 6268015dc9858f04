//! Native edge: files on disk, PNG and latent files, backend choice. Not built for wasm32.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use safetensors::tensor::{Dtype, TensorView};

use crate::error::{Error, Result};
use crate::loader::ModelFiles;
pub use crate::pipeline::image_to_rgb8;

/// A diffusers pipeline folder on disk.
pub struct Folder(pub PathBuf);

impl ModelFiles for Folder {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let full = self.0.join(path);
        match std::fs::read(&full) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Read { path: full, source }),
        }
    }

    fn name(&self) -> String {
        self.0.display().to_string()
    }
}

/// Which compute backend to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// WebGPU's native APIs (Vulkan, Metal, DX12) through burn-wgpu.
    Wgpu,
    /// burn-flex on the CPU.
    Cpu,
}

/// Opens `backend`, or when `None` the GPU if an adapter exists, else the CPU.
pub fn open_device(backend: Option<Backend>) -> Result<(Device, Backend)> {
    match backend {
        Some(Backend::Cpu) => Ok((Device::flex(), Backend::Cpu)),
        Some(Backend::Wgpu) => Device::wgpu_options().init().map(|d| (d, Backend::Wgpu)).map_err(|e| Error::Backend(e.to_string())),
        None => Ok(Device::wgpu_options().init().map(|d| (d, Backend::Wgpu)).unwrap_or_else(|_| (Device::flex(), Backend::Cpu))),
    }
}

/// Reads tensor `name` (f32, rank 4) from a safetensors file.
pub fn read_tensor4(path: &Path, name: &str, device: &Device) -> Result<Tensor<4>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read { path: path.into(), source })?;
    let file = path.display().to_string();
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Safetensors { file: file.clone(), reason: e.to_string() })?;
    let view = st.tensor(name).map_err(|_| Error::MissingTensor { file: file.clone(), name: name.into() })?;
    if view.dtype() != Dtype::F32 {
        return Err(Error::UnsupportedDtype { file, name: name.into(), dtype: format!("{:?} (this file must hold F32)", view.dtype()) });
    }
    let shape: [usize; 4] = view.shape().try_into().map_err(|_| Error::ShapeMismatch {
        file: file.clone(), name: name.into(), expected: vec![1, 4, 0, 0], found: view.shape().to_vec(),
    })?;
    let values: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Ok(Tensor::from_data(TensorData::new(values, shape), device))
}

/// Writes `tensor` as f32 under `name`, atomically (temporary file, then rename).
pub fn write_tensor(path: &Path, name: &str, tensor: &Tensor<4>) -> Result<()> {
    let data = tensor.to_data();
    let values: Vec<f32> = data.try_to_vec::<f32>().map_err(|e| Error::InvalidInput(format!("{e:?}")))?;
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = TensorView::new(Dtype::F32, data.shape().to_vec(), &bytes).map_err(|e| Error::InvalidInput(e.to_string()))?;
    let out = safetensors::serialize([(name, view)], None).map_err(|e| Error::InvalidInput(e.to_string()))?;
    write_atomic(path, &out)
}

/// RGB `[1, 3, h, w]` in [0, 1] -> 8-bit PNG, quantised as diffusers' `numpy_to_pil` does
/// (`(x * 255).round()`).
pub fn write_png(path: &Path, image: &Tensor<4>) -> Result<()> {
    let pixels = image_to_rgb8(image)?;
    let [_, _, h, w] = image.dims();
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, w as u32, h as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| Error::InvalidInput(e.to_string()))?;
        writer.write_image_data(&pixels).map_err(|e| Error::InvalidInput(e.to_string()))?;
    }
    write_atomic(path, &out)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("out")));
    let fail = |source| Error::Write { path: path.into(), source };
    std::fs::write(&tmp, bytes).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        Error::Write { path: path.into(), source }
    })
}
