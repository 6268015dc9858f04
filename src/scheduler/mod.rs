//! Diffusion schedulers: the update rule that turns the UNet's output into the next latents.
//!
//! Four samplers, each a port of the diffusers 0.42 class of the same name (cited per equation in
//! the files):
//!
//! | [`SchedulerKind`]  | CLI name   | diffusers class                     | file                  |
//! |--------------------|------------|-------------------------------------|-----------------------|
//! | `Ddim`             | `ddim`     | `DDIMScheduler`                     | [`ddim`]              |
//! | `Euler`            | `euler`    | `EulerDiscreteScheduler`            | [`euler`]             |
//! | `EulerAncestral`   | `euler-a`  | `EulerAncestralDiscreteScheduler`   | [`euler_ancestral`]   |
//! | `DpmSolverMultistep` | `dpm++2m` | `DPMSolverMultistepScheduler`      | [`dpm_solver`]        |
//!
//! Usage (what [`crate::pipeline`] does):
//! ```ignore
//! let mut s = scheduler::create(&config, None, steps)?;
//! let mut x = noise.mul_scalar(s.init_noise_sigma());
//! for (i, &t) in s.timesteps().to_vec().iter().enumerate() {
//!     let eps = unet(s.scale_model_input(x.clone(), i), t);
//!     let noise = s.needs_noise().then(|| draw_normal(x.dims()));
//!     x = s.step(eps, i, x, noise)?;
//! }
//! ```
//!
//! Precision: timestep and sigma tables are computed on the host in f64, reproducing the float32
//! roundings diffusers (PyTorch/NumPy) applies (see [`tables`]); each step is a handful of
//! scalar-times-tensor operations in the tensor's own dtype (f32) on its device, with the scalar
//! coefficients computed in f64.

pub mod ddim;
pub mod dpm_solver;
pub mod euler;
pub mod euler_ancestral;
mod common;
mod config;
mod tables;

use std::fmt;
use std::str::FromStr;

use burn::prelude::*;

pub use config::SchedulerConfig;
pub use ddim::DdimScheduler;
pub use dpm_solver::DpmSolverMultistepScheduler;
pub use euler::EulerDiscreteScheduler;
pub use euler_ancestral::EulerAncestralDiscreteScheduler;

pub(crate) use common::{add_noise_at_sigma, check_index, check_shape, lin, scale_by_sigma, Common, LazyLin};

// ------------------------------------------------------------------------------------------------
// errors
// ------------------------------------------------------------------------------------------------

/// What can go wrong building or stepping a scheduler. Every message says what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchedulerError {
    /// A scheduler name (CLI `--scheduler`) we do not know.
    #[error("unknown scheduler `{name}`; choose one of: ddim, euler, euler-a, dpm++2m")]
    UnknownScheduler { name: String },

    /// `_class_name` of scheduler_config.json is a diffusers class we do not implement.
    #[error(
        "scheduler class `{class_name}` is not supported; supported classes are DDIMScheduler, EulerDiscreteScheduler, \
         EulerAncestralDiscreteScheduler and DPMSolverMultistepScheduler (PNDMScheduler and LMSDiscreteScheduler are \
         mapped to dpm++2m and euler); pick one explicitly with --scheduler ddim|euler|euler-a|dpm++2m"
    )]
    UnsupportedClass { class_name: String },

    /// A config value that is malformed, out of range or not implemented.
    #[error("scheduler config: `{key}`: {reason}")]
    InvalidConfig { key: String, reason: String },

    /// `num_inference_steps` out of range.
    #[error("{steps} inference steps: {reason}")]
    InvalidSteps { steps: usize, reason: String },

    /// `step_index` past the end of the schedule.
    #[error("step index {step_index} is out of range: the schedule has {num_steps} steps (indices 0..{num_steps})")]
    StepOutOfRange { step_index: usize, num_steps: usize },

    /// A stochastic scheduler was stepped without its noise tensor.
    #[error("the {scheduler} scheduler is stochastic: step() needs a standard-normal noise tensor shaped like the sample (needs_noise() is true)")]
    MissingNoise { scheduler: &'static str },

    /// Tensors that must have the sample's shape do not.
    #[error("{what} has shape {found:?} but the sample has shape {expected:?}")]
    ShapeMismatch { what: &'static str, expected: Vec<usize>, found: Vec<usize> },
}


fn invalid(key: &str, reason: impl Into<String>) -> SchedulerError {
    SchedulerError::InvalidConfig { key: key.into(), reason: reason.into() }
}

// ------------------------------------------------------------------------------------------------
// kinds
// ------------------------------------------------------------------------------------------------

/// The samplers this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// DDIM (Song et al. 2021), deterministic (eta = 0).
    Ddim,
    /// Euler (Karras et al. 2022, algorithm 2 without churn).
    Euler,
    /// Euler ancestral (k-diffusion `sample_euler_ancestral`); stochastic.
    EulerAncestral,
    /// DPM-Solver++(2M) (Lu et al. 2022, algorithm 2) and its variants.
    DpmSolverMultistep,
}

