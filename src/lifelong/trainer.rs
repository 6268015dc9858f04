//! The model a lesson trains through: the frozen base on an autodiff device, its tokenizer and
//! its training noise schedule; predictions with and without the adapter.

use burn::prelude::*;

use super::adapter::Adapter;
use crate::error::{Error, Result};
use crate::loader::LoadedModel;
use crate::rng::Rng;
use crate::scheduler::{self, Prediction};

/// The frozen base model on an autodiff device and its training noise schedule.
pub struct Trainer {
    pub model: LoadedModel,
    pub device: Device,
    prediction: Prediction,
    alphas_cumprod: Vec<f32>,
}

impl Trainer {
    /// `model` must have been loaded on `device` (an autodiff device); its weights are frozen.
    pub fn new(mut model: LoadedModel, device: Device) -> Result<Self> {
        let (prediction, alphas_cumprod) = scheduler::noise_schedule(&model.scheduler_config)?;
        if prediction == Prediction::Sample {
            return Err(Error::InvalidInput("lessons support epsilon and v_prediction models, not prediction_type \"sample\"".into()));
        }
        model.unet = model.unet.no_grad();
        model.text_encoder = model.text_encoder.no_grad();
        model.vae = model.vae.no_grad();
        Ok(Self { model, device, prediction, alphas_cumprod })
    }

    /// Token ids of prompts, one row each (the adapter's concept tokens must be registered).
    pub fn ids(&self, prompts: &[&str]) -> Result<Vec<Vec<i64>>> {
        prompts.iter().map(|p| Ok(self.model.tokenizer.encode(p)?.ids)).collect()
    }

    /// Noised latents, the regression target and the timesteps for `x0` `[b, c, h, w]`.
    pub(super) fn noise(&self, x0: Tensor<4>, rng: &mut Rng) -> (Tensor<4>, Tensor<4>, Vec<f32>) {
        let [b, ..] = x0.dims();
        let t: Vec<usize> = (0..b).map(|_| (rng.uniform() * self.timesteps() as f64) as usize % self.timesteps()).collect();
        self.noise_at(x0, &t, rng)
    }

    /// Training timesteps: the schedule's length.
    pub(super) fn timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// As [`noise`](Self::noise), at the given timesteps (one per row of `x0`).
    pub(super) fn noise_at(&self, x0: Tensor<4>, t: &[usize], rng: &mut Rng) -> (Tensor<4>, Tensor<4>, Vec<f32>) {
        let [b, c, h, w] = x0.dims();
        let noise = Tensor::<4>::from_data(TensorData::new(rng.normal_vec(b * c * h * w), [b, c, h, w]), &self.device);
        let coef = |f: &dyn Fn(f32) -> f32| {
            let v: Vec<f32> = t.iter().map(|&i| f(self.alphas_cumprod[i])).collect();
            Tensor::<4>::from_data(TensorData::new(v, [b, 1, 1, 1]), &self.device)
        };
        let (sa, sb) = (coef(&|a| a.sqrt()), coef(&|a| (1.0 - a).sqrt()));
        let x_t = x0.clone() * sa.clone() + noise.clone() * sb.clone();
        // v = sqrt(a) * noise - sqrt(1 - a) * x0 (diffusers DDPMScheduler.get_velocity).
        let target = match self.prediction {
            Prediction::Velocity => noise * sa - x0 * sb,
            _ => noise,
        };
        (x_t, target, t.iter().map(|&i| i as f32).collect())
    }

    /// The base UNet's prediction (no LoRA, no gradients), the prompt encoded with `adapter`'s
    /// concept embeddings: the target that holds a prediction where pretraining left it.
    pub fn predict_base(&self, adapter: &Adapter, x_t: Tensor<4>, t: &[f32], ids: &[Vec<i64>]) -> Result<Tensor<4>> {
        let context = adapter.encode_ids(&self.model.text_encoder, ids, &self.device)?.detach();
        Ok(self.model.unet.forward_timesteps(x_t.detach(), t, &context).detach())
    }

    /// The UNet's prediction with `adapter` in place.
    pub fn predict(&self, adapter: &Adapter, x_t: Tensor<4>, t: &[f32], ids: &[Vec<i64>]) -> Result<Tensor<4>> {
        let context = adapter.encode_ids(&self.model.text_encoder, ids, &self.device)?;
        let unet = adapter.apply_unet(&self.model.unet)?;
        // `Param::from_tensor` marks the LoRA as requiring gradients; for a frozen teacher that
        // would record a graph no backward ever consumes, and keep every step's activations alive.
        let unet = if adapter.is_trainable() { unet } else { unet.no_grad() };
        Ok(unet.forward_timesteps(x_t, t, &context))
    }
}
