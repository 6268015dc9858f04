//! DDIM: "Denoising Diffusion Implicit Models" (Song, Meng & Ermon 2021), a port of diffusers 0.42
//! `schedulers/scheduling_ddim.py` (`DDIMScheduler`).
//!
//! One step from timestep `t` to `t_prev = t - num_train_timesteps // num_inference_steps`
//! (diffusers uses that formula whatever the spacing), with `a_t = alphas_cumprod[t]`:
//!
//! ```text
//! x0  = (x_t - sqrt(1 - a_t) * eps) / sqrt(a_t)                       (DDIM eq. 12, "predicted x0")
//! x_{t-1} = sqrt(a_prev) * x0 + sqrt(1 - a_prev - s_t^2) * eps + s_t * z   (eq. 12)
//! s_t = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev)     (eq. 16)
//! ```
//!
//! `a_prev` is `alphas_cumprod[t_prev]`, or for `t_prev < 0` 1 (`set_alpha_to_one`) or
//! `alphas_cumprod[0]`. v-prediction: `x0 = sqrt(a_t) x_t - sqrt(1-a_t) v`,
//! `eps = sqrt(a_t) v + sqrt(1-a_t) x_t` (Salimans & Ho 2022, sec. 2.4 of Imagen Video);
//! sample prediction: `x0 = out`, `eps = (x_t - sqrt(a_t) x0) / sqrt(1-a_t)`.
//! `clip_sample` clamps x0 to `[-clip_sample_range, clip_sample_range]` before the update
//! (`use_clipped_model_output = False`, diffusers' default, so eps is not re-derived).

use burn::prelude::*;

use super::tables::{self};
use super::{
    check_index, check_shape, invalid, lin, Common, LazyLin, Prediction, Scheduler, SchedulerConfig, SchedulerError,
    SchedulerKind,
};

/// diffusers `DDIMScheduler` after `set_timesteps(n)`.
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    common: Common,
    num_inference_steps: usize,
    timesteps: Vec<f64>,
    final_alpha_cumprod: f64,
    clip_sample: Option<f64>,
    eta: f64,
    last_x0: Option<LazyLin>,
}

impl DdimScheduler {
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self, SchedulerError> {
        let common = Common::new(config, SchedulerKind::Ddim, num_inference_steps)?;
        let clip_sample = if config.clip_sample {
            let r = config.clip_sample_range;
            if !(r.is_finite() && r > 0.0) {
                return Err(invalid("clip_sample_range", format!("is {r}; it must be a positive number")));
            }
            Some(r)
        } else {
            None
        };
        // "At every step in ddim, we are looking into the previous alphas_cumprod. For the final
        // step, there is no previous alphas_cumprod because we are already at 0."
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { common.alphas_cumprod[0] as f64 };
        let timesteps =
            tables::ddim_timesteps(common.spacing, common.train_steps, num_inference_steps, common.steps_offset);
        common.check_timesteps(&timesteps)?;
        Ok(DdimScheduler {
            common,
            num_inference_steps,
            timesteps,
            final_alpha_cumprod,
            clip_sample,
            eta: 0.0,
            last_x0: None,
        })
    }

    /// DDIM's eta (eq. 16): 0 (the default, what diffusers pipelines use) is deterministic DDIM,
    /// 1 is DDPM-like. With `eta > 0` the scheduler [`Scheduler::needs_noise`]. Negative or
    /// non-finite values are rejected.
    pub fn set_eta(&mut self, eta: f64) -> Result<(), SchedulerError> {
        if !(eta.is_finite() && eta >= 0.0) {
            return Err(invalid("eta", format!("is {eta}; it must be a non-negative number (0 = deterministic DDIM)")));
        }
        self.eta = eta;
        Ok(())
    }

    /// The float32 `betas` over training timesteps, as diffusers' `scheduler.betas`.
    pub fn betas(&self) -> &[f32] {
        &self.common.betas
    }

