//! Helpers for lesson tests on the tiny SD-1 fixture.

use burn::prelude::*;
use lifelong_diffusion::lifelong::adapter::AdapterConfig;
use lifelong_diffusion::lifelong::learner::{Learner, Picture};
use lifelong_diffusion::loader;
use lifelong_diffusion::native::Folder;

use super::fixtures;

/// A learner on the SD-1 fixture with an empty adapter of the default shape.
pub fn learner() -> Learner {
    let device = Device::flex();
    let base = loader::load(&Folder(fixtures().join("sd1")), &device).expect("sd1");
    let trained = loader::load(&Folder(fixtures().join("sd1")), &device.clone().autodiff()).expect("sd1");
    Learner::new(base, device, trained, AdapterConfig::default()).expect("learner")
}

/// A 64x64 picture: a bright square at `(x, y)` on a dark background.
pub fn picture(x: usize, y: usize) -> Picture {
    let mut v = vec![0.1f32; 3 * 64 * 64];
    for c in 0..3 {
        for yy in y..y + 20 {
            for xx in x..x + 20 {
                v[c * 4096 + yy * 64 + xx] = if c == 0 { 0.9 } else { 0.3 };
            }
        }
    }
    Picture { image: Tensor::from_data(TensorData::new(v, [1, 3, 64, 64]), &Device::flex()), words: None }
}
