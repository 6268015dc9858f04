//! The coefficients of one DPM-Solver step, in f64: how the model output converts to the solver's
//! prediction, the finite differences D0..D2 of the stored predictions, and the update's weights
//! (diffusers 0.42 `convert_model_output`, `multistep_dpm_solver_{first,second,third}_order_update`).

use crate::scheduler::Prediction;

/// `algorithm_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Algorithm {
    /// DPM-Solver++ (data prediction).
    DpmSolverPP,
    /// DPM-Solver (noise prediction); deprecated in diffusers.
    DpmSolver,
    /// SDE DPM-Solver++.
    SdeDpmSolverPP,
    /// SDE DPM-Solver; deprecated in diffusers.
    SdeDpmSolver,
}

impl Algorithm {
    pub(super) fn data_prediction(self) -> bool {
        matches!(self, Algorithm::DpmSolverPP | Algorithm::SdeDpmSolverPP)
    }
    pub(super) fn stochastic(self) -> bool {
        matches!(self, Algorithm::SdeDpmSolverPP | Algorithm::SdeDpmSolver)
    }
}

/// `solver_type` of the second-order update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SolverType {
    Midpoint,
    Heun,
}

/// Coefficients over `[m0, m1, m2]` (newest first).
pub(super) type Comb = [f64; 3];

pub(super) fn scale(c: Comb, k: f64) -> Comb {
    [c[0] * k, c[1] * k, c[2] * k]
}
pub(super) fn add(a: Comb, b: Comb) -> Comb {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

/// `_sigma_to_alpha_sigma_t`: `(alpha_t, sigma_t, lambda_t)` of a VE sigma.
pub(super) fn alpha_sigma_lambda(sigma: f64) -> (f64, f64, f64) {
    let alpha_t = 1.0 / (sigma * sigma + 1.0).sqrt();
    let sigma_t = sigma * alpha_t;
    (alpha_t, sigma_t, alpha_t.ln() - sigma_t.ln())
}

/// `convert_model_output` as the weights of (sample, model output): x0 for DPM-Solver++, eps for
/// DPM-Solver, at a step with `alpha`, `sigma`.
pub(super) fn conversion(algorithm: Algorithm, prediction: Prediction, alpha: f64, sigma: f64) -> (f64, f64) {
    if algorithm.data_prediction() {
        match prediction {
            Prediction::Epsilon => (1.0 / alpha, -sigma / alpha),
            Prediction::Sample => (0.0, 1.0),
            Prediction::Velocity => (alpha, -sigma),
        }
    } else {
        match prediction {
            Prediction::Epsilon => (0.0, 1.0),
            Prediction::Sample => (1.0 / sigma, -alpha / sigma),
            Prediction::Velocity => (sigma, alpha),
        }
    }
}

/// D1 and D2 of an update of `order` as combinations of (m0, m1, m2), newest first (D0 is m0);
/// `lambdas` are lambda at this step and the one or two before it, `h` the step in lambda.
pub(super) fn differences(order: usize, lambdas: [f64; 3], h: f64) -> (Comb, Comb) {
    let [lambda_s0, lambda_s1, lambda_s2] = lambdas;
    match order {
        1 => ([0.0; 3], [0.0; 3]),
        2 => {
            let r0 = (lambda_s0 - lambda_s1) / h;
            ([1.0 / r0, -1.0 / r0, 0.0], [0.0; 3])
        }
        _ => {
            let (h0, h1) = (lambda_s0 - lambda_s1, lambda_s1 - lambda_s2);
            let (r0, r1) = (h0 / h, h1 / h);
            let d1_0: Comb = [1.0 / r0, -1.0 / r0, 0.0];
            let d1_1: Comb = [0.0, 1.0 / r1, -1.0 / r1];
            let diff = add(d1_0, scale(d1_1, -1.0));
            (add(d1_0, scale(diff, r0 / (r0 + r1))), scale(diff, 1.0 / (r0 + r1)))
        }
    }
}

/// The schedule's values at this step (s0) and the next (t), and `h = lambda_t - lambda_s0`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Step {
    pub alpha_s0: f64,
    pub sigma_s0: f64,
    pub alpha_t: f64,
    pub sigma_t: f64,
    pub h: f64,
}

