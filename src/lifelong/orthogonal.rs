//! Orthogonal attention at generation (OA's edit, L2DM: Sun et al. 2023, "Orthogonal
//! Attention"): in a prompt with two or more subjects, each subject's words (its noun or
//! `<concept>` token and the attributes bound to it, as the artist finds them) attend only inside
//! that subject's region, so different subjects' cross-attention maps do not overlap (they are
//! orthogonal) and "red" in "a red circle to the left of a blue square" cannot colour the square.
//!
//! The regions come from the prompt's own words, as composition lays them out
//! (src/lifelong/compose.rs: a relation between two subjects, each subject's place, else left to
//! right). The edit is an additive bias on the cross-attention scores of the subject's tokens,
//! `-strength * (1 - w_k)` with `w_k` the cell's weight for the token's region: zero inside the
//! region, `-strength` outside; the prompt's other tokens (articles, relation and background
//! words, start, end and padding) are read everywhere. This is layout-guided attention modulation
//! as in Dense Diffusion (Kim et al. 2023, eq. 3-4, without its per-timestep schedule) applied
//! through the attention kernel's score-bias map (src/kernels/attention.rs). Biasing the subject
//! words alone leaves the colours mixed, because the causal text encoder's end and padding tokens
//! carry every word of the prompt; so each region also reads its own clause, encoded on its own
//! ([`extended_context`]): its end and padding tokens say only that subject's words, and inside
//! its region a clause is raised over the prompt ([`CLAUSE_BOOST`]). On 64 prompts naming one
//! shape in two colours (built-in model, each colour judged at its place; untracked harness,
//! session 20) the plain drawing bound 30, the subject-word bias alone 39, and with the clauses
//! 58 (before the boost); a region reading its clause only (without the prompt) drew a single
//! object (0 of 32), and without the prompt's end and padding tokens the objects broke (15 of
//! 32). Only the prompt's own batch item is biased: guidance's negative prompt attends as before.

use burn::prelude::*;

use super::artist::find_subjects;
use super::compose::{region_weights, regions, scene_background};

/// The bias outside a subject's region, in score units: a token's softmax weight falls by
/// `e^-strength` there (8: a factor of ~3000). On the built-in model's two-object prompts drawn
/// whole (`eval world --n 100 --categories two-object --no-compose`, 200 prompts) the edit with
/// the clauses raised in their regions ([`CLAUSE_BOOST`]) raises the relation right from 50% /
/// 52% (seen / held-out) to 96% / 99% and every attribute right from 42% / 40% to 82% / 79%,
/// colour within 3 points (README, Figures; 83% / 90% and 72% / 72% before the boost). With
/// the subject-word bias alone, 20 and 50 gave the same figures as 8 on 50 prompts. It is on by
/// default (`GenerateOptions::orthogonal`).
pub const DEFAULT_STRENGTH: f32 = 8.0;

/// Inside its region a clause's tokens also gain `CLAUSE_BOOST * strength` (4 at the default: a
/// factor of ~55), as Dense Diffusion raises the scores inside a segment as well as lowering them
/// outside (Kim et al. 2023, eq. 3-4). Why: the prompt's own end and padding tokens, read
/// everywhere, say every subject, and where they outweigh the region's clause the layout is the
/// unedited prompt's. On eval lifelong's 64 prompts naming one shape in two colours (built-in
/// model, untracked harness, 2026-11-28) the edit without the boost bound 51: 9 of its 13 misses
/// were clean swaps, both objects drawn in their own colour and size, each on the other's side;
/// with a boost of 2, 4 and 6 score units (`CLAUSE_BOOST` 0.25, 0.5, 0.75) it bound 59, 60 and
/// 60, no swap left (the misses are a colour not drawn). On 64 other such prompts, 59 -> 61; on
/// the eval's two-shape prompts, 59 -> 60. Scaling the prompt's own end and padding tokens down
/// instead (by e^-2 / e^-4) bound 57 / 58.
pub const CLAUSE_BOOST: f32 = 0.5;

