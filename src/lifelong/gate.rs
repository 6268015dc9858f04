//! L2DM's shared adapter as concept-gated blocks: each lesson appends a LoRA block on every
//! projection of the transformer blocks, owned by the new concept and gated by its token
//! (src/model/gate.rs: the text positions the token reaches, the image of every prompt that holds
//! it), beside a common block that is open wherever any concept is. The whole adapter is in place
//! for every prompt. A lesson trains the common block, the new block and the new embedding;
//! replay (TAME) and distillation from the state before the lesson (ECD) hold the common block
//! for the earlier concepts, whose memory prompts open it.
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
/// concept (its `A` drawn as PEFT does, `B` zero, so the grown state is the same model); the first
/// lesson also grows the common block (the fresh adapter's rows). Trainable; the lesson's
/// gradient mask keeps earlier concepts' blocks (src/lifelong/lesson.rs).
pub(super) fn student(learner: &Learner, seed: u64) -> Result<Adapter> {
    let adapter = &learner.adapter;
    let rank = learner.block.rank;
    let device = &learner.trainer.device;
    if !adapter.routes.is_empty() && !adapter.gated {
        return Err(Error::InvalidInput("this store's concepts were taught with the `routed` method; teach with `--method routed`".into()));
    }
    let blocks = adapter.concepts.len() + 1;
    if adapter.config.rank != rank * if adapter.concepts.is_empty() { 1 } else { blocks } {
        return Err(Error::InvalidInput(format!(
            "this state's blocks are not rank {rank} each (rank {} over {blocks} blocks); teach with the rank it was made with",
            adapter.config.rank
        )));
    }
    let (grown, block): (Adapter, Range<usize>) = grow(adapter, rank, true, seed, device);
    let mut routes = adapter.routes.clone();
    routes.push(block);
    Ok(Adapter { routes, gated: true, ..grown }.trainable(device))
}
