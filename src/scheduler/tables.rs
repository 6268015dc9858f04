//! Noise-schedule tables (betas, cumulative alphas, sigmas, timesteps) computed the way diffusers
//! computes them, down to the float32 roundings that PyTorch and NumPy apply, so that timesteps
//! and sigmas agree with diffusers' to the last bit in the common cases.
//!
//! Everything here is plain `f32`/`f64` arithmetic on the host; the per-step tensor math lives in
//! the scheduler files.
//!
//! Emulated library behaviours (checked against torch 2.15 / numpy 2.4 on x86-64):
//! * `torch.linspace(a, b, n, dtype=float32)`: `step = (f32(b) - f32(a)) / (n - 1)` in f32, then
//!   `a + step * i` for the first half and `b - step * (n - 1 - i)` for the second half, each
//!   evaluated exactly and rounded once to f32.
//! * `torch.cumprod` of a float32 tensor on the CPU accumulates in float64 and rounds every
//!   output to float32.
//! * `np.linspace(a, b, n)`: `i * ((b - a) / (n - 1)) + a`, last element exactly `b`.
//! * `np.arange(a, b, d)` (float): `ceil((b - a) / d)` elements, `a + i * ((a + d) - a)`.
//! * `np.round` / `torch.round`: round half to even.
//! * `np.interp(x, arange(len(fp)), fp)`: `slope * (x - j) + fp[j]` with `j = floor(x)`.

use super::SchedulerError;

/// `np.round`: round half to even.
pub(crate) fn np_round(x: f64) -> f64 {
    x.round_ties_even()
}

/// `torch.linspace(start, end, steps, dtype=torch.float32)` on the CPU.
pub(crate) fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    if steps == 0 {
        return Vec::new();
    }
    if steps == 1 {
        return vec![start as f32];
    }
    let (s, e) = (start as f32, end as f32);
    let step = (e - s) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                (s as f64 + step as f64 * i as f64) as f32
            } else {
                (e as f64 - step as f64 * (steps - 1 - i) as f64) as f32
            }
        })
        .collect()
}

/// `np.linspace(start, stop, num)` (float64, endpoint included).
pub(crate) fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (num - 1) as f64;
            let mut y: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
            y[num - 1] = stop;
            y
        }
    }
}

/// `np.arange(start, stop, step)` for float arguments.
pub(crate) fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 || len.is_infinite() {
        return Vec::new();
    }
    let len = len as usize;
    // NumPy fills the first two values, then uses `delta = buffer[1] - buffer[0]`.
    let delta = (start + step) - start;
    (0..len)
        .map(|i| {
            if i == 0 {
                start
            } else if i == 1 {
                start + step
            } else {
                start + i as f64 * delta
            }
        })
        .collect()
}

/// `np.interp(x, np.arange(len(fp)), fp)` with float32 `fp` (NumPy computes in float64).
pub(crate) fn np_interp_index(x: f64, fp: &[f32]) -> f64 {
    let n = fp.len();
    if n == 0 {
        return f64::NAN;
    }
    if x.is_nan() {
        return f64::NAN;
    }
    if x >= (n - 1) as f64 {
        return fp[n - 1] as f64;
    }
    if x < 0.0 {
        return fp[0] as f64;
    }
    let j = x.floor() as usize;
    if x == j as f64 {
        return fp[j] as f64;
    }
    let slope = (fp[j + 1] as f64 - fp[j] as f64) / 1.0;
    slope * (x - j as f64) + fp[j] as f64
}

/// The beta schedules diffusers supports (`beta_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BetaSchedule {
    Linear,
    ScaledLinear,
    SquaredCosCapV2,
}

impl BetaSchedule {
    pub(crate) fn parse(s: &str) -> Result<Self, SchedulerError> {
        match s {
            "linear" => Ok(Self::Linear),
            "scaled_linear" => Ok(Self::ScaledLinear),
            "squaredcos_cap_v2" => Ok(Self::SquaredCosCapV2),
            other => Err(SchedulerError::InvalidConfig {
                key: "beta_schedule".into(),
                reason: format!(
                    "`{other}` is not supported; use \"linear\", \"scaled_linear\" or \"squaredcos_cap_v2\""
                ),
            }),
        }
    }
}

