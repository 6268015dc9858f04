//! Euler: a port of diffusers 0.42 `schedulers/scheduling_euler_discrete.py`
//! (`EulerDiscreteScheduler`), i.e. Karras et al. 2022 ("Elucidating the Design Space of
//! Diffusion-Based Generative Models") algorithm 2 with `s_churn = 0` (no noise injection: the
//! diffusers `step` defaults), in the variance-exploding parametrisation
//! `x = x0 + sigma * eps`, `sigma_t = sqrt((1 - a_t) / a_t)`.
//!
//! ```text
//! scale_model_input:  x / sqrt(sigma^2 + 1)                  (c_in of Karras et al. table 1)
//! x0  = x - sigma * eps                                      (epsilon)
//!     = out * (-sigma / sqrt(sigma^2 + 1)) + x / (sigma^2 + 1)  (v-prediction: c_out, c_skip)
//! d   = (x - x0) / sigma                                     (eq. 4, the ODE derivative)
//! x'  = x + d * (sigma_next - sigma)                         (Euler step, algorithm 2 line 8)
//! ```
//!
//! Sigmas: the training sigmas interpolated (`np.interp`) at the timesteps, optionally replaced
//! by Karras et al. eq. 5 sigmas (`use_karras_sigmas`) or log-uniform ones
//! (`use_exponential_sigmas`), then the final sigma (0 or the smallest training sigma).

use burn::prelude::*;

use super::tables::{self, Spacing};
use super::{
    add_noise_at_sigma, check_index, check_shape, invalid, lin, scale_by_sigma, Common, LazyLin, Prediction, Scheduler,
    SchedulerConfig, SchedulerError, SchedulerKind,
};

/// How the sigma schedule is chosen (`use_*_sigmas`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SigmaSchedule {
    Interpolated,
    Karras,
    Exponential,
}

/// Reads and validates the `use_*_sigmas` flags.
pub(crate) fn sigma_schedule(config: &SchedulerConfig) -> Result<SigmaSchedule, SchedulerError> {
    let n = [config.use_karras_sigmas, config.use_exponential_sigmas, config.use_beta_sigmas]
        .iter()
        .filter(|b| **b)
        .count();
    if n > 1 {
        return Err(invalid(
            "use_karras_sigmas",
            "only one of use_karras_sigmas, use_exponential_sigmas and use_beta_sigmas can be true",
        ));
    }
    if config.use_beta_sigmas {
        return Err(invalid(
            "use_beta_sigmas",
            "beta sigmas are not supported; set it to false (use_karras_sigmas is similar)",
        ));
    }
    Ok(if config.use_karras_sigmas {
        SigmaSchedule::Karras
    } else if config.use_exponential_sigmas {
        SigmaSchedule::Exponential
    } else {
        SigmaSchedule::Interpolated
    })
}

/// Reads `final_sigmas_type`: `true` for `"sigma_min"`, `false` for `"zero"`.
pub(crate) fn final_sigma_is_min(config: &SchedulerConfig) -> Result<bool, SchedulerError> {
    match config.final_sigmas_type.as_str() {
        "zero" => Ok(false),
        "sigma_min" => Ok(true),
        other => {
            Err(invalid("final_sigmas_type", format!("`{other}` is not supported; use \"zero\" or \"sigma_min\"")))
        }
    }
}

/// `init_noise_sigma` of the k-diffusion style schedulers, in float32 like diffusers:
/// the largest sigma for "linspace"/"trailing" spacing, `sqrt(max^2 + 1)` for "leading".
pub(crate) fn k_init_noise_sigma(sigmas: &[f64], spacing: Spacing) -> f64 {
    let max = sigmas.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s as f32));
    match spacing {
        Spacing::Linspace | Spacing::Trailing => max as f64,
        Spacing::Leading => (max * max + 1.0).sqrt() as f64,
    }
}

/// diffusers `EulerDiscreteScheduler` after `set_timesteps(n)`.
#[derive(Debug, Clone)]
pub struct EulerDiscreteScheduler {
    common: Common,
    timesteps: Vec<f64>,
    /// float32 values, one more than the timesteps.
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    last_x0: Option<LazyLin>,
}

