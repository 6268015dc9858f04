//! Adam (Kingma & Ba 2015, Algorithm 1) over the adapter's tensors, with global-norm clipping.
//!
//! Our own few lines instead of burn's optimizer stack: the adapter is a flat list of leaves that
//! is rebuilt into the model every step (src/lifelong/adapter.rs), not one burn `Module`.

use burn::prelude::*;

/// Settings and state; moments are created at the first step.
pub struct Adam {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Gradients are scaled down so that their joint L2 norm is at most this (0: off).
    pub clip_norm: f64,
    step: i32,
    m: Vec<Tensor<2>>,
    v: Vec<Tensor<2>>,
}

impl Default for Adam {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, clip_norm: 1.0, step: 0, m: Vec::new(), v: Vec::new() }
    }
}

impl Adam {
    /// Updates `params[i]` with `grads[i]` at learning rate `lrs[i]`; a missing gradient leaves
    /// its parameter as it is. Returns the gradients' joint L2 norm before clipping.
    ///
    /// Params must be autodiff leaves; they come back as fresh leaves (`require_grad`).
    pub fn step(&mut self, params: &mut [Tensor<2>], grads: Vec<Option<Tensor<2>>>, lrs: &[f64]) -> f64 {
        if self.m.len() != params.len() {
            self.m = params.iter().map(|p| p.clone().detach().zeros_like()).collect();
            self.v = self.m.clone();
        }
        let norm = grads.iter().flatten().map(|g| f64::from(g.clone().square().sum().into_scalar::<f32>())).sum::<f64>().sqrt();
        let clip = if self.clip_norm > 0.0 && norm > self.clip_norm { self.clip_norm / norm } else { 1.0 };
        self.step += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let correct1 = 1.0 - b1.powi(self.step);
        let correct2 = 1.0 - b2.powi(self.step);
        for (i, grad) in grads.into_iter().enumerate() {
            let Some(grad) = grad else { continue };
            let p = params[i].clone().detach();
            // The gradient comes back without an autodiff association; give it one so it meets
            // the detached parameter on the same backend.
            let g = grad.autodiff().mul_scalar(clip);
            self.m[i] = self.m[i].clone().mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1);
            self.v[i] = self.v[i].clone().mul_scalar(b2) + g.square().mul_scalar(1.0 - b2);
            let m_hat = self.m[i].clone().div_scalar(correct1);
            let v_hat = self.v[i].clone().div_scalar(correct2);
            let update = m_hat / v_hat.sqrt().add_scalar(self.eps);
            params[i] = (p - update.mul_scalar(lrs[i])).detach().require_grad();
        }
        norm
    }
}
