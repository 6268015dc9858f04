//! The lessons' protections beside replay: ECD's elastic weights and targets, the unconditional
//! anchor, orthogonal attention's lesson term and the EWC baseline's Fisher penalty (each one term
//! of `lesson::teach`'s loss).

use burn::prelude::*;

use super::adapter::Adapter;
use super::lesson::{mse_per_example, pick, Example, LessonOptions, Trainer};
use crate::error::Result;
use crate::rng::Rng;

/// ECD's elastic weights: per concept, running means of the student-teacher gap and of the
/// teacher's own error; a concept whose predictions drift further (relative to how well the
/// teacher itself did) is held harder.
#[derive(Default)]
pub(super) struct Elastic {
    /// (concept, gap EMA, own-error EMA); `None` is the base world.
    stats: Vec<(Option<usize>, f32, f32)>,
}

impl Elastic {
    pub(super) fn update(&mut self, concepts: &[Option<usize>], gap: &Tensor<1>, own: &Tensor<1>, options: &LessonOptions) -> Vec<f32> {
        let gap: Vec<f32> = gap.to_data().try_to_vec::<f32>().unwrap_or_default();
        let own: Vec<f32> = own.to_data().try_to_vec::<f32>().unwrap_or_default();
        for ((c, g), o) in concepts.iter().zip(&gap).zip(&own) {
            match self.stats.iter_mut().find(|s| s.0 == *c) {
                Some(s) => {
                    s.1 = 0.9 * s.1 + 0.1 * g;
                    s.2 = 0.9 * s.2 + 0.1 * o;
                }
                None => self.stats.push((*c, *g, *o)),
            }
        }
        concepts.iter().map(|c| self.weight(*c, options)).collect()
    }

    fn weight(&self, concept: Option<usize>, options: &LessonOptions) -> f32 {
        let drift = self.stats.iter().find(|s| s.0 == concept).map_or(0.0, |s| s.1 / s.2.max(1e-6));
        options.distill * (1.0 + options.kappa * drift)
    }

    pub(super) fn weights(&self, options: &LessonOptions) -> Vec<(usize, f32)> {
        self.stats.iter().filter_map(|s| s.0.map(|c| (c, self.weight(s.0, options)))).collect()
    }
}

/// OA's lesson term (L2DM Sec. 3.4): cross-attention scores are `q . k`, so a concept whose key
/// is orthogonal to another's at every cross-attention is never attended where the other is.
/// Mean over sites and earlier concepts of `cos^2(k_new, k_old)`, with each concept's key taken
/// at its token in "a <name>" (the newest concept is the last).
pub fn orthogonality(trainer: &Trainer, adapter: &Adapter) -> Result<Tensor<1>> {
    let prompts: Vec<String> = adapter.concepts.iter().map(|c| format!("a {}", c.token)).collect();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let ids = trainer.ids(&refs)?;
    let hidden = adapter.encode_ids(&trainer.model.text_encoder, &ids, &trainer.device)?;
    // A gated adapter's context carries its gate channels; the keys read the text features, and
    // concept i's token sits under block i's gate alone.
    let gates = if adapter.gated { 2 * adapter.concepts.len() } else { 0 };
    let [k, _, width] = hidden.dims();
    let d = width - gates;
    let gate = adapter.gated.then(|| Tensor::<2>::eye(k, &trainer.device).unsqueeze_dim::<3>(1));
    let rows: Vec<Tensor<2>> = adapter
        .concepts
        .iter()
        .zip(&ids)
        .enumerate()
        .map(|(i, (c, row))| {
            let pos = row.iter().position(|&id| id == c.token_id).unwrap_or(0);
            hidden.clone().slice([i..i + 1, pos..pos + 1, 0..d]).reshape([1, d])
        })
        .collect();
    let h = Tensor::cat(rows, 0);
    let mut unet = adapter.apply_unet(&trainer.model.unet)?;
    let mut total: Option<Tensor<1>> = None;
    let sites = super::adapter::cross_attentions(&mut unet);
    let n_sites = sites.len().max(1);
    for (_, attn) in sites {
        let keys = attn.to_k.forward_gated(h.clone().unsqueeze_dim::<3>(1), gate.as_ref()).squeeze_dim::<2>(1);
        let unit = keys.clone() / keys.square().sum_dim(1).sqrt().add_scalar(1e-6);
        let new = unit.clone().narrow(0, k - 1, 1);
        // A gated state's earlier concepts stay as they were: OA moves the new one away.
        let old = if adapter.gated { unit.narrow(0, 0, k - 1).detach() } else { unit.narrow(0, 0, k - 1) };
        let cos = old.matmul(new.transpose()); // [k-1, 1]
        let term = cos.square().mean();
        total = Some(match total {
            Some(t) => t + term,
            None => term,
        });
    }
    Ok(total.map_or_else(|| Tensor::zeros([1], &trainer.device), |t| t.div_scalar(n_sites as f64)))
}

