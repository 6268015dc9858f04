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
mod tables;

use std::fmt;
use std::str::FromStr;

use burn::prelude::*;
use serde::Deserialize;

pub use ddim::DdimScheduler;
pub use dpm_solver::DpmSolverMultistepScheduler;
pub use euler::EulerDiscreteScheduler;
pub use euler_ancestral::EulerAncestralDiscreteScheduler;

use tables::{BetaSchedule, Spacing};

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

impl From<SchedulerError> for crate::error::Error {
    fn from(e: SchedulerError) -> Self {
        crate::error::Error::Scheduler(e.to_string())
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> SchedulerError {
    SchedulerError::InvalidConfig { key: key.into(), reason: reason.into() }
}

// ------------------------------------------------------------------------------------------------
// config
// ------------------------------------------------------------------------------------------------

/// `scheduler/scheduler_config.json` as diffusers writes it.
///
/// Unknown keys are ignored. A key that is missing (or `null`) takes the diffusers default; like
/// diffusers' `from_config` (its `_use_default_values` rule), a missing key takes the default of the
/// class that is *built*, not of `_class_name`; that only matters for `timestep_spacing`, which is
/// therefore an `Option` (see [`SchedulerConfig::timestep_spacing_for`]).
/// Floats also accept the strings `"inf"`, `"-inf"`, `"nan"` (see [`SchedulerConfig::from_json`]
/// for the bare `-Infinity` tokens Python's `json` writes).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "RawConfig")]
pub struct SchedulerConfig {
    /// `_class_name`: the diffusers class; empty when missing.
    pub class_name: String,
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    /// `"linear"`, `"scaled_linear"` or `"squaredcos_cap_v2"`.
    pub beta_schedule: String,
    pub trained_betas: Option<Vec<f64>>,
    /// `"epsilon"`, `"v_prediction"` or `"sample"`.
    pub prediction_type: String,
    /// `"leading"`, `"trailing"` or `"linspace"`; `None` (missing): the built class's default,
    /// `"leading"` for DDIM and `"linspace"` for the others.
    pub timestep_spacing: Option<String>,
    pub steps_offset: usize,
    pub rescale_betas_zero_snr: bool,
    // DDIM
    pub set_alpha_to_one: bool,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    /// Dynamic thresholding (Imagen); rejected: unsuitable for latent diffusion.
    pub thresholding: bool,
    // Euler / DPM-Solver sigma schedules
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    /// Rejected (needs the beta distribution's inverse CDF).
    pub use_beta_sigmas: bool,
    pub use_lu_lambdas: bool,
    /// Rejected (flow-matching models).
    pub use_flow_sigmas: bool,
    /// Euler: overrides of the Karras / exponential sigma range.
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    /// Euler: only `"linear"` is supported.
    pub interpolation_type: String,
    /// Euler: `"discrete"` or `"continuous"`.
    pub timestep_type: String,
    /// `"zero"` or `"sigma_min"`.
    pub final_sigmas_type: String,
    // DPM-Solver
    /// `"dpmsolver++"`, `"sde-dpmsolver++"`, `"dpmsolver"`, `"sde-dpmsolver"` (`"deis"` maps to
    /// `"dpmsolver++"` like diffusers).
    pub algorithm_type: String,
    /// 1, 2 or 3.
    pub solver_order: usize,
    /// `"midpoint"` or `"heun"` (`"logrho"`, `"bh1"`, `"bh2"` map to `"midpoint"` like diffusers).
    pub solver_type: String,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub lambda_min_clipped: f64,
    /// Rejected unless `None` (models that predict their variance).
    pub variance_type: Option<String>,
}

impl Default for SchedulerConfig {
    /// diffusers' constructor defaults, with no class name.
    fn default() -> Self {
        RawConfig::default().into()
    }
}

impl SchedulerConfig {
    /// Parses scheduler_config.json text. Unlike plain `serde_json`, this also accepts the bare
    /// `Infinity`, `-Infinity` and `NaN` tokens that Python's `json.dumps` writes (diffusers saves
    /// `"lambda_min_clipped": -Infinity` for DPMSolverMultistepScheduler).
    pub fn from_json(text: &str) -> Result<Self, SchedulerError> {
        serde_json::from_str(&quote_non_finite(text))
            .map_err(|e| invalid("scheduler_config.json", format!("invalid JSON: {e}")))
    }

    /// The `timestep_spacing` a scheduler of `kind` uses: the config's, else that class's default.
    pub fn timestep_spacing_for(&self, kind: SchedulerKind) -> &str {
        match &self.timestep_spacing {
            Some(s) => s,
            None => match kind {
                SchedulerKind::Ddim => "leading",
                _ => "linspace",
            },
        }
    }
}

/// Rewrites bare `NaN`/`Infinity`/`-Infinity` tokens outside strings into JSON strings.
fn quote_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        let token = ["-Infinity", "Infinity", "NaN"].into_iter().find(|t| rest.starts_with(t));
        match token {
            Some(t) => {
                out.push('"');
                out.push_str(t);
                out.push('"');
                rest = &rest[t.len()..];
            }
            None => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

/// A float that may also be written as a string (`"inf"`, `"-Infinity"`, `"nan"`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
enum LenientF64 {
    Num(f64),
    Str(StrF64),
}

#[derive(Debug, Clone, Copy)]
struct StrF64(f64);

impl<'de> Deserialize<'de> for StrF64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let v = match s.trim().to_ascii_lowercase().as_str() {
            "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
            "-inf" | "-infinity" => f64::NEG_INFINITY,
            "nan" => f64::NAN,
            other => other.parse::<f64>().map_err(|_| serde::de::Error::custom(format!("`{s}` is not a number")))?,
        };
        Ok(StrF64(v))
    }
}

impl LenientF64 {
    fn get(self) -> f64 {
        match self {
            LenientF64::Num(v) => v,
            LenientF64::Str(StrF64(v)) => v,
        }
    }
}

/// What serde reads: every key optional so that `null` and missing both mean "default".
#[derive(Debug, Default, Deserialize)]
struct RawConfig {
    #[serde(rename = "_class_name")]
    class_name: Option<String>,
    num_train_timesteps: Option<usize>,
    beta_start: Option<LenientF64>,
    beta_end: Option<LenientF64>,
    beta_schedule: Option<String>,
    trained_betas: Option<Vec<LenientF64>>,
    prediction_type: Option<String>,
    timestep_spacing: Option<String>,
    steps_offset: Option<usize>,
    rescale_betas_zero_snr: Option<bool>,
    set_alpha_to_one: Option<bool>,
    clip_sample: Option<bool>,
    clip_sample_range: Option<LenientF64>,
    thresholding: Option<bool>,
    use_karras_sigmas: Option<bool>,
    use_exponential_sigmas: Option<bool>,
    use_beta_sigmas: Option<bool>,
    use_lu_lambdas: Option<bool>,
    use_flow_sigmas: Option<bool>,
    sigma_min: Option<LenientF64>,
    sigma_max: Option<LenientF64>,
    interpolation_type: Option<String>,
    timestep_type: Option<String>,
    final_sigmas_type: Option<String>,
    algorithm_type: Option<String>,
    solver_order: Option<usize>,
    solver_type: Option<String>,
    lower_order_final: Option<bool>,
    euler_at_final: Option<bool>,
    lambda_min_clipped: Option<LenientF64>,
    variance_type: Option<String>,
}

impl From<RawConfig> for SchedulerConfig {
    fn from(r: RawConfig) -> Self {
        let s = |v: Option<String>, d: &str| v.unwrap_or_else(|| d.to_string());
        let f = |v: Option<LenientF64>, d: f64| v.map(LenientF64::get).unwrap_or(d);
        SchedulerConfig {
            class_name: r.class_name.unwrap_or_default(),
            num_train_timesteps: r.num_train_timesteps.unwrap_or(1000),
            beta_start: f(r.beta_start, 0.0001),
            beta_end: f(r.beta_end, 0.02),
            beta_schedule: s(r.beta_schedule, "linear"),
            trained_betas: r.trained_betas.map(|v| v.into_iter().map(LenientF64::get).collect()),
            prediction_type: s(r.prediction_type, "epsilon"),
            timestep_spacing: r.timestep_spacing,
            steps_offset: r.steps_offset.unwrap_or(0),
            rescale_betas_zero_snr: r.rescale_betas_zero_snr.unwrap_or(false),
            set_alpha_to_one: r.set_alpha_to_one.unwrap_or(true),
            clip_sample: r.clip_sample.unwrap_or(true),
            clip_sample_range: f(r.clip_sample_range, 1.0),
            thresholding: r.thresholding.unwrap_or(false),
            use_karras_sigmas: r.use_karras_sigmas.unwrap_or(false),
            use_exponential_sigmas: r.use_exponential_sigmas.unwrap_or(false),
            use_beta_sigmas: r.use_beta_sigmas.unwrap_or(false),
            use_lu_lambdas: r.use_lu_lambdas.unwrap_or(false),
            use_flow_sigmas: r.use_flow_sigmas.unwrap_or(false),
            sigma_min: r.sigma_min.map(LenientF64::get),
            sigma_max: r.sigma_max.map(LenientF64::get),
            interpolation_type: s(r.interpolation_type, "linear"),
            timestep_type: s(r.timestep_type, "discrete"),
            final_sigmas_type: s(r.final_sigmas_type, "zero"),
            algorithm_type: s(r.algorithm_type, "dpmsolver++"),
            solver_order: r.solver_order.unwrap_or(2),
            solver_type: s(r.solver_type, "midpoint"),
            lower_order_final: r.lower_order_final.unwrap_or(true),
            euler_at_final: r.euler_at_final.unwrap_or(false),
            lambda_min_clipped: f(r.lambda_min_clipped, f64::NEG_INFINITY),
            variance_type: r.variance_type,
        }
    }
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
pub(crate) enum Prediction {
    Epsilon,
    VPrediction,
    Sample,
}

impl Prediction {
    fn parse(s: &str) -> Result<Self, SchedulerError> {
        match s {
            "epsilon" => Ok(Prediction::Epsilon),
            "v_prediction" => Ok(Prediction::VPrediction),
            "sample" => Ok(Prediction::Sample),
            other => Err(invalid(
                "prediction_type",
                format!("`{other}` is not supported; use \"epsilon\", \"v_prediction\" or \"sample\""),
            )),
        }
    }
}

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
            return Err(invalid("num_train_timesteps", format!("is {train}; it must be at least 2 (Stable Diffusion uses 1000)")));
        }
        if steps == 0 {
            return Err(SchedulerError::InvalidSteps { steps, reason: "use at least 1 step (20-50 is typical)".into() });
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
        Ok(Common { train_steps: train, prediction, spacing, steps_offset: config.steps_offset, beta_schedule, betas, alphas_cumprod })
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
