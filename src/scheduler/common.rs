//! What every scheduler shares: the validated training noise schedule (`Common`) and the small
//! tensor helpers of their steps (checked indices and shapes, linear combinations).

use burn::prelude::*;

use super::tables::{self, BetaSchedule, Spacing};
use super::{invalid, Prediction, SchedulerConfig, SchedulerError, SchedulerKind};

/// The validated noise schedule every scheduler starts from.
#[derive(Debug, Clone)]
pub(crate) struct Common {
    pub train_steps: usize,
    pub prediction: Prediction,
    pub spacing: Spacing,
    pub steps_offset: usize,
    pub beta_schedule: BetaSchedule,
    /// float32 `betas` (after the zero-SNR rescale when asked).
    pub betas: Vec<f32>,
    /// float32 `alphas_cumprod` (after the zero-SNR rescale when asked, before any 2^-24 fix-up).
    pub alphas_cumprod: Vec<f32>,
}

impl Common {
    pub(crate) fn new(config: &SchedulerConfig, kind: SchedulerKind, steps: usize) -> Result<Self, SchedulerError> {
        let train = config.num_train_timesteps;
        if train < 2 {
            return Err(invalid(
                "num_train_timesteps",
                format!("is {train}; it must be at least 2 (Stable Diffusion uses 1000)"),
            ));
        }
        if steps == 0 {
            return Err(SchedulerError::InvalidSteps {
                steps,
                reason: "use at least 1 step (20-50 is typical)".into(),
            });
        }
        if steps > train {
            return Err(SchedulerError::InvalidSteps {
                steps,
                reason: format!("the model was trained with {train} timesteps, so use at most {train} steps"),
            });
        }
        let beta_schedule = BetaSchedule::parse(&config.beta_schedule)?;
        let trained = config.trained_betas.as_deref();
        if let Some(t) = trained {
            if t.len() != train {
                return Err(invalid(
                    "trained_betas",
                    format!("has {} values but num_train_timesteps is {train}; they must match", t.len()),
                ));
            }
            if let Some(b) = t.iter().find(|b| !(b.is_finite() && **b > 0.0 && **b < 1.0)) {
                return Err(invalid("trained_betas", format!("contains {b}; every beta must be in (0, 1)")));
            }
        } else if beta_schedule != BetaSchedule::SquaredCosCapV2 {
            for (key, v) in [("beta_start", config.beta_start), ("beta_end", config.beta_end)] {
                if !(v.is_finite() && (0.0..1.0).contains(&v)) {
                    return Err(invalid(key, format!("is {v}; it must be a number in [0, 1)")));
                }
            }
            if config.beta_start == 0.0 && config.beta_end == 0.0 {
                return Err(invalid("beta_end", "beta_start and beta_end are both 0: no noise schedule"));
            }
        }
        let prediction = Prediction::parse(&config.prediction_type)?;
        let spacing = Spacing::parse(config.timestep_spacing_for(kind))?;
        if config.thresholding && matches!(kind, SchedulerKind::Ddim | SchedulerKind::DpmSolverMultistep) {
            return Err(invalid("thresholding", "dynamic thresholding is not supported (it is meant for pixel-space models, not latent diffusion); set it to false"));
        }

        let mut betas = tables::betas(beta_schedule, config.beta_start, config.beta_end, train, trained);
        if config.rescale_betas_zero_snr {
            betas = tables::rescale_zero_terminal_snr(&betas);
        }
        let alphas: Vec<f32> = betas.iter().map(|&b| 1.0 - b).collect();
        let alphas_cumprod = tables::cumprod_f32(&alphas);
        if alphas_cumprod[0].is_nan() || alphas_cumprod[0] <= 0.0 {
            return Err(invalid("beta_start", "the noise schedule is degenerate (alphas_cumprod[0] <= 0)"));
        }
        Ok(Common {
            train_steps: train,
            prediction,
            spacing,
            steps_offset: config.steps_offset,
            beta_schedule,
            betas,
            alphas_cumprod,
        })
    }

    /// Errors when a schedule reaches past the last training timestep (e.g. a huge steps_offset).
    pub(crate) fn check_timesteps(&self, timesteps: &[f64]) -> Result<(), SchedulerError> {
        let max = (self.train_steps - 1) as f64;
        if let Some(t) = timesteps.iter().find(|t| !(t.is_finite() && **t >= 0.0 && **t <= max)) {
            return Err(invalid(
                "steps_offset",
                format!("the schedule reaches timestep {t}, outside the trained range 0..={max}; use fewer steps or lower steps_offset"),
            ));
        }
        Ok(())
    }
}

pub(crate) fn check_shape(what: &'static str, t: &Tensor<4>, sample: &Tensor<4>) -> Result<(), SchedulerError> {
    let (found, expected) = (t.dims(), sample.dims());
    if found != expected {
        return Err(SchedulerError::ShapeMismatch { what, expected: expected.to_vec(), found: found.to_vec() });
    }
    Ok(())
}

/// Karras et al. 2022 input scaling shared by the Euler samplers: `sample / sqrt(sigma^2 + 1)`;
/// an index past the end uses the final sigma.
pub(crate) fn scale_by_sigma(sample: Tensor<4>, sigmas: &[f64], step_index: usize) -> Tensor<4> {
    let sigma = sigmas[step_index.min(sigmas.len() - 1)];
    sample.div_scalar((sigma * sigma + 1.0).sqrt())
}

/// The variance-exploding forward process of the sigma samplers: `x0 + noise * sigma`.
pub(crate) fn add_noise_at_sigma(
    original: Tensor<4>,
    noise: Tensor<4>,
    sigmas: &[f64],
    num_steps: usize,
    step_index: usize,
) -> Result<Tensor<4>, SchedulerError> {
    check_index(step_index, num_steps)?;
    check_shape("noise", &noise, &original)?;
    Ok(lin(&[(&original, 1.0), (&noise, sigmas[step_index])]))
}

pub(crate) fn check_index(step_index: usize, num_steps: usize) -> Result<(), SchedulerError> {
    if step_index >= num_steps {
        return Err(SchedulerError::StepOutOfRange { step_index, num_steps });
    }
    Ok(())
}

/// `sum(coef * tensor)` over `terms`, skipping zero coefficients and unit multiplies. The scalars
/// are f64; the tensor math runs in the tensors' dtype on their device.
pub(crate) fn lin(terms: &[(&Tensor<4>, f64)]) -> Tensor<4> {
    let mut acc: Option<Tensor<4>> = None;
    for &(t, c) in terms {
        if c == 0.0 {
            continue;
        }
        let term = if c == 1.0 { t.clone() } else { t.clone().mul_scalar(c) };
        acc = Some(match acc {
            None => term,
            Some(a) => a + term,
        });
    }
    acc.unwrap_or_else(|| terms[0].0.zeros_like())
}

/// A tensor kept as a linear combination, evaluated only when asked for (x0 previews).
#[derive(Debug, Clone)]
pub(crate) struct LazyLin(pub Vec<(Tensor<4>, f64)>);

impl LazyLin {
    pub(crate) fn eval(&self) -> Tensor<4> {
        let terms: Vec<(&Tensor<4>, f64)> = self.0.iter().map(|(t, c)| (t, *c)).collect();
        lin(&terms)
    }
}