/// The subjects' token positions, clauses and regions in a tokenized prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRegions {
    /// `(token position, region)` of every subject word.
    pub tokens: Vec<(usize, usize)>,
    /// Each region's clause as a prompt of its own (with the scene's background, if named), for
    /// reports (`generate` prints them).
    pub clauses: Vec<String>,
    /// Region centres `[x, y]` in `[0, 1]`.
    pub centers: Vec<[f32; 2]>,
}

/// The regions of `tokens` (as [`crate::tokenizer::ClipTokenizer::tokens`] spells them, position
/// 0 the start token); `None` with fewer than two subjects or no layout (two in one place).
pub fn token_regions(tokens: &[String]) -> Option<TokenRegions> {
    let subjects = find_subjects(tokens);
    if subjects.nouns.len() < 2 {
        return None;
    }
    let words: Vec<&str> = tokens.iter().skip(1).map(String::as_str).take_while(|t| !t.starts_with("<|")).collect();
    let (text, scene) = scene_background(&words.join(" "));
    // Each noun's byte span in the text, found in order as whole words.
    let mut spans = Vec::with_capacity(subjects.nouns.len());
    let mut from = 0;
    for &at in &subjects.nouns {
        let noun = tokens[at].as_str();
        let found = text[from..].match_indices(noun).map(|(i, _)| from + i).find(|&i| is_word(&text, i, noun.len()))?;
        spans.push((found, found + noun.len()));
        from = found + noun.len();
    }
    let (clauses, centers) = regions(&text, &spans)?.into_iter().map(|(clause, center)| (clause + scene.as_deref().unwrap_or(""), center)).unzip();
    let mut words: Vec<(usize, usize)> = subjects.nouns.iter().enumerate().map(|(k, &at)| (at, k)).collect();
    words.extend(subjects.attributes.iter().copied());
    words.sort_unstable();
    Some(TokenRegions { tokens: words, clauses, centers })
}

fn is_word(text: &str, at: usize, len: usize) -> bool {
    let bytes = text.as_bytes();
    (at == 0 || bytes[at - 1] == b' ') && (at + len == bytes.len() || bytes[at + len] == b' ')
}

/// A score low enough that a token gets no weight at all.
const UNREAD: f32 = -1.0e4;

/// The context the edit attends over: the prompt's own encoding followed by each region's clause
/// encoded on its own, `[batch, (1 + k) * context_len, d]`. The negative prompt's item (under
/// guidance, first) is its own encoding repeated as often: equal keys share the softmax weight
/// their one copy had, so it reads exactly as before.
pub fn extended_context(context: &Tensor<3>, clauses: Vec<Tensor<3>>) -> Tensor<3> {
    let batch = context.dims()[0];
    let parts = 1 + clauses.len();
    let own = context.clone().narrow(0, batch - 1, 1);
    let mut items = Vec::with_capacity(batch);
    if batch > 1 {
        items.push(Tensor::cat(vec![context.clone().narrow(0, 0, batch - 1); parts], 1));
    }
    items.push(Tensor::cat(std::iter::once(own).chain(clauses).collect(), 1));
    Tensor::cat(items, 0)
}

