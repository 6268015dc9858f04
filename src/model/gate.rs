//! Concept gates: where each concept-gated LoRA block acts (L2DM's shared adapter,
//! src/lifelong/gate.rs). Block `k` belongs to concept `k`; it acts on the text positions its
//! concept's token reaches in the causal text encoder (the token and every one after it) and on
//! the image of every row whose prompt holds the token. A prompt without the token gives the
//! block a zero gate everywhere, so it is exactly the model without the block: no lesson moves a
//! prompt that does not name its concept, the empty prompt included.
//!
//! The gates travel with the text context: `2 * concepts` channels after the text features (the
//! token's one-hot, then its reach), appended by the text encoding ([`gate_channels`]) and split
//! off again by each transformer block ([`gates`]), so no forward signature changes.

use burn::prelude::*;

use super::attention::Attention;

/// The gates of one transformer block, one per concept's block.
pub struct Gates {
    /// `[b, 1, blocks]`: 1 on a row whose prompt holds the concept's token (the same at every image
    /// position, so it broadcasts over them rather than being repeated in every block).
    pub image: Tensor<3>,
    /// `[b, m, blocks]`: 1 on the text positions the concept's token reaches, else 0.
    pub text: Tensor<3>,
}

/// The gate channels `[b, m, 2 * tokens.len()]` of token rows `ids` (`[b][m]`): per concept
/// token, its one-hot over positions, then its reach (1 from its first position on).
pub fn gate_channels(ids: &[Vec<i64>], tokens: &[i64], device: &Device) -> Tensor<3> {
    let (b, m, k) = (ids.len(), ids.first().map_or(0, Vec::len), tokens.len());
    let mut data = vec![0f32; b * m * 2 * k];
    for (row, row_ids) in ids.iter().enumerate() {
        for (j, token) in tokens.iter().enumerate() {
            let Some(first) = row_ids.iter().position(|id| id == token) else { continue };
            for (pos, id) in row_ids.iter().enumerate().skip(first) {
                let at = (row * m + pos) * 2 * k;
                data[at + j] = if id == token { 1.0 } else { 0.0 };
                data[at + k + j] = 1.0;
            }
        }
    }
    Tensor::from_data(TensorData::new(data, [b, m, 2 * k]), device)
}

/// Splits `context` into the text features attn2 reads and, when it carries gate channels, the
/// block's gates: a block acts on every image position of a row whose prompt holds its token.
/// (Gating the image side by the attention attn2 pays the token, over its peak, learnt less: the
/// crescent 75% of its probes against 100%, README "Lessons", session 28.)
pub fn gates(attn2: &Attention, context: &Tensor<3>) -> (Tensor<3>, Option<Gates>) {
    let d = attn2.to_k.weight.dims()[0];
    let [_, _, c] = context.dims();
    if c <= d {
        return (context.clone(), None);
    }
    let k = (c - d) / 2;
    let text = context.clone().narrow(2, 0, d);
    let token = context.clone().narrow(2, d, k);
    let reach = context.clone().narrow(2, d + k, k);
    let present = token.sum_dim(1).clamp(0.0, 1.0); // [b, 1, k]
    (text, Some(Gates { image: present, text: reach }))
}
