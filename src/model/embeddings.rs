//! Sinusoidal timestep embedding and `TimestepEmbedding` (diffusers models/embeddings.py).

use burn::prelude::*;
use burn::tensor::activation::silu;

use super::nn::Linear;
use crate::error::Result;
use crate::weights::VarBuilder;

/// `get_timestep_embedding(timesteps, dim, flip_sin_to_cos, downscale_freq_shift)` with
/// `max_period=10000`, computed in f32 like diffusers does, so that the embedding of t=999
/// agrees to f32 rounding.
///
/// # Shapes
/// returns `[timesteps.len(), dim]`
pub fn timestep_embedding(timesteps: &[f32], dim: usize, flip_sin_to_cos: bool, shift: f32, device: &Device) -> Tensor<2> {
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10000f32.ln()) * i as f32 / (half as f32 - shift)).exp())
        .collect();
    let mut values = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args: Vec<f32> = freqs.iter().map(|f| t * f).collect();
        let (sin, cos) = (args.iter().map(|a| a.sin()), args.iter().map(|a| a.cos()));
        if flip_sin_to_cos {
            values.extend(cos.chain(sin));
        } else {
            values.extend(sin.chain(cos));
        }
        // diffusers zero-pads odd dimensions.
        values.extend(std::iter::repeat_n(0.0, dim - 2 * half));
    }
    Tensor::from_data(TensorData::new(values, [timesteps.len(), dim]), device)
}

/// `TimestepEmbedding`: `linear_1`, SiLU, `linear_2`.
#[derive(Module, Debug)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn load(vb: &VarBuilder, d_in: usize, d_out: usize) -> Result<Self> {
        Ok(Self { linear_1: Linear::load(&vb.pp("linear_1"), d_in, d_out, true)?, linear_2: Linear::load(&vb.pp("linear_2"), d_out, d_out, true)? })
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.linear_2.forward(silu(self.linear_1.forward(x)))
    }
}
