//! Concept gates: where each concept-gated LoRA block acts (L2DM's shared adapter,
//! src/lifelong/gate.rs). Block `k` belongs to concept `k`; it acts on the text positions its
//! concept's token reaches in the causal text encoder (the token and every one after it) and on
//! the image of every row whose prompt holds the token. A prompt without the token gives the
//! block a zero gate everywhere, so it is exactly the model without the block: no lesson moves a
//! prompt that does not name its concept, the empty prompt included.
//!
//! Under classifier-free guidance the negative prompt's row opens the blocks its prompt opens,
//! on all of its text ([`negative_gates`]): a prompt naming a concept draws with the concept's
//! model on both halves, as a routed block (installed for the prompt) does. Left closed, the
//! negative half is the base model and guidance multiplies the block's whole drift (backgrounds,
//! contrast) into the picture, as it did for routed blocks held at the base on the empty prompt:
//! seed 0's hourglass lesson drew 10 of 16 probes with the negative half closed, 16 with it open
//! (README, "Lessons", session 29).
//!
//! The gates travel with the text context: `2 * concepts` channels after the text features (per
//! concept, whether its block is open on the row, then its reach), appended by the text encoding
//! ([`gate_channels`]) and split off again by each transformer block ([`gates`]), so no forward
//! signature changes.

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
/// token, whether the row holds it (1 at every position), then its reach (1 from its first
/// position on).
pub fn gate_channels(ids: &[Vec<i64>], tokens: &[i64], device: &Device) -> Tensor<3> {
    let (b, m, k) = (ids.len(), ids.first().map_or(0, Vec::len), tokens.len());
    let mut data = vec![0f32; b * m * 2 * k];
    for (row, row_ids) in ids.iter().enumerate() {
        for (j, token) in tokens.iter().enumerate() {
            let Some(first) = row_ids.iter().position(|id| id == token) else { continue };
            for pos in 0..m {
                let at = (row * m + pos) * 2 * k;
                data[at + j] = 1.0;
                data[at + k + j] = if pos >= first { 1.0 } else { 0.0 };
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
    let open = open_channels(context, d, k);
    let reach = context.clone().narrow(2, d + k, k);
    (text, Some(Gates { image: open, text: reach }))
}

/// The negative prompt's context `negative` (`[1, m, d + 2k]`, its own gates included) with the
/// blocks `prompt`'s context opens open on it too, over all of its text: under guidance both
/// halves then draw with the prompt's concepts (module doc). Contexts without gate channels
/// (`k = 0`) are returned as they are.
pub fn negative_gates(negative: Tensor<3>, prompt: &Tensor<3>, k: usize) -> Tensor<3> {
    let [b, m, c] = negative.dims();
    if k == 0 || c < 2 * k {
        return negative;
    }
    let d = c - 2 * k;
    let open = open_channels(prompt, d, k);
    let opened = Tensor::cat(vec![open.clone(), open], 2).expand([b, m, 2 * k]);
    let gates = negative.clone().narrow(2, d, 2 * k).max_pair(opened);
    Tensor::cat(vec![negative.narrow(2, 0, d), gates], 2)
}

/// Whether each block is open on each row, `[b, 1, k]`, from the `k` channels after the `d` text
/// features: the same at every position of a row; the max also covers contexts extended by clauses.
fn open_channels(context: &Tensor<3>, d: usize, k: usize) -> Tensor<3> {
    context.clone().narrow(2, d, k).max_dim(1)
}