/// `betas_for_alpha_bar(n)` with the cosine transform (Nichol & Dhariwal 2021, eq. 17), capped at
/// `max_beta = 0.999`; computed in float64 like diffusers, then stored as float32.
fn betas_for_alpha_bar_cosine(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// `torch.cumprod` of float32 values (float64 accumulator, float32 outputs).
pub(crate) fn cumprod_f32(values: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    values
        .iter()
        .map(|&v| {
            acc *= v as f64;
            acc as f32
        })
        .collect()
}

/// `rescale_zero_terminal_snr(betas)` (Lin et al. 2023, "Common Diffusion Noise Schedules and
/// Sample Steps are Flawed", algorithm 1), in float32 like diffusers.
pub(crate) fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|&b| 1.0 - b).collect();
    let mut sqrt_bar: Vec<f32> = cumprod_f32(&alphas).iter().map(|a| a.sqrt()).collect();
    let (first, last) = (sqrt_bar[0], sqrt_bar[sqrt_bar.len() - 1]);
    // Shift so the last timestep is zero, scale so the first is back to its old value.
    let scale = first / (first - last);
    for v in &mut sqrt_bar {
        *v = (*v - last) * scale;
    }
    let bar: Vec<f32> = sqrt_bar.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    for i in 1..bar.len() {
        out.push(1.0 - bar[i] / bar[i - 1]);
    }
    out
}

/// The float32 `betas` of a scheduler's `__init__` (before any zero-SNR rescale).
pub(crate) fn betas(
    schedule: BetaSchedule,
    beta_start: f64,
    beta_end: f64,
    n: usize,
    trained: Option<&[f64]>,
) -> Vec<f32> {
    if let Some(t) = trained {
        return t.iter().map(|&b| b as f32).collect();
    }
    match schedule {
        BetaSchedule::Linear => torch_linspace_f32(beta_start, beta_end, n),
        // "this schedule is very specific to the latent diffusion model"
        BetaSchedule::ScaledLinear => {
            torch_linspace_f32(beta_start.sqrt(), beta_end.sqrt(), n).into_iter().map(|b| b * b).collect()
        }
        BetaSchedule::SquaredCosCapV2 => betas_for_alpha_bar_cosine(n),
    }
}

/// `sigma = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5` in float32, indexed by training timestep.
pub(crate) fn sigma_table(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect()
}

/// `np.log(sigma_table)` (float32).
pub(crate) fn log_sigma_table(sigmas: &[f32]) -> Vec<f32> {
    sigmas.iter().map(|&s| (s as f64).ln() as f32).collect()
}

/// diffusers' `_sigma_to_t`: the fractional training timestep whose (log-linearly interpolated)
/// sigma is `sigma`. `log_sigmas` is the float32 table over training timesteps.
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // low_idx = cumsum(dists >= 0).argmax().clip(max=len - 2): the last index with
    // log_sigmas[i] <= log_sigma, or 0 when there is none.
    let last_ge = log_sigmas.iter().rposition(|&ls| log_sigma - ls as f64 >= 0.0).unwrap_or(0);
    let low_idx = last_ge.min(log_sigmas.len().saturating_sub(2));
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx];
    let high = log_sigmas[high_idx];
    // `low - log_sigma` is float64, `low - high` is float32 (NumPy promotion rules).
    let w = ((low as f64 - log_sigma) / (low - high) as f64).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative Models"),
/// eq. 5: `sigma_i = (sigma_max^(1/rho) + i/(n-1) * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho`
/// with `rho = 7` (diffusers `_convert_to_karras`).
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0f64;
    let min_inv_rho = sigma_min.powf(1.0 / rho);
    let max_inv_rho = sigma_max.powf(1.0 / rho);
    np_linspace(0.0, 1.0, n).into_iter().map(|r| (max_inv_rho + r * (min_inv_rho - max_inv_rho)).powf(rho)).collect()
}

/// diffusers `_convert_to_exponential`: sigmas evenly spaced in log space.
pub(crate) fn exponential_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    np_linspace(sigma_max.ln(), sigma_min.ln(), n).into_iter().map(f64::exp).collect()
}

/// Timestep spacing (Lin et al. 2023, table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spacing {
    Leading,
    Trailing,
    Linspace,
}

