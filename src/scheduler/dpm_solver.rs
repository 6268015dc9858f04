//! DPM-Solver++ multistep: a port of diffusers 0.42
//! `schedulers/scheduling_dpmsolver_multistep.py` (`DPMSolverMultistepScheduler`).
//!
//! Papers: DPM-Solver (Lu et al. 2022, arXiv 2206.00927) and DPM-Solver++ (Lu et al. 2022,
//! arXiv 2211.01095). With `sigma` the schedule's VE sigma, `alpha_t = 1 / sqrt(sigma^2 + 1)`,
//! `sigma_t = sigma * alpha_t` and `lambda_t = log(alpha_t) - log(sigma_t)` (half log-SNR), the
//! default `algorithm_type = "dpmsolver++"`, `solver_order = 2`, `solver_type = "midpoint"` is
//! DPM-Solver++(2M), algorithm 2 of the DPM-Solver++ paper:
//!
//! ```text
//! m_i = x0 prediction at step i (the "data prediction model", convert_model_output)
//! h   = lambda_next - lambda_i,  r0 = (lambda_i - lambda_{i-1}) / h
//! D0  = m_i,  D1 = (m_i - m_{i-1}) / r0
//! x'  = (sigma_next / sigma_i) x - alpha_next (e^{-h} - 1) D0 - 0.5 alpha_next (e^{-h} - 1) D1
//! ```
//!
//! The first step (no history) and, with `lower_order_final`, the last step(s) of short schedules
//! use the first-order update (DPM-Solver++ eq. 5, equal to DDIM):
//! `x' = (sigma_next / sigma_i) x - alpha_next (e^{-h} - 1) m_i`. The last step is always first
//! order when the final sigma is 0 (`final_sigmas_type = "zero"`); then `x' = m_i`.
//! Also ported: orders 1 and 3, `solver_type = "heun"`, the noise-prediction `"dpmsolver"`, and the
//! SDE variants (`"sde-dpmsolver++"`, `"sde-dpmsolver"`, which need noise), Karras (eq. 5 of
//! Karras et al. 2022), exponential and Lu (uniform-lambda) sigmas, and `lambda_min_clipped`.
//!
//! Each update is a linear combination of the sample, the stored model outputs and the noise;
//! the coefficients are computed in f64 and applied as scalar-times-tensor operations.

use burn::prelude::*;

mod coefficients;

use coefficients::{add, alpha_sigma_lambda, conversion, differences, scale, update, Algorithm, Comb, SolverType, Step};
use super::euler::{final_sigma_is_min, sigma_schedule, SigmaSchedule};
use super::tables::{self, BetaSchedule};
use super::{
    check_index, check_shape, invalid, lin, Common, LazyLin, Scheduler, SchedulerConfig, SchedulerError,
    SchedulerKind,
};

/// diffusers `DPMSolverMultistepScheduler` after `set_timesteps(n)`.
#[derive(Debug, Clone)]
pub struct DpmSolverMultistepScheduler {
    common: Common,
    algorithm: Algorithm,
    solver_type: SolverType,
    solver_order: usize,
    lower_order_final: bool,
    euler_at_final: bool,
    final_sigma_zero: bool,
    timesteps: Vec<f64>,
    /// float32 values, one more than the timesteps.
    sigmas: Vec<f64>,
    /// Converted model outputs of the last `solver_order` steps, oldest first.
    model_outputs: Vec<Tensor<4>>,
    lower_order_nums: usize,
    /// The index the next `step` is expected at (to detect a new chain).
    next_index: Option<usize>,
    last_x0: Option<LazyLin>,
}

impl DpmSolverMultistepScheduler {
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self, SchedulerError> {
        let common = Common::new(config, SchedulerKind::DpmSolverMultistep, num_inference_steps)?;
        let Solver { algorithm, solver_type, solver_order, final_min, schedule } = Solver::parse(config)?;
        let (timesteps, sigmas) = schedule_of(&common, config, schedule, final_min, num_inference_steps)?;
        check_decreasing(&sigmas, num_inference_steps)?;
        Ok(DpmSolverMultistepScheduler {
            common,
            algorithm,
            solver_type,
            solver_order,
            lower_order_final: config.lower_order_final,
            euler_at_final: config.euler_at_final,
            final_sigma_zero: !final_min,
            timesteps,
            sigmas,
            model_outputs: Vec::new(),
            lower_order_nums: 0,
            next_index: None,
            last_x0: None,
        })
    }