impl SchedulerKind {
    pub const ALL: [SchedulerKind; 4] =
        [SchedulerKind::Ddim, SchedulerKind::Euler, SchedulerKind::EulerAncestral, SchedulerKind::DpmSolverMultistep];

    /// The CLI name: `ddim`, `euler`, `euler-a`, `dpm++2m`.
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "ddim",
            SchedulerKind::Euler => "euler",
            SchedulerKind::EulerAncestral => "euler-a",
            SchedulerKind::DpmSolverMultistep => "dpm++2m",
        }
    }

    /// The diffusers class this kind ports.
    pub fn class_name(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "DDIMScheduler",
            SchedulerKind::Euler => "EulerDiscreteScheduler",
            SchedulerKind::EulerAncestral => "EulerAncestralDiscreteScheduler",
            SchedulerKind::DpmSolverMultistep => "DPMSolverMultistepScheduler",
        }
    }

    /// The kind that runs a config of diffusers class `class_name`.
    ///
    /// Two classes we do not implement are mapped to the closest one we do:
    /// * `PNDMScheduler` (SD-1.x's default; with `skip_prk_steps` it is PLMS, a 4th-order linear
    ///   multistep method on the noise prediction) -> `DpmSolverMultistep`: the deterministic
    ///   high-order multistep solver we have, and the one diffusers' docs suggest swapping SD-1.5's
    ///   PNDM for (better images in ~20 steps).
    /// * `LMSDiscreteScheduler` (k-diffusion's linear multistep in sigma space) -> `Euler`: the
    ///   same sigma schedule, `init_noise_sigma` and `scale_model_input`; only the update's order
    ///   differs (LMS = multistep, Euler = its first-order member).
    ///
    /// Like diffusers' `from_config`, the mapped class then reads the same config (betas,
    /// prediction type, spacing, steps_offset), with its own defaults for missing keys.
    pub fn from_class_name(class_name: &str) -> Result<Self, SchedulerError> {
        match class_name {
            "DDIMScheduler" => Ok(SchedulerKind::Ddim),
            "EulerDiscreteScheduler" => Ok(SchedulerKind::Euler),
            "EulerAncestralDiscreteScheduler" => Ok(SchedulerKind::EulerAncestral),
            "DPMSolverMultistepScheduler" => Ok(SchedulerKind::DpmSolverMultistep),
            "PNDMScheduler" => Ok(SchedulerKind::DpmSolverMultistep),
            "LMSDiscreteScheduler" => Ok(SchedulerKind::Euler),
            other => Err(SchedulerError::UnsupportedClass { class_name: other.to_string() }),
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerKind {
    type Err = SchedulerError;

    /// `ddim`, `euler`, `euler-a`, `dpm++2m` (case-insensitive; also `euler_a`, `euler-ancestral`,
    /// `dpmpp2m`, `dpm++`, `dpm-solver++` and the diffusers class names).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Ok(kind) = Self::from_class_name(t) {
            return Ok(kind);
        }
        match t.to_ascii_lowercase().replace('_', "-").as_str() {
            "ddim" => Ok(SchedulerKind::Ddim),
            "euler" => Ok(SchedulerKind::Euler),
            "euler-a" | "euler-ancestral" | "eulera" => Ok(SchedulerKind::EulerAncestral),
            "dpm++2m" | "dpmpp2m" | "dpm++" | "dpm-solver++" | "dpmsolver++" | "dpm++-2m" | "dpmpp-2m" => {
                Ok(SchedulerKind::DpmSolverMultistep)
            }
            _ => Err(SchedulerError::UnknownScheduler { name: s.to_string() }),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// the trait
// ------------------------------------------------------------------------------------------------

/// A scheduler with its timesteps set (diffusers: constructed + `set_timesteps(n)`).
///
/// Steps are addressed by index into [`Scheduler::timesteps`], not by timestep value (diffusers
/// looks the index up from the value; timesteps can repeat, indices cannot). Multistep schedulers
/// keep their history between calls: call `step` with consecutive indices; an index that does not
/// follow the previous call (e.g. 0 again) starts a new chain, like a fresh diffusers scheduler with
/// `set_begin_index(step_index)`.
pub trait Scheduler: Send {
    /// Which sampler this is.
    fn kind(&self) -> SchedulerKind;

    /// Timesteps fed to the UNet, in order (f64; diffusers' `scheduler.timesteps`, whose values
    /// are integers or float32 numbers).
    fn timesteps(&self) -> &[f64];

    /// diffusers' `scheduler.sigmas` (one more than the timesteps; the last is the final sigma),
    /// for sigma-based schedulers; `None` for DDIM.
    fn sigmas(&self) -> Option<&[f64]> {
        None
    }

    /// Standard deviation of the initial noise: multiply N(0, 1) latents by this.
    fn init_noise_sigma(&self) -> f64;

    /// diffusers' `scale_model_input` for step `step_index`: what the UNet sees. An index past the
    /// end uses the final sigma (no panic).
    fn scale_model_input(&self, sample: Tensor<4>, step_index: usize) -> Tensor<4>;

    /// One denoising step from timestep `timesteps()[step_index]` to the next: returns diffusers'
    /// `prev_sample`. `noise` (standard normal, the sample's shape) is required iff
    /// [`Scheduler::needs_noise`]; it is ignored otherwise. Errors instead of panicking on a bad
    /// index, mismatched shapes or missing noise.
    fn step(
        &mut self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
        noise: Option<Tensor<4>>,
    ) -> Result<Tensor<4>, SchedulerError>;

    /// Whether [`Scheduler::step`] needs a noise tensor (ancestral / SDE samplers).
    fn needs_noise(&self) -> bool {
        false
    }

    /// diffusers' `pred_original_sample` of the last `step` (the model's current estimate of the
    /// clean latents), for cheap previews; `None` before the first step.
    fn pred_original_sample(&self) -> Option<Tensor<4>>;

    /// diffusers' `add_noise` at the noise level of step `step_index` (img2img starts at that step
    /// with this; training uses it as the forward process).
    fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, step_index: usize) -> Result<Tensor<4>, SchedulerError>;
}

/// Builds the scheduler for `config` with `num_inference_steps` steps. `kind` `None` runs the
/// config's own `_class_name` (see [`SchedulerKind::from_class_name`]); `Some(kind)` runs another
/// sampler on the same noise schedule, like diffusers' `KindScheduler.from_config(config)`.
pub fn create(
    config: &SchedulerConfig,
    kind: Option<SchedulerKind>,
    num_inference_steps: usize,
) -> Result<Box<dyn Scheduler>, SchedulerError> {
    let kind = match kind {
        Some(k) => k,
        None if config.class_name.is_empty() => {
            return Err(invalid(
                "_class_name",
                "missing from the scheduler config; add it or choose a scheduler with --scheduler ddim|euler|euler-a|dpm++2m",
            ))
        }
        None => SchedulerKind::from_class_name(&config.class_name)?,
    };
    Ok(match kind {
        SchedulerKind::Ddim => Box::new(DdimScheduler::new(config, num_inference_steps)?),
        SchedulerKind::Euler => Box::new(EulerDiscreteScheduler::new(config, num_inference_steps)?),
        SchedulerKind::EulerAncestral => Box::new(EulerAncestralDiscreteScheduler::new(config, num_inference_steps)?),
        SchedulerKind::DpmSolverMultistep => Box::new(DpmSolverMultistepScheduler::new(config, num_inference_steps)?),
    })
}

// ------------------------------------------------------------------------------------------------
// shared pieces
// ------------------------------------------------------------------------------------------------

/// What the model predicts (`prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    Epsilon,
    /// `"v_prediction"`.
    Velocity,
    Sample,
}

impl Prediction {
    fn parse(s: &str) -> Result<Self, SchedulerError> {
        match s {
            "epsilon" => Ok(Prediction::Epsilon),
            "v_prediction" => Ok(Prediction::Velocity),
            "sample" => Ok(Prediction::Sample),
            other => Err(invalid(
                "prediction_type",
                format!("`{other}` is not supported; use \"epsilon\", \"v_prediction\" or \"sample\""),
            )),
        }
    }
}

/// The training-time noise schedule of `config`: what the model predicts and `alphas_cumprod` per
/// training timestep (diffusers' `DDPMScheduler.add_noise` uses the same table), for lessons.
pub fn noise_schedule(config: &SchedulerConfig) -> Result<(Prediction, Vec<f32>), SchedulerError> {
    let common = Common::new(config, SchedulerKind::Ddim, 1)?;
    Ok((common.prediction, common.alphas_cumprod))
}
