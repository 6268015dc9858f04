//! Euler ancestral: a port of diffusers 0.42 `schedulers/scheduling_euler_ancestral_discrete.py`
//! (`EulerAncestralDiscreteScheduler`), itself k-diffusion's `sample_euler_ancestral` (Katherine
//! Crowson): an Euler step down to `sigma_down`, then fresh noise back up to `sigma_next`.
//!
//! ```text
//! x0         = x - sigma * eps   |   out * (-sigma / sqrt(sigma^2 + 1)) + x / (sigma^2 + 1)  (v)
//! sigma_up   = sqrt(sigma_next^2 * (sigma^2 - sigma_next^2) / sigma^2)
//! sigma_down = sqrt(sigma_next^2 - sigma_up^2)
//! x'         = x + (x - x0) / sigma * (sigma_down - sigma) + z * sigma_up,   z ~ N(0, I)
//! ```
//!
//! The class has no Karras/exponential sigmas and no `final_sigmas_type` (the last sigma is 0);
//! those config keys are ignored, as diffusers' `from_config` ignores them. diffusers raises
//! `NotImplementedError` for `prediction_type = "sample"`; so do we (as a config error).

use burn::prelude::*;

use super::euler::{k_init_noise_sigma, k_x0_coefficients};
use super::tables;
use super::{
    add_noise_at_sigma, check_index, check_shape, invalid, lin, scale_by_sigma, Common, LazyLin, Prediction, Scheduler,
    SchedulerConfig, SchedulerError, SchedulerKind,
};

/// diffusers `EulerAncestralDiscreteScheduler` after `set_timesteps(n)`.
#[derive(Debug, Clone)]
pub struct EulerAncestralDiscreteScheduler {
    common: Common,
    timesteps: Vec<f64>,
    /// float32 values, one more than the timesteps, the last 0.
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    last_x0: Option<LazyLin>,
}

impl EulerAncestralDiscreteScheduler {
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self, SchedulerError> {
        let common = Common::new(config, SchedulerKind::EulerAncestral, num_inference_steps)?;
        if common.prediction == Prediction::Sample {
            return Err(invalid(
                "prediction_type",
                "\"sample\" is not implemented for euler-a (diffusers raises NotImplementedError too); use euler, ddim or dpm++2m",
            ));
        }
        let mut alphas_cumprod = common.alphas_cumprod.clone();
        if config.rescale_betas_zero_snr {
            *alphas_cumprod.last_mut().expect("num_train_timesteps >= 2") = 2f32.powi(-24);
        }
        let train_sigmas = tables::sigma_table(&alphas_cumprod);
        let timesteps =
            tables::euler_timesteps(common.spacing, common.train_steps, num_inference_steps, common.steps_offset);
        common.check_timesteps(&timesteps)?;
        let mut sigmas: Vec<f64> =
            timesteps.iter().map(|&t| tables::np_interp_index(t, &train_sigmas) as f32 as f64).collect();
        sigmas.push(0.0);
        let init_noise_sigma = k_init_noise_sigma(&sigmas, common.spacing);
        Ok(EulerAncestralDiscreteScheduler { common, timesteps, sigmas, init_noise_sigma, last_x0: None })
    }
}

impl Scheduler for EulerAncestralDiscreteScheduler {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::EulerAncestral
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    /// `sample / sqrt(sigma^2 + 1)`.
    fn scale_model_input(&self, sample: Tensor<4>, step_index: usize) -> Tensor<4> {
        scale_by_sigma(sample, &self.sigmas, step_index)
    }

    fn needs_noise(&self) -> bool {
        true
    }

    fn step(
        &mut self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
        noise: Option<Tensor<4>>,
    ) -> Result<Tensor<4>, SchedulerError> {
        check_index(step_index, self.timesteps.len())?;
        check_shape("model_output", &model_output, &sample)?;
        let noise = noise.ok_or(SchedulerError::MissingNoise { scheduler: "euler-a" })?;
        check_shape("noise", &noise, &sample)?;
        let sigma_from = self.sigmas[step_index];
        let sigma_to = self.sigmas[step_index + 1];
        let sigma_up =
            (sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to) / (sigma_from * sigma_from)).sqrt();
        let sigma_down = (sigma_to * sigma_to - sigma_up * sigma_up).max(0.0).sqrt();
        // 1. x0; 2. d = (x - x0) / sigma; x' = x + d * (sigma_down - sigma) + z * sigma_up
        let (cs, co) = k_x0_coefficients(self.common.prediction, sigma_from);
        let k = (sigma_down - sigma_from) / sigma_from;
        let prev = lin(&[(&sample, 1.0 + k * (1.0 - cs)), (&model_output, -k * co), (&noise, sigma_up)]);
        self.last_x0 = Some(LazyLin(vec![(sample, cs), (model_output, co)]));
        Ok(prev)
    }

    fn pred_original_sample(&self) -> Option<Tensor<4>> {
        self.last_x0.as_ref().map(LazyLin::eval)
    }

    /// `x0 + noise * sigma` at step `step_index`.
    fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, step_index: usize) -> Result<Tensor<4>, SchedulerError> {
        add_noise_at_sigma(original, noise, &self.sigmas, self.timesteps.len(), step_index)
    }
}
