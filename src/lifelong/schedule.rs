//! What changes along a lesson's steps: the learning rate's decay, the moving average of the
//! adapter's tensors, and the steps whose states a lesson keeps as candidates.

use burn::prelude::*;

/// The steps (1-based) at which a lesson of `steps` keeps one of `candidates` states: spread
/// evenly over its second half, ending at the last step.
pub fn candidate_steps(steps: usize, candidates: usize) -> Vec<usize> {
    if candidates < 2 || steps < 2 {
        return Vec::new();
    }
    let first = steps.div_ceil(2);
    let mut out: Vec<usize> = (0..candidates).map(|i| first + i * (steps - first) / (candidates - 1)).collect();
    out.dedup();
    out
}

/// One step of the moving average: `avg <- d * avg + (1 - d) * params` (the first step starts it).
pub(super) fn ema_update(avg: Option<Vec<Tensor<2>>>, params: &[Tensor<2>], decay: f64) -> Vec<Tensor<2>> {
    let fresh = params.iter().map(|p| p.clone().detach());
    match avg {
        None => fresh.collect(),
        Some(avg) => avg.into_iter().zip(fresh).map(|(a, p)| (a.mul_scalar(decay) + p.mul_scalar(1.0 - decay)).detach()).collect(),
    }
}

/// The learning rate's share at `step` (1-based) of `steps`: a half cosine from 1 to `end`.
pub fn lr_factor(step: usize, steps: usize, end: f64) -> f64 {
    let progress = if steps > 1 { (step - 1) as f64 / (steps - 1) as f64 } else { 0.0 };
    end + (1.0 - end) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::lr_factor;

    #[test]
    fn candidates_spread_over_the_second_half() {
        use super::candidate_steps;
        assert_eq!(candidate_steps(300, 4), [150, 200, 250, 300]);
        assert_eq!(candidate_steps(301, 3), [151, 226, 301]);
        assert_eq!(candidate_steps(3, 4), [2, 3], "never the same step twice");
        assert!(candidate_steps(300, 1).is_empty() && candidate_steps(300, 0).is_empty());
    }

    #[test]
    fn the_moving_average_starts_at_the_first_step_and_weighs_later_ones_by_one_minus_decay() {
        use super::ema_update;
        use burn::prelude::*;
        let device = Device::flex();
        let t = |v: f32| vec![Tensor::<2>::from_data(TensorData::new(vec![v; 4], [2, 2]), &device)];
        let avg = ema_update(None, &t(1.0), 0.75);
        assert_eq!(avg[0].clone().into_data().try_to_vec::<f32>().unwrap(), vec![1.0; 4], "the first step starts it");
        let avg = ema_update(Some(avg), &t(5.0), 0.75);
        assert_eq!(avg[0].clone().into_data().try_to_vec::<f32>().unwrap(), vec![2.0; 4], "0.75 * 1 + 0.25 * 5");
    }

    #[test]
    fn learning_rate_falls_from_one_to_its_end_share() {
        assert_eq!(lr_factor(1, 300, 0.05), 1.0);
        assert!((lr_factor(300, 300, 0.05) - 0.05).abs() < 1e-12);
        assert!((lr_factor(150, 299, 0.0) - 0.5).abs() < 1e-12, "half-way is half the rate");
        let rates: Vec<f64> = (1..=300).map(|s| lr_factor(s, 300, 0.05)).collect();
        assert!(rates.windows(2).all(|w| w[1] <= w[0]), "never rises");
        assert!((1..=10).all(|s| lr_factor(s, 10, 1.0) == 1.0), "end share 1 keeps the rate");
        assert_eq!(lr_factor(1, 1, 0.05), 1.0, "a one-step lesson runs at the full rate");
    }
}