/// The score bias `[batch, (1 + k) * context_len, h, w]` over [`extended_context`] for `regions`
/// on a `grid` of query cells. In the prompt's own part, each subject's words get `-strength *
/// (1 - w)`, `w` the cell's weight for the subject's region: zero inside, `-strength` outside; its
/// other tokens are left alone. Region `k`'s clause is read only in that region (the same bias,
/// plus `CLAUSE_BOOST * strength * w`: raised inside), every token but the start token, which is
/// the prompt's own (the text encoder is causal) and would be counted twice. Why the clauses: in
/// a causal text encoder the end token and the padding after it carry every word before them, so
/// in "a red circle to the left of a blue circle" they say "red" and "blue" everywhere; a region's
/// clause says only its own subject's colour. Only the prompt's own item (the last) is biased:
/// guidance's negative prompt attends as before.
pub fn bias_map(regions: &TokenRegions, context_len: usize, grid: [usize; 2], batch: usize, strength: f32, device: &Device) -> Tensor<4> {
    let [h, w] = grid;
    let masks = region_weights(&regions.centers, grid);
    let cells = h * w;
    let total = (1 + regions.centers.len()) * context_len;
    let mut data = vec![0.0f32; batch * total * cells];
    let own = (batch - 1) * total * cells;
    let boost = strength * CLAUSE_BOOST;
    // `inside`: the bias at the region's centre (0 for the prompt's own words, `boost` for a clause's).
    let mut set = |token: usize, region: Option<usize>, inside: f32| {
        for (cell, v) in data[own + token * cells..own + (token + 1) * cells].iter_mut().enumerate() {
            *v = region.map_or(UNREAD, |k| {
                let w = masks[k * cells + cell];
                inside * w - strength * (1.0 - w)
            });
        }
    };
    for &(token, region) in regions.tokens.iter().filter(|(token, _)| *token < context_len) {
        set(token, Some(region), 0.0);
    }
    for k in 0..regions.centers.len() {
        let part = (k + 1) * context_len;
        set(part, None, 0.0);
        (part + 1..part + context_len).for_each(|token| set(token, Some(k), boost));
    }
    Tensor::from_data(TensorData::new(data, [batch, total, h, w]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{GenerateOptions, Pipeline};

    fn spelled(prompt: &str) -> Vec<String> {
        let mut out = vec!["<|startoftext|>".to_string()];
        out.extend(prompt.split_whitespace().map(String::from));
        out.push("<|endoftext|>".into());
        out
    }

    #[test]
    fn each_subject_and_its_attributes_get_the_region_its_relation_gives() {
        let r = token_regions(&spelled("a red circle to the left of a large blue square on a sky background")).expect("two subjects");
        assert_eq!(r.tokens, vec![(2, 0), (3, 0), (9, 1), (10, 1), (11, 1)]);
        assert_eq!(r.centers, vec![[0.25, 0.5], [0.75, 0.5]]);
        assert_eq!(r.clauses, vec!["a red circle on a sky background", "a large blue square on a sky background"]);
        // Background first, "above", and the same shape twice.
        let r = token_regions(&spelled("a night background with a green heart above a green heart")).expect("two subjects");
        assert_eq!(r.centers, vec![[0.5, 0.25], [0.5, 0.75]]);
        assert_eq!(r.tokens, vec![(6, 0), (7, 0), (10, 1), (11, 1)]);
        assert_eq!(token_regions(&spelled("a red circle on the left")), None, "one subject: nothing to keep apart");
        assert_eq!(token_regions(&spelled("a red circle on the left and a blue square on the left")), None, "one place for both");
    }

    #[test]
    fn the_bias_is_zero_inside_a_subjects_region_and_strong_outside() {
        let r = token_regions(&spelled("a red circle to the left of a blue square")).unwrap();
        let bias: Vec<f32> = bias_map(&r, 77, [4, 4], 2, 8.0, &Device::flex()).into_data().try_to_vec().unwrap();
        assert_eq!(bias.len(), 2 * 3 * 77 * 16, "the prompt's part and one part per clause");
        let at = |b: usize, token: usize, y: usize, x: usize| bias[((b * 3 * 77 + token) * 4 + y) * 4 + x];
        assert!(bias[..3 * 77 * 16].iter().all(|&v| v == 0.0), "the negative prompt's item is left alone");
        assert!(at(1, 3, 1, 0).abs() < 1e-3 && at(1, 3, 1, 3) < -7.9, "circle: its left region, not the right");
        assert!(at(1, 2, 2, 0).abs() < 1e-3 && at(1, 2, 2, 3) < -7.9, "red goes with circle");
        assert!(at(1, 9, 0, 3).abs() < 1e-3 && at(1, 9, 0, 0) < -7.9, "square: the right region");
        let everywhere = |token: usize, test: &dyn Fn(f32) -> bool| (0..16).all(|c| test(at(1, token, c / 4, c % 4)));
        assert!(everywhere(1, &|v| v == 0.0) && everywhere(5, &|v| v == 0.0), "articles and relation words: no bias");
        assert!(everywhere(0, &|v| v == 0.0) && everywhere(11, &|v| v == 0.0), "the prompt's start, end and padding: read everywhere");
        // The clauses: "a red circle" on the left, "a blue square" on the right, start token unread.
        assert!(everywhere(77, &|v| v <= UNREAD) && everywhere(2 * 77, &|v| v <= UNREAD), "a clause's start token is the prompt's");
        let raised = 8.0 * CLAUSE_BOOST;
        for token in [77 + 2, 77 + 4, 77 + 76] {
            assert!((at(1, token, 1, 0) - raised).abs() < 1e-2 && at(1, token, 1, 3) < -7.9, "the left clause's word, end and padding: raised on the left, unread on the right");
        }
        for token in [2 * 77 + 2, 2 * 77 + 4, 2 * 77 + 76] {
            assert!((at(1, token, 1, 3) - raised).abs() < 1e-2 && at(1, token, 1, 0) < -7.9, "the right clause's: the other way");
        }
    }

    #[test]
    fn the_negative_prompts_repeated_context_reads_as_its_own() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd1");
        let device = Device::flex();
        let model = crate::loader::load(&crate::native::Folder(dir), &device).expect("fixture loads");
        let p = Pipeline::new(model, device.clone());
        let encode = |text: &str| p.encode_prompt(text, &mut Vec::new()).unwrap();
        let context = Tensor::cat(vec![encode(""), encode("a red circle to the left of a blue square")], 0);
        let extended = extended_context(&context, vec![encode("a red circle"), encode("a blue square")]);
        let [_, len, d] = context.dims();
        assert_eq!(extended.dims(), [2, 3 * len, d]);
        let [_, c, h, w] = [1, p.model.unet_config.in_channels, 8, 8];
        let x = Tensor::<4>::from_data(TensorData::new((0..c * h * w).map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5).collect::<Vec<f32>>(), [1, c, h, w]), &device);
        let plain = p.model.unet.forward(x.clone(), 500.0, &context.narrow(0, 0, 1));
        let repeated = p.model.unet.forward(x, 500.0, &extended.narrow(0, 0, 1));
        let gap = (plain - repeated).abs().max().into_scalar::<f32>();
        assert!(gap < 1e-4, "the negative prompt's item moved by {gap}");
    }

    #[test]
    fn the_edit_changes_two_subject_generations_only_when_on() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd1");
        let device = Device::flex();
        let p = Pipeline::new(crate::loader::load(&crate::native::Folder(dir), &device).expect("fixture loads"), device);
        let run = |prompt: &str, orthogonal: f32| {
            let options = GenerateOptions { prompt: prompt.into(), steps: 3, seed: 3, orthogonal, ..Default::default() };
            p.generate(&options, &mut |_| {}).unwrap().latents.into_data().try_to_vec::<f32>().unwrap()
        };
        let two = "a red circle to the left of a blue square";
        assert_ne!(run(two, DEFAULT_STRENGTH), run(two, 0.0), "the edit reaches the cross-attention");
        let one = "a red circle on the left";
        assert_eq!(run(one, DEFAULT_STRENGTH), run(one, 0.0), "one subject: nothing to edit");
        let bad = GenerateOptions { prompt: two.into(), orthogonal: f32::NAN, ..Default::default() };
        assert!(p.generate(&bad, &mut |_| {}).is_err(), "a strength that is not a number is refused");
    }
}