impl Spacing {
    pub(crate) fn parse(s: &str) -> Result<Self, SchedulerError> {
        match s {
            "leading" => Ok(Self::Leading),
            "trailing" => Ok(Self::Trailing),
            "linspace" => Ok(Self::Linspace),
            other => Err(SchedulerError::InvalidConfig {
                key: "timestep_spacing".into(),
                reason: format!("`{other}` is not supported; use \"leading\", \"trailing\" or \"linspace\""),
            }),
        }
    }
}

/// Integer timesteps of DDIM's `set_timesteps` (int64 in diffusers), as f64.
pub(crate) fn ddim_timesteps(spacing: Spacing, train: usize, n: usize, steps_offset: usize) -> Vec<f64> {
    match spacing {
        Spacing::Linspace => np_linspace(0.0, (train - 1) as f64, n).into_iter().rev().map(np_round).collect(),
        Spacing::Leading => {
            let ratio = train / n;
            (0..n).rev().map(|i| (i * ratio) as f64 + steps_offset as f64).collect()
        }
        Spacing::Trailing => {
            let ratio = train as f64 / n as f64;
            np_arange(train as f64, 0.0, -ratio).into_iter().map(|t| np_round(t) - 1.0).collect()
        }
    }
}

/// Float32 timesteps of Euler / Euler-ancestral `set_timesteps`, as f64.
pub(crate) fn euler_timesteps(spacing: Spacing, train: usize, n: usize, steps_offset: usize) -> Vec<f64> {
    match spacing {
        // np.linspace(0, T - 1, n, dtype=np.float32)[::-1]
        Spacing::Linspace => {
            np_linspace(0.0, (train - 1) as f64, n).into_iter().rev().map(|t| t as f32 as f64).collect()
        }
        Spacing::Leading => {
            let ratio = train / n;
            (0..n).rev().map(|i| ((i * ratio) as f32 + steps_offset as f32) as f64).collect()
        }
        Spacing::Trailing => {
            let ratio = train as f64 / n as f64;
            np_arange(train as f64, 0.0, -ratio).into_iter().map(|t| (np_round(t) as f32 - 1.0) as f64).collect()
        }
    }
}

/// Integer timesteps of DPMSolverMultistep's `set_timesteps` (before any sigma conversion).
/// `last_timestep` is `num_train_timesteps - clipped_idx` (the `lambda_min_clipped` cut).
pub(crate) fn dpm_timesteps(
    spacing: Spacing,
    train: usize,
    last_timestep: usize,
    n: usize,
    steps_offset: usize,
) -> Vec<f64> {
    match spacing {
        Spacing::Linspace => {
            let mut t: Vec<f64> =
                np_linspace(0.0, last_timestep as f64 - 1.0, n + 1).into_iter().map(np_round).rev().collect();
            t.pop();
            t
        }
        Spacing::Leading => {
            let ratio = last_timestep / (n + 1);
            (1..=n).rev().map(|i| (i * ratio) as f64 + steps_offset as f64).collect()
        }
        Spacing::Trailing => {
            let ratio = train as f64 / n as f64;
            np_arange(last_timestep as f64, 0.0, -ratio).into_iter().map(|t| np_round(t) - 1.0).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_half_even() {
        assert_eq!(np_round(0.5), 0.0);
        assert_eq!(np_round(1.5), 2.0);
        assert_eq!(np_round(2.5), 2.0);
        assert_eq!(np_round(-0.5), -0.0);
    }

    #[test]
    fn arange_matches_numpy_lengths() {
        // np.arange(1000, 0, -1000/7) has 7 elements; np.arange(1000, 0, -1000/998) has 999.
        assert_eq!(np_arange(1000.0, 0.0, -1000.0 / 7.0).len(), 7);
        assert_eq!(np_arange(1000.0, 0.0, -1000.0 / 998.0).len(), 999);
        assert_eq!(
            np_arange(1000.0, 0.0, -100.0),
            vec![1000.0, 900.0, 800.0, 700.0, 600.0, 500.0, 400.0, 300.0, 200.0, 100.0]
        );
    }

    #[test]
    fn interp_endpoints() {
        let fp = [1.0f32, 2.0, 4.0];
        assert_eq!(np_interp_index(0.0, &fp), 1.0);
        assert_eq!(np_interp_index(1.5, &fp), 3.0);
        assert_eq!(np_interp_index(7.0, &fp), 4.0);
        assert_eq!(np_interp_index(-1.0, &fp), 1.0);
    }
}
