//! Regional composition of routed concepts, for prompts that name two or more concepts of a
//! routed adapter. Summed, the concepts' LoRA blocks act on the whole image, so in "a <a> to the
//! left of a <b>" both objects come out in one concept's look (measured: README, "Lessons"). Here
//! each concept's block draws only where its token attends: at every step the model with all the
//! named blocks predicts the noise and yields the concepts' cross-attention maps; then, inside each
//! concept's region, its prediction is replaced by that of the model with the concept's block
//! alone. The regions follow the maps as A&E reads them (src/lifelong/artist.rs: softmax over the
//! text tokens, smoothed), each normalised to its peak, a cell going to the concept that attends
//! it most when that concept's map there reaches `threshold`.

use burn::prelude::*;

use super::adapter::Adapter;
use super::artist::{aggregate, default_grid, token_maps};
use crate::error::{Error, Result};
use crate::kernels::attention::upsample_bilinear;
use crate::loader::LoadedModel;
use crate::model::attention::{AttnHook, CrossMap};
use crate::model::unet::UNet2DConditionModel;

/// A cell belongs to a concept's region from this share of the concept map's peak.
const THRESHOLD: f32 = 0.4;
/// A&E's smoothing of the token maps.
const SIGMA: f32 = 0.5;

/// One generation's composition: per named concept the UNet with only its block, and its token's
/// position in the prompt.
pub struct Composer {
    parts: Vec<(UNet2DConditionModel, usize)>,
    grid: [usize; 2],
    text_end: usize,
}

impl Composer {
    /// The composition for `prompt` on `base` (the model without concepts) with `adapter`, or
    /// `None` when the adapter is not routed or the prompt names fewer than two of its concepts.
    pub fn plan(adapter: &Adapter, base: &LoadedModel, prompt: &str, latent: [usize; 2]) -> Result<Option<Self>> {
        let present = adapter.concepts_in(prompt);
        if adapter.routes.is_empty() || present.len() < 2 {
            return Ok(None);
        }
        let grids = base.unet.attention_grids(latent);
        let grid = default_grid(latent, &grids).ok_or_else(|| Error::InvalidInput("compose: the model has no cross-attention".into()))?;
        let mut parts = Vec::with_capacity(present.len());
        let mut text_end = 0;
        for &c in &present {
            let mut model = base.clone();
            adapter.routed(&[c]).install(&mut model)?;
            let encoded = model.tokenizer.encode(prompt)?;
            let token_id = adapter.concepts[c].token_id;
            let Some(position) = encoded.ids.iter().position(|&id| id == token_id) else { return Ok(None) };
            text_end = encoded.len.saturating_sub(1);
            parts.push((model.unet, position));
        }
        Ok(Some(Self { parts, grid, text_end }))
    }

    /// The noise prediction for `input` (`[2, c, h, w]`: negative then prompt under guidance,
    /// `[1, ...]` without): `all` (the model with every named block) everywhere, and in each
    /// concept's region the prediction of that concept's own model.
    pub fn predict(&self, all: &UNet2DConditionModel, input: Tensor<4>, t: f32, context: &Tensor<3>) -> Tensor<4> {
        let (out, maps) = all.forward_with_maps(input.clone(), t, context, &AttnHook::at(&[self.grid]));
        let [_, _, h, w] = input.dims();
        let Some(regions) = self.regions(&maps, [h, w]) else { return out };
        let mut result = out.clone();
        for (k, (unet, _)) in self.parts.iter().enumerate() {
            let own = unet.forward(input.clone(), t, context);
            let mask = regions.clone().narrow(0, k, 1).cast(out.dtype());
            result = result + (own - out.clone()) * mask;
        }
        result
    }

    /// `[k, 1, h, w]` 0/1 masks of the concepts' regions on the latent grid, read from the
    /// prompt's own batch item (the last).
    fn regions(&self, maps: &[CrossMap], latent: [usize; 2]) -> Option<Tensor<4>> {
        if self.text_end < 2 {
            return None;
        }
        let aggregated = aggregate(maps, self.grid)?;
        let token = token_maps(aggregated, self.grid, self.text_end, SIGMA);
        let [_, gh, gw] = token.dims();
        let rows: Vec<Tensor<3>> = self.parts.iter().map(|&(_, p)| token.clone().narrow(0, p - 1, 1)).collect();
        let concepts = Tensor::cat(rows, 0);
        let k = concepts.dims()[0];
        let peak = concepts.clone().reshape([k, gh * gw]).max_dim(1).clamp_min(1e-12).reshape([k, 1, 1]);
        let share = concepts / peak;
        let best = share.clone().max_dim(0);
        let own = share.clone().greater_equal(best.expand([k, gh, gw])).float() * share.greater_equal_elem(THRESHOLD).float();
        let masks = upsample_bilinear(own.reshape([1, k, gh, gw]), latent[0], latent[1]).reshape([k, 1, latent[0], latent[1]]);
        Some(masks.greater_equal_elem(0.5).float())
    }
}