/// The update's weights of (sample, D0, D1, D2, noise) per algorithm, order and solver type.
pub(super) fn update(algorithm: Algorithm, order: usize, midpoint: bool, step: Step) -> [f64; 5] {
    use Algorithm::*;
    let Step { alpha_s0, sigma_s0, alpha_t, sigma_t, h } = step;
    let (e, ep, e2) = ((-h).exp(), h.exp(), (-2.0 * h).exp()); // e^{-h}, e^{h}, e^{-2h}
    let (c_x, c_d0, c_d1, c_d2, c_z) = match (algorithm, order) {
        // DPM-Solver++ eq. 5 / algorithm 2 (first order = DDIM)
        (DpmSolverPP, 1) => (sigma_t / sigma_s0, -alpha_t * (e - 1.0), 0.0, 0.0, 0.0),
        (DpmSolverPP, 2) if midpoint => {
            (sigma_t / sigma_s0, -alpha_t * (e - 1.0), -0.5 * alpha_t * (e - 1.0), 0.0, 0.0)
        }
        (DpmSolverPP, 2) => (sigma_t / sigma_s0, -alpha_t * (e - 1.0), alpha_t * ((e - 1.0) / h + 1.0), 0.0, 0.0),
        (DpmSolverPP, _) => (
            sigma_t / sigma_s0,
            -alpha_t * (e - 1.0),
            alpha_t * ((e - 1.0) / h + 1.0),
            -alpha_t * ((e - 1.0 + h) / (h * h) - 0.5),
            0.0,
        ),
        // DPM-Solver (noise prediction), Lu et al. 2022a
        (DpmSolver, 1) => (alpha_t / alpha_s0, -sigma_t * (ep - 1.0), 0.0, 0.0, 0.0),
        (DpmSolver, 2) if midpoint => {
            (alpha_t / alpha_s0, -sigma_t * (ep - 1.0), -0.5 * sigma_t * (ep - 1.0), 0.0, 0.0)
        }
        (DpmSolver, 2) => (alpha_t / alpha_s0, -sigma_t * (ep - 1.0), -sigma_t * ((ep - 1.0) / h - 1.0), 0.0, 0.0),
        (DpmSolver, _) => (
            alpha_t / alpha_s0,
            -sigma_t * (ep - 1.0),
            -sigma_t * ((ep - 1.0) / h - 1.0),
            -sigma_t * ((ep - 1.0 - h) / (h * h) - 0.5),
            0.0,
        ),
        // SDE-DPM-Solver++
        (SdeDpmSolverPP, 1) => {
            (sigma_t / sigma_s0 * e, alpha_t * (1.0 - e2), 0.0, 0.0, sigma_t * (1.0 - e2).sqrt())
        }
        (SdeDpmSolverPP, 2) if midpoint => (
            sigma_t / sigma_s0 * e,
            alpha_t * (1.0 - e2),
            0.5 * alpha_t * (1.0 - e2),
            0.0,
            sigma_t * (1.0 - e2).sqrt(),
        ),
        (SdeDpmSolverPP, 2) => (
            sigma_t / sigma_s0 * e,
            alpha_t * (1.0 - e2),
            alpha_t * ((1.0 - e2) / (-2.0 * h) + 1.0),
            0.0,
            sigma_t * (1.0 - e2).sqrt(),
        ),
        (SdeDpmSolverPP, _) => (
            sigma_t / sigma_s0 * e,
            alpha_t * (1.0 - e2),
            alpha_t * ((1.0 - e2) / (-2.0 * h) + 1.0),
            alpha_t * ((1.0 - e2 - 2.0 * h) / (4.0 * h * h) - 0.5),
            sigma_t * (1.0 - e2).sqrt(),
        ),
        // SDE-DPM-Solver
        (SdeDpmSolver, 1) => {
            (alpha_t / alpha_s0, -2.0 * sigma_t * (ep - 1.0), 0.0, 0.0, sigma_t * (2.0 * h).exp_m1().sqrt())
        }
        (SdeDpmSolver, _) if midpoint => (
            alpha_t / alpha_s0,
            -2.0 * sigma_t * (ep - 1.0),
            -sigma_t * (ep - 1.0),
            0.0,
            sigma_t * (2.0 * h).exp_m1().sqrt(),
        ),
        (SdeDpmSolver, _) => (
            alpha_t / alpha_s0,
            -2.0 * sigma_t * (ep - 1.0),
            -2.0 * sigma_t * ((ep - 1.0) / h - 1.0),
            0.0,
            sigma_t * (2.0 * h).exp_m1().sqrt(),
        ),
    };
    [c_x, c_d0, c_d1, c_d2, c_z]
}
