//! Where a new concept's token embedding starts: at the vocabulary word that the base model
//! finds best explains the lesson's pictures.
//!
//! Textual inversion starts the new embedding from a word the user names for the concept's
//! class (Gal et al. 2023, sec. 4: "initialized with a single-word coarse descriptor"). Here the
//! word is found instead: each candidate stands in for the concept's token in the pictures'
//! prompts, and the base model's denoising error on the pictures ranks them, which is the
//! diffusion model read as a classifier (Li et al. 2023, "Your Diffusion Model is Secretly a
//! Zero-Shot Classifier", eq. 4: the class with the lowest expected error). Every candidate sees
//! the same timesteps and noise, so the ranking compares words, not draws.
//!
//! Measured on the built-in model (README, "Lessons"): from the mean embedding, small taught
//! objects came out in the model's default colours; from the word found (the pictures' colour,
//! as a rule) the lesson keeps their colour at every size.

use burn::prelude::*;

use super::adapter::Adapter;
use super::lesson::{mse_per_example, Example, Trainer};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Vocabularies with more whole words than this (full CLIP: about 30 000) are not searched
/// through: only the words the user gave with the pictures are candidates.
pub const MAX_CANDIDATES: usize = 512;

/// Timesteps of the first round, which every candidate goes through, and of the second, for the
/// shortlist (spread evenly over the schedule).
const COARSE: usize = 2;
const TIMESTEPS: usize = 8;
/// Candidates the second round scores again.
const SHORTLIST: usize = 8;

/// A candidate word and its denoising error on the pictures, relative to the median candidate's
/// (lower explains them better; 1 is the median).
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub word: String,
    pub id: i64,
    pub error: f32,
}

/// The words to try for a lesson whose examples' prompts hold `token`: the vocabulary's whole
/// words when there are at most [`MAX_CANDIDATES`], else those among them that the prompts
/// themselves use besides the token (the user's words); none when a prompt is the token alone.
pub fn candidates(trainer: &Trainer, token: &str, examples: &[Example]) -> Vec<(String, i64)> {
    // A picture whose prompt says nothing besides the concept ("a <tee>") leaves its scene to the
    // word as well, and the winner describes the scene ("top", "night" in a trial), not the
    // concept: the search needs every picture described apart from it.
    let described = |e: &Example| words_besides(&e.prompt, token).iter().any(|w| !matches!(w.as_str(), "a" | "an" | "the"));
    if !examples.iter().all(described) {
        return Vec::new();
    }
    let words = trainer.model.tokenizer.whole_words();
    if words.len() <= MAX_CANDIDATES {
        // A word's own tail ("hite" of "white", "ackground" of "background") is a vocabulary
        // entry of its own in a BPE vocabulary; as a start it means nothing.
        let tail = |w: &str| words.iter().any(|(o, _)| o.len() > w.len() && o.ends_with(w));
        return words.iter().filter(|(w, _)| !tail(w)).cloned().collect();
    }
    let given: Vec<String> = examples.iter().flat_map(|e| words_besides(&e.prompt, token)).collect();
    words.into_iter().filter(|(w, _)| given.contains(w)).collect()
}

/// The words of `prompt` other than `token`, lowercased.
fn words_besides(prompt: &str, token: &str) -> Vec<String> {
    prompt.replace(token, " ").split_whitespace().map(str::to_lowercase).collect()
}

/// Each candidate's denoising error on `examples` with `token` replaced by it in their prompts,
/// best first: on each (example, timestep) row the error over the candidates' median there,
/// averaged over the rows. `adapter` only encodes the prompts (they hold no concept token); the
/// UNet is the base model's. Two rounds: every candidate at [`COARSE`] timesteps, then the best
/// [`SHORTLIST`] at [`TIMESTEPS`] (a third of the cost of the second round for all of them,
/// with the same winner on the eight concepts of `eval lifelong`).
pub fn rank(trainer: &Trainer, adapter: &Adapter, token: &str, examples: &[Example], words: &[(String, i64)], seed: u64) -> Result<Vec<Scored>> {
    if words.len() <= SHORTLIST {
        return relative_errors(trainer, adapter, token, examples, words, TIMESTEPS, seed);
    }
    let coarse = relative_errors(trainer, adapter, token, examples, words, COARSE, seed)?;
    let short: Vec<(String, i64)> = coarse[..SHORTLIST].iter().map(|s| (s.word.clone(), s.id)).collect();
    let mut ranked = relative_errors(trainer, adapter, token, examples, &short, TIMESTEPS, seed)?;
    // The rest keep the first round's order (and its scale of error).
    ranked.extend(coarse[SHORTLIST..].iter().cloned());
    Ok(ranked)
}

/// One round of [`rank`] at `timesteps` timesteps spread evenly over the schedule.
fn relative_errors(trainer: &Trainer, adapter: &Adapter, token: &str, examples: &[Example], words: &[(String, i64)], timesteps: usize, seed: u64) -> Result<Vec<Scored>> {
    if examples.is_empty() || words.is_empty() {
        return Ok(Vec::new());
    }
    let total = trainer.timesteps();
    let t: Vec<usize> = (0..timesteps).map(|k| (2 * k + 1) * total / (2 * timesteps)).collect();
    // Every example at every timestep, one row each, noised once for all candidates.
    let rows: Vec<(usize, usize)> = (0..examples.len()).flat_map(|e| t.iter().map(move |&t| (e, t))).collect();
    let x0 = Tensor::cat(rows.iter().map(|&(e, _)| examples[e].latents.clone()).collect(), 0);
    let steps: Vec<usize> = rows.iter().map(|r| r.1).collect();
    let (x_t, target, t) = trainer.noise_at(x0, &steps, &mut Rng::new(seed));
    // errors[word][row]: the same rows, timesteps and noise for every word.
    let mut errors = Vec::with_capacity(words.len());
    // Each example's prompt is encoded once and its context repeated for its rows.
    let row_example = Tensor::<1, Int>::from_data(TensorData::new(rows.iter().map(|r| r.0 as i64).collect::<Vec<_>>(), [rows.len()]), &trainer.device);
    for (word, _) in words {
        let prompts: Vec<String> = examples.iter().map(|e| e.prompt.replace(token, word)).collect();
        let ids = trainer.ids(&prompts.iter().map(String::as_str).collect::<Vec<_>>())?;
        let context = adapter.encode_ids(&trainer.model.text_encoder, &ids, &trainer.device)?.detach().select(0, row_example.clone());
        let pred = trainer.model.unet.forward_timesteps(x_t.clone(), &t, &context).detach();
        let per = mse_per_example(pred, target.clone()).into_data().convert::<f32>();
        errors.push(per.try_to_vec::<f32>().map_err(|e| Error::InvalidInput(format!("denoising errors: {e:?}")))?);
    }
    // The error falls by orders of magnitude from low to high noise; each row is measured
    // against the candidates' median on it, so that every timestep counts alike.
    let medians: Vec<f32> = (0..rows.len())
        .map(|r| {
            let mut column: Vec<f32> = errors.iter().map(|e| e[r]).collect();
            column.sort_by(f32::total_cmp);
            column[column.len() / 2].max(f32::MIN_POSITIVE)
        })
        .collect();
    let mut scored: Vec<Scored> = words
        .iter()
        .zip(&errors)
        .map(|((word, id), e)| Scored { word: word.clone(), id: *id, error: e.iter().zip(&medians).map(|(v, m)| v / m).sum::<f32>() / rows.len() as f32 })
        .collect();
    scored.sort_by(|a, b| a.error.total_cmp(&b.error));
    Ok(scored)
}