    /// Stores the converted model output of this step (the newest of the last `solver_order`) and
    /// its x0 prediction.
    fn remember(&mut self, sample: &Tensor<4>, model_output: &Tensor<4>, alpha_s0: f64, sigma_s0: f64) {
        let (cx, co) = conversion(self.algorithm, self.common.prediction, alpha_s0, sigma_s0);
        let converted = lin(&[(sample, cx), (model_output, co)]);
        self.last_x0 = Some(if self.algorithm.data_prediction() {
            LazyLin(vec![(converted.clone(), 1.0)])
        } else {
            // x0 = (x - sigma_t eps) / alpha_t
            LazyLin(vec![(sample.clone(), 1.0 / alpha_s0), (converted.clone(), -sigma_s0 / alpha_s0)])
        });
        self.model_outputs.push(converted);
        if self.model_outputs.len() > self.solver_order {
            self.model_outputs.remove(0);
        }
    }

    /// The order of step `i` of `len`: lower while the history is short and, "to improve
    /// numerical stability for small number of steps", at the end of short schedules. h == 0 (a
    /// "sigma_min" final sigma equal to the last one) makes the step the identity; the first-order
    /// formula gives it without the 0/0 of the higher orders.
    fn order_at(&self, i: usize, len: usize, h: f64) -> usize {
        let lower_order_final =
            i == len - 1 && (self.euler_at_final || (self.lower_order_final && len < 15) || self.final_sigma_zero);
        let lower_order_second = i + 2 == len && self.lower_order_final && len < 15;
        if self.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final || h == 0.0 {
            1
        } else if self.solver_order == 2 || self.lower_order_nums < 2 || lower_order_second {
            2
        } else {
            3
        }
    }

    /// Forgets the history: the next step starts a new chain.
    pub fn reset(&mut self) {
        self.model_outputs.clear();
        self.lower_order_nums = 0;
        self.next_index = None;
        self.last_x0 = None;
    }
}

/// The solver the config asks for, checked: what diffusers supports and we ported.
struct Solver {
    algorithm: Algorithm,
    solver_type: SolverType,
    solver_order: usize,
    /// `final_sigmas_type = "sigma_min"` (else "zero").
    final_min: bool,
    schedule: SigmaSchedule,
}

impl Solver {
    fn parse(config: &SchedulerConfig) -> Result<Self, SchedulerError> {
        let algorithm = match config.algorithm_type.as_str() {
            "dpmsolver++" | "deis" => Algorithm::DpmSolverPP,
            "sde-dpmsolver++" => Algorithm::SdeDpmSolverPP,
            "dpmsolver" => Algorithm::DpmSolver,
            "sde-dpmsolver" => Algorithm::SdeDpmSolver,
            other => {
                return Err(invalid(
                    "algorithm_type",
                    format!("`{other}` is not supported; use \"dpmsolver++\" or \"sde-dpmsolver++\""),
                ))
            }
        };
        let solver_type = match config.solver_type.as_str() {
            "midpoint" | "logrho" | "bh1" | "bh2" => SolverType::Midpoint,
            "heun" => SolverType::Heun,
            other => {
                return Err(invalid("solver_type", format!("`{other}` is not supported; use \"midpoint\" or \"heun\"")))
            }
        };
        let solver_order = config.solver_order;
        if !(1..=3).contains(&solver_order) {
            return Err(invalid("solver_order", format!("is {solver_order}; use 1, 2 or 3 (2 for guided sampling)")));
        }
        if algorithm == Algorithm::SdeDpmSolver && solver_order == 3 {
            return Err(invalid(
                "solver_order",
                "3 is not implemented for \"sde-dpmsolver\" (nor in diffusers); use 1 or 2",
            ));
        }
        let final_min = final_sigma_is_min(config)?;
        if !algorithm.data_prediction() && !final_min {
            return Err(invalid(
                "final_sigmas_type",
                format!(
                    "\"zero\" is not supported with algorithm_type \"{}\"; use \"sigma_min\"",
                    config.algorithm_type
                ),
            ));
        }
        if config.variance_type.is_some() {
            return Err(invalid("variance_type", "learned variances are not supported; set it to null"));
        }
        if config.use_flow_sigmas {
            return Err(invalid("use_flow_sigmas", "flow-matching sigmas are not supported; set it to false"));
        }
        let schedule = sigma_schedule(config)?;
        if config.use_lu_lambdas && schedule != SigmaSchedule::Interpolated {
            return Err(invalid(
                "use_lu_lambdas",
                "cannot be combined with use_karras_sigmas / use_exponential_sigmas",
            ));
        }
        if config.lambda_min_clipped.is_nan() {
            return Err(invalid("lambda_min_clipped", "is NaN; use a number or -inf"));
        }
        Ok(Solver { algorithm, solver_type, solver_order, final_min, schedule })
    }
}