    /// The float32 `alphas_cumprod` over training timesteps, as diffusers' `scheduler.alphas_cumprod`.
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.common.alphas_cumprod
    }

    pub fn eta(&self) -> f64 {
        self.eta
    }

    fn alpha_prod(&self, t: f64) -> f64 {
        self.common.alphas_cumprod[t as usize] as f64
    }

    /// `alpha_prod_t_prev` for a step from timestep `t`.
    fn alpha_prod_prev(&self, t: f64) -> f64 {
        let prev = t as i64 - (self.common.train_steps / self.num_inference_steps) as i64;
        if prev >= 0 {
            self.common.alphas_cumprod[prev as usize] as f64
        } else {
            self.final_alpha_cumprod
        }
    }
}

impl Scheduler for DdimScheduler {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Ddim
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// DDIM does not scale the model input.
    fn scale_model_input(&self, sample: Tensor<4>, _step_index: usize) -> Tensor<4> {
        sample
    }

    fn needs_noise(&self) -> bool {
        self.eta > 0.0
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
        let t = self.timesteps[step_index];
        // 2. alphas, betas
        let a_t = self.alpha_prod(t);
        let a_prev = self.alpha_prod_prev(t);
        let b_t = 1.0 - a_t;
        let (sa, sb) = (a_t.sqrt(), b_t.sqrt());
        // 3. "predicted x_0" of eq. 12, and the noise direction, as combinations of (x_t, output)
        let (x0_c, eps_c) = match self.common.prediction {
            Prediction::Epsilon => ((1.0 / sa, -sb / sa), (0.0, 1.0)),
            Prediction::Sample => ((0.0, 1.0), (1.0 / sb, -sa / sb)),
            Prediction::Velocity => ((sa, -sb), (sb, sa)),
        };
        // 5. sigma_t(eta), eq. 16
        let variance = ((1.0 - a_prev) / b_t) * (1.0 - a_t / a_prev);
        let std_dev_t = self.eta * variance.sqrt();
        // 6. "direction pointing to x_t" of eq. 12
        let dir = (1.0 - a_prev - std_dev_t * std_dev_t).sqrt();
        let sap = a_prev.sqrt();

        let x0 = LazyLin(vec![(sample.clone(), x0_c.0), (model_output.clone(), x0_c.1)]);
        // 7. x_{t-1} without the random noise of eq. 12
        let mut prev = match self.clip_sample {
            // 4. clip "predicted x_0"
            Some(r) => {
                let x0 = x0.eval().clamp(-r, r);
                let out = lin(&[(&x0, sap), (&sample, dir * eps_c.0), (&model_output, dir * eps_c.1)]);
                self.last_x0 = Some(LazyLin(vec![(x0, 1.0)]));
                out
            }
            None => {
                let out =
                    lin(&[(&sample, sap * x0_c.0 + dir * eps_c.0), (&model_output, sap * x0_c.1 + dir * eps_c.1)]);
                self.last_x0 = Some(x0);
                out
            }
        };
        if self.eta > 0.0 {
            let noise = noise.ok_or(SchedulerError::MissingNoise { scheduler: "ddim (eta > 0)" })?;
            check_shape("noise", &noise, &sample)?;
            prev = prev + noise.mul_scalar(std_dev_t);
        }
        Ok(prev)
    }

    fn pred_original_sample(&self) -> Option<Tensor<4>> {
        self.last_x0.as_ref().map(LazyLin::eval)
    }

    /// `sqrt(a_t) * x0 + sqrt(1 - a_t) * noise` at `t = timesteps[step_index]` (DDPM eq. 4).
    fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, step_index: usize) -> Result<Tensor<4>, SchedulerError> {
        check_index(step_index, self.timesteps.len())?;
        check_shape("noise", &noise, &original)?;
        let a = self.alpha_prod(self.timesteps[step_index]);
        Ok(lin(&[(&original, a.sqrt()), (&noise, (1.0 - a).sqrt())]))
    }
}