/// Adds the diagonal Fisher information of the adapter on `examples` (mean squared gradient over
/// `batches` batches; Kirkpatrick et al. 2017) to `adapter.fisher`, for the EWC baseline.
pub fn accumulate_fisher(trainer: &Trainer, adapter: &mut Adapter, examples: &[Example], batches: usize, seed: u64) -> Result<()> {
    let mut rng = Rng::new(seed);
    let mut sum: Vec<Tensor<2>> = adapter.params().iter().map(|p| p.clone().detach().zeros_like()).collect();
    for _ in 0..batches {
        let batch = pick(examples, 4, &mut rng);
        let x0 = Tensor::cat(batch.iter().map(|e| e.latents.clone()).collect(), 0);
        let prompts: Vec<&str> = batch.iter().map(|e| e.prompt.as_str()).collect();
        let ids = trainer.ids(&prompts)?;
        let (x_t, target, t) = trainer.noise(x0, &mut rng);
        let loss = mse_per_example(trainer.predict(adapter, x_t, &t, &ids)?, target).mean();
        let grads = loss.backward();
        for (s, p) in sum.iter_mut().zip(adapter.params()) {
            if let Some(g) = p.grad(&grads) {
                *s = s.clone() + g.autodiff().square().div_scalar(batches as f64);
            }
        }
    }
    adapter.fisher = Some(match adapter.fisher.take() {
        Some(old) => sum.iter().enumerate().map(|(i, s)| old.get(i).map_or_else(|| s.clone(), |o| o.clone() + s.clone())).collect(),
        None => sum,
    });
    Ok(())
}

/// `sum_i F_i (theta_i - theta*_i)^2` over the LoRA tensors (Kirkpatrick et al. 2017, Eq. 3).
pub(super) fn ewc_penalty(adapter: &Adapter, anchor: &[Tensor<2>], fisher: &[Tensor<2>]) -> Tensor<1> {
    let params = adapter.params();
    let mut total: Option<Tensor<1>> = None;
    for ((p, a), f) in params.iter().zip(anchor).zip(fisher) {
        let term = ((p.clone() - a.clone()).square() * f.clone()).sum();
        total = Some(match total {
            Some(t) => t + term,
            None => term,
        });
    }
    total.unwrap_or_else(|| Tensor::zeros([1], &adapter.down[0].device()))
}

/// ECD's targets for the replayed rows: the previous state's predictions for the first
/// `concept_rows` (memory of earlier concepts, L2DM Sec. 3.2), the base model's for the rest
/// (base-world memory). Distilling plain prompts toward the previous state instead would carry
/// every lesson's drift into the next; toward the base it keeps them where pretraining left them.
pub(super) fn distill_targets(trainer: &Trainer, teacher: &Adapter, x_t: Tensor<4>, t: &[f32], ids: &[Vec<i64>], concept_rows: usize) -> Result<Tensor<4>> {
    let n = t.len();
    let mut parts = Vec::with_capacity(2);
    if concept_rows > 0 {
        let x = x_t.clone().narrow(0, 0, concept_rows);
        parts.push(trainer.predict(teacher, x, &t[..concept_rows], &ids[..concept_rows])?.detach());
    }
    if concept_rows < n {
        let x = x_t.narrow(0, concept_rows, n - concept_rows);
        parts.push(trainer.predict_base(teacher, x, &t[concept_rows..], &ids[concept_rows..])?);
    }
    Ok(Tensor::cat(parts, 0))
}

/// Mean squared gap between the adapted and the base model's empty-prompt predictions on `x_t`
/// (classifier-free guidance's unconditional branch, kept where pretraining left it).
pub(super) fn unconditional_anchor(trainer: &Trainer, adapter: &Adapter, x_t: Tensor<4>, t: &[f32]) -> Result<Tensor<1>> {
    let n = t.len();
    let ids = trainer.ids(&vec![""; n])?;
    let student = trainer.predict(adapter, x_t.clone(), t, &ids)?;
    let base = trainer.predict_base(adapter, x_t, t, &ids)?;
    Ok(mse_per_example(student, base).mean())
}