/// The timesteps and the float32 sigmas (one more: the final sigma) of `n` steps.
fn schedule_of(common: &Common, config: &SchedulerConfig, schedule: SigmaSchedule, final_min: bool, n: usize) -> Result<(Vec<f64>, Vec<f64>), SchedulerError> {
    let mut alphas_cumprod = common.alphas_cumprod.clone();
    if config.rescale_betas_zero_snr {
        *alphas_cumprod.last_mut().expect("num_train_timesteps >= 2") = 2f32.powi(-24);
    }
    let train_sigmas = tables::sigma_table(&alphas_cumprod);
    let log_sigmas = tables::log_sigma_table(&train_sigmas);

    // "Clipping the minimum of all lambda(t) for numerical stability. This is critical for
    // cosine (squaredcos_cap_v2) noise schedule": searchsorted(flip(lambda_t), lambda_min_clipped).
    let clip = config.lambda_min_clipped as f32;
    let clipped_idx = alphas_cumprod
        .iter()
        .rev()
        .map(|&a| a.sqrt().ln() - (1.0 - a).sqrt().ln())
        .take_while(|&l| l < clip)
        .count();
    let last_timestep = common.train_steps - clipped_idx;
    if last_timestep == 0 {
        return Err(invalid("lambda_min_clipped", "clips away every timestep; lower it (the default is -inf)"));
    }

    let mut timesteps =
        tables::dpm_timesteps(common.spacing, common.train_steps, last_timestep, n, common.steps_offset);
    common.check_timesteps(&timesteps)?;
    // Timesteps from sigmas are rounded to integers, except for the cosine schedule, where
    // the int64 cast truncates.
    let to_int = |t: f64| {
        if common.beta_schedule == BetaSchedule::SquaredCosCapV2 {
            t.trunc()
        } else {
            tables::np_round(t)
        }
    };
    let mut sigmas: Vec<f64> = if schedule != SigmaSchedule::Interpolated {
        // sigmas flipped to descending: in_sigmas[0] is the largest, [-1] the smallest.
        let s_min = train_sigmas[0] as f64;
        let s_max = train_sigmas[train_sigmas.len() - 1] as f64;
        let s = match schedule {
            SigmaSchedule::Karras => tables::karras_sigmas(s_min, s_max, n),
            _ => tables::exponential_sigmas(s_min, s_max, n),
        };
        timesteps = s.iter().map(|&x| tables::sigma_to_t(x, &log_sigmas)).collect();
        if schedule == SigmaSchedule::Karras {
            timesteps = timesteps.into_iter().map(to_int).collect();
        } else {
            timesteps = timesteps.into_iter().map(f64::trunc).collect();
        }
        s
    } else if config.use_lu_lambdas {
        // _convert_to_lu on the flipped log-sigma table, rho = 1.
        let l_min = log_sigmas[0] as f64;
        let l_max = log_sigmas[log_sigmas.len() - 1] as f64;
        let s: Vec<f64> =
            tables::np_linspace(0.0, 1.0, n).into_iter().map(|r| (l_max + r * (l_min - l_max)).exp()).collect();
        timesteps = s.iter().map(|&x| to_int(tables::sigma_to_t(x, &log_sigmas))).collect();
        s
    } else {
        timesteps.iter().map(|&t| tables::np_interp_index(t, &train_sigmas)).collect()
    };
    let sigma_last = if final_min { train_sigmas[0] as f64 } else { 0.0 };
    sigmas.push(sigma_last);
    let sigmas: Vec<f64> = sigmas.into_iter().map(|s| s as f32 as f64).collect();
    Ok((timesteps, sigmas))
}