impl EulerDiscreteScheduler {
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self, SchedulerError> {
        let common = Common::new(config, SchedulerKind::Euler, num_inference_steps)?;
        let schedule = sigma_schedule(config)?;
        let final_min = final_sigma_is_min(config)?;
        if config.interpolation_type != "linear" {
            return Err(invalid(
                "interpolation_type",
                format!("`{}` is not supported; use \"linear\"", config.interpolation_type),
            ));
        }
        let continuous = match config.timestep_type.as_str() {
            "discrete" => false,
            "continuous" => common.prediction == Prediction::Velocity,
            other => {
                return Err(invalid(
                    "timestep_type",
                    format!("`{other}` is not supported; use \"discrete\" or \"continuous\""),
                ))
            }
        };
        for (key, v) in [("sigma_min", config.sigma_min), ("sigma_max", config.sigma_max)] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return Err(invalid(key, format!("is {v}; it must be a positive number (or null)")));
                }
            }
        }

        let mut alphas_cumprod = common.alphas_cumprod.clone();
        if config.rescale_betas_zero_snr {
            // "Close to 0 without being 0 so first sigma is not inf"
            *alphas_cumprod.last_mut().expect("num_train_timesteps >= 2") = 2f32.powi(-24);
        }
        let train_sigmas = tables::sigma_table(&alphas_cumprod);
        let log_sigmas = tables::log_sigma_table(&train_sigmas);

        let mut timesteps =
            tables::euler_timesteps(common.spacing, common.train_steps, num_inference_steps, common.steps_offset);
        common.check_timesteps(&timesteps)?;
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| tables::np_interp_index(t, &train_sigmas)).collect();
        if schedule != SigmaSchedule::Interpolated {
            // diffusers reads config.sigma_min / sigma_max here, else the ends of the schedule.
            let s_min = config.sigma_min.unwrap_or(sigmas[sigmas.len() - 1]);
            let s_max = config.sigma_max.unwrap_or(sigmas[0]);
            sigmas = match schedule {
                SigmaSchedule::Karras => tables::karras_sigmas(s_min, s_max, num_inference_steps),
                _ => tables::exponential_sigmas(s_min, s_max, num_inference_steps),
            };
            timesteps = sigmas.iter().map(|&s| tables::sigma_to_t(s, &log_sigmas) as f32 as f64).collect();
        }
        let sigma_last = if final_min { train_sigmas[0] as f64 } else { 0.0 };
        sigmas.push(sigma_last);
        let sigmas: Vec<f64> = sigmas.into_iter().map(|s| s as f32 as f64).collect();
        if continuous {
            // "TODO: Support the full EDM scalings": timesteps = 0.25 * log(sigma), float32.
            timesteps = sigmas[..sigmas.len() - 1].iter().map(|&s| ((s as f32).ln() * 0.25) as f64).collect();
        }
        let init_noise_sigma = k_init_noise_sigma(&sigmas, common.spacing);
        Ok(EulerDiscreteScheduler { common, timesteps, sigmas, init_noise_sigma, last_x0: None })
    }
}

/// `(c_sample, c_output)` with `x0 = c_sample * x + c_output * out` at noise level `sigma`
/// (k-diffusion's denoiser `x0 = c_skip x + c_out F`).
pub(crate) fn k_x0_coefficients(prediction: Prediction, sigma: f64) -> (f64, f64) {
    match prediction {
        Prediction::Epsilon => (1.0, -sigma),
        Prediction::Velocity => (1.0 / (sigma * sigma + 1.0), -sigma / (sigma * sigma + 1.0).sqrt()),
        Prediction::Sample => (0.0, 1.0),
    }
}

impl Scheduler for EulerDiscreteScheduler {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Euler
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

    fn step(
        &mut self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
        _noise: Option<Tensor<4>>,
    ) -> Result<Tensor<4>, SchedulerError> {
        check_index(step_index, self.timesteps.len())?;
        check_shape("model_output", &model_output, &sample)?;
        let sigma = self.sigmas[step_index];
        // s_churn = 0: gamma = 0 and sigma_hat = sigma.
        let sigma_hat = sigma;
        let dt = self.sigmas[step_index + 1] - sigma_hat;
        // 1. x0; 2. d = (x - x0) / sigma_hat; x' = x + d * dt, folded into (x, out) coefficients.
        let (cs, co) = k_x0_coefficients(self.common.prediction, sigma);
        let k = dt / sigma_hat;
        let prev = lin(&[(&sample, 1.0 + k * (1.0 - cs)), (&model_output, -k * co)]);
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
