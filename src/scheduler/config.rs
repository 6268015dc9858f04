//! `scheduler/scheduler_config.json` as data: diffusers' keys, defaults and validation.

use serde::Deserialize;

use super::*;


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

