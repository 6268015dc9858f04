//! L2DM's shared adapter as concept-gated blocks: each lesson appends a LoRA block on every
//! projection of the transformer blocks, owned by the new concept and gated by its token
//! (src/model/gate.rs: the text positions the token reaches, the image of every prompt that holds
//! it). The whole adapter is in place for every prompt. A lesson trains the new block and the
//! new embedding; earlier blocks and tokens stay, and the new block is closed on their prompts,
//! so replay (TAME) and distillation (ECD) would have exactly nothing to hold: the lesson leaves
//! them out (src/lifelong/learner.rs) and keeps TAME's memory only. This is parameter isolation
//! inside one adapter; sharing trainable rows across concepts under TAME and ECD forgot or
//! interfered in every form measured (README, "Lessons", session 28).
//!
//! Why gates: a block every prompt sees moves every earlier prompt with each lesson, and nothing
//! a lesson can replay holds all of them (session 23: 34.4 points forgotten over four concepts;
//! session 24's null space held the text side but could not guard the projections that read the
//! image, and learnt 46.9%: README, "Lessons"). A gated block is exactly zero on prompts without
//! its token, so learning a concept cannot move them, while it reads image features as freely as
//! a routed block does.

use std::ops::Range;

use super::adapter::Adapter;
use super::learner::Learner;
use super::null_space::grow;
use crate::error::{Error, Result};

/// The lesson's student: the adapter with one more block of the configured rank for the new
/// concept (its `A` drawn as PEFT does, `B` zero, so the grown state is the same model; the first
/// concept's block is the fresh adapter's rows). Trainable; the lesson's gradient mask keeps
/// earlier concepts' blocks (src/lifelong/lesson.rs).
pub(super) fn student(learner: &Learner, seed: u64) -> Result<Adapter> {
    let adapter = &learner.adapter;
    let rank = learner.block.rank;
    let device = &learner.trainer.device;
    if adapter.concepts.is_empty() {
        // A fresh adapter is zero (B = 0): its rows become the first concept's block.
        let rows = adapter.config.rank;
        return Ok(Adapter { routes: std::iter::once(0..rows).collect(), gated: true, ..adapter.trainable(device) });
    }
    if adapter.config.rank != rank * adapter.concepts.len() {
        return Err(Error::InvalidInput(format!(
            "this state's blocks are not rank {rank} each (rank {} over {} concepts); teach with the rank it was made with",
            adapter.config.rank,
            adapter.concepts.len()
        )));
    }
    let (grown, block): (Adapter, Range<usize>) = grow(adapter, rank, true, seed, device);
    let mut routes = adapter.routes.clone();
    routes.push(block);
    Ok(Adapter { routes, gated: true, ..grown }.trainable(device))
}
