//! The gradient mask of a lesson that adds a block beside earlier ones (gated lessons,
//! src/lifelong/gate.rs, and null-space ones, src/lifelong/null_space.rs): only the new block's
//! rank rows, on the sites it trains, and the new concept's embedding get a gradient. Adam leaves
//! a parameter without a gradient as it is (src/lifelong/adam.rs), so earlier concepts' blocks and
//! tokens stay exactly as they were.

use std::ops::Range;

use burn::prelude::*;

use super::adapter::Adapter;

pub struct Hold {
    /// 1 on the new block's rank columns `[1, R]` (the down-projections') and rows `[R, 1]`
    /// (the up-projections').
    pub(super) column: Tensor<2>,
    row: Tensor<2>,
    /// Per LoRA site: whether the new block trains it.
    trained_sites: Vec<bool>,
    /// Embeddings before the new concept's.
    frozen_embeddings: usize,
}

impl Hold {
    /// Trains rows `block` of `rank` on the sites marked in `trained_sites`, and the embeddings
    /// after the first `frozen_embeddings`.
    pub fn new(block: &Range<usize>, rank: usize, trained_sites: Vec<bool>, frozen_embeddings: usize, device: &Device) -> Self {
        let ones: Vec<f32> = (0..rank).map(|i| if block.contains(&i) { 1.0 } else { 0.0 }).collect();
        Self {
            column: Tensor::from_data(TensorData::new(ones.clone(), [1, rank]), device),
            row: Tensor::from_data(TensorData::new(ones, [rank, 1]), device),
            trained_sites,
            frozen_embeddings,
        }
    }

    /// A gated lesson's: its block (the adapter's last route) on every site, its token alone.
    pub fn last_block(adapter: &Adapter, device: &Device) -> Self {
        let block = adapter.routes.last().cloned().unwrap_or(0..0);
        let earlier = adapter.embeddings.len().saturating_sub(1);
        Self::new(&block, adapter.config.rank, vec![true; adapter.down.len()], earlier, device)
    }

    /// `grads` in [`Adapter::params`]' order (downs, ups, embeddings) with everything held
    /// dropped or zeroed.
    pub fn mask(&self, grads: Vec<Option<Tensor<2>>>) -> Vec<Option<Tensor<2>>> {
        let sites = self.trained_sites.len();
        grads
            .into_iter()
            .enumerate()
            .map(|(i, g)| match i {
                i if i < sites => self.trained_sites[i].then(|| g.map(|g| g * self.column.clone())).flatten(),
                i if i < 2 * sites => self.trained_sites[i - sites].then(|| g.map(|g| g * self.row.clone())).flatten(),
                i => (i - 2 * sites >= self.frozen_embeddings).then_some(g).flatten(),
            })
            .collect()
    }
}