/// The multistep formulas divide by lambda differences: the noise levels must strictly decrease
/// (they do unless a schedule repeats a timestep). The final sigma may equal the last one
/// ("sigma_min" after a schedule ending at t = 0).
fn check_decreasing(sigmas: &[f64], n: usize) -> Result<(), SchedulerError> {
    let last = sigmas.len() - 1;
    if let Some(i) =
        (0..last).find(|&i| !(sigmas[i + 1] < sigmas[i] || (i + 1 == last && sigmas[i + 1] <= sigmas[i])))
    {
        return Err(SchedulerError::InvalidSteps {
            steps: n,
            reason: format!(
                "with this timestep_spacing the schedule repeats a noise level (steps {i} and {}); use fewer steps or \"trailing\" spacing",
                i + 1
            ),
        });
    }
    Ok(())
}

impl Scheduler for DpmSolverMultistepScheduler {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::DpmSolverMultistep
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// DPM-Solver does not scale the model input.
    fn scale_model_input(&self, sample: Tensor<4>, _step_index: usize) -> Tensor<4> {
        sample
    }

    fn needs_noise(&self) -> bool {
        self.algorithm.stochastic()
    }

    fn step(
        &mut self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
        noise: Option<Tensor<4>>,
    ) -> Result<Tensor<4>, SchedulerError> {
        let len = self.timesteps.len();
        check_index(step_index, len)?;
        check_shape("model_output", &model_output, &sample)?;
        let noise = if self.algorithm.stochastic() {
            let z = noise.ok_or(SchedulerError::MissingNoise { scheduler: "sde-dpmsolver" })?;
            check_shape("noise", &z, &sample)?;
            Some(z)
        } else {
            None
        };
        if self.next_index != Some(step_index) {
            // A new chain (first call, restart at 0, or a jump such as an img2img begin index).
            self.model_outputs.clear();
            self.lower_order_nums = 0;
        }
        let i = step_index;
        let (alpha_s0, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[i]);
        self.remember(&sample, &model_output, alpha_s0, sigma_s0);
        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[i + 1]);
        let h = lambda_t - lambda_s0;
        let order = self.order_at(i, len, h);

        let lambda_at = |j: usize| alpha_sigma_lambda(self.sigmas[j]).2;
        let lambdas = [lambda_s0, if order > 1 { lambda_at(i - 1) } else { 0.0 }, if order > 2 { lambda_at(i - 2) } else { 0.0 }];
        let (d0, (d1, d2)): (Comb, _) = ([1.0, 0.0, 0.0], differences(order, lambdas, h));
        let midpoint = self.solver_type == SolverType::Midpoint;
        let [c_x, c_d0, c_d1, c_d2, c_z] = update(self.algorithm, order, midpoint, Step { alpha_s0, sigma_s0, alpha_t, sigma_t, h });
        let cm = add(add(scale(d0, c_d0), scale(d1, c_d1)), scale(d2, c_d2));
        let k = self.model_outputs.len();
        let mut terms: Vec<(&Tensor<4>, f64)> = vec![(&sample, c_x)];
        for (j, &c) in cm.iter().enumerate().take(order) {
            terms.push((&self.model_outputs[k - 1 - j], c));
        }
        if let Some(z) = &noise {
            terms.push((z, c_z));
        }
        let prev = lin(&terms);

        if self.lower_order_nums < self.solver_order {
            self.lower_order_nums += 1;
        }
        self.next_index = Some(i + 1);
        Ok(prev)
    }

    fn pred_original_sample(&self) -> Option<Tensor<4>> {
        self.last_x0.as_ref().map(LazyLin::eval)
    }

    /// `alpha_t * x0 + sigma_t * noise` at the noise level of step `step_index`.
    fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, step_index: usize) -> Result<Tensor<4>, SchedulerError> {
        check_index(step_index, self.timesteps.len())?;
        check_shape("noise", &noise, &original)?;
        let (alpha_t, sigma_t, _) = alpha_sigma_lambda(self.sigmas[step_index]);
        Ok(lin(&[(&original, alpha_t), (&noise, sigma_t)]))
    }
}
