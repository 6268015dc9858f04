//! The ways a lesson can protect what was learned before (L2DM, its ablations, the baselines)
//! and what each implies for a lesson: its losses, the unconditional anchor, default steps and
//! whether it keeps memory.

use super::lesson::{LessonOptions, Protection};

/// How a lesson protects what was learned before: L2DM and its ablations, and the baselines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The shared adapter as concept-gated blocks (src/model/gate.rs, src/lifelong/gate.rs): each
    /// lesson adds a block open only on prompts holding its concept's token and trains it and the
    /// token; earlier ones stay. TAME's memory is kept; its replay and ECD would give exactly zero
    /// gradient (the new block is closed on every memory prompt), so the lesson leaves them out
    /// and the TAME and ECD ablations equal this method.
    L2dm,
    /// Session 24's L2DM: each lesson's block kept off the text directions earlier prompts use
    /// (src/lifelong/null_space.rs), earlier blocks frozen; not gated.
    L2dmNullSpace,
    /// L2DM without the null space: every lesson trains the whole shared adapter (all its rows,
    /// all concepts' embeddings), held by TAME and ECD alone.
    L2dmNoNullSpace,
    /// L2DM without TAME's replay loss (distillation still sees memory prompts).
    L2dmNoTame,
    /// L2DM without ECD.
    L2dmNoEcd,
    /// L2DM without orthogonal attention in lessons.
    L2dmNoOa,
    /// The shared adapter trained on each lesson alone: no protection.
    Finetune,
    /// Elastic weight consolidation (Kirkpatrick et al. 2017) on the shared adapter.
    Ewc,
    /// A fresh LoRA per concept, merged by summing the updates (Custom Diffusion's merge).
    LoraMerge,
    /// One LoRA block per concept (trained alone, as `LoraMerge`), and a prompt generates with the
    /// blocks of the concepts it names only: parameter isolation instead of protection.
    Routed,
}

/// What a state's concepts are: routed blocks, concept-gated blocks or one ungated shared
/// adapter. A state is one of them, never a mix: a lesson of one kind cannot keep the others'
/// concepts apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    Routed,
    Gated,
    Shared,
}

impl StateKind {
    /// The kind of state a lesson with `method` makes.
    pub fn of(method: Method) -> Self {
        match method {
            Method::Routed => StateKind::Routed,
            m if m.gated() => StateKind::Gated,
            _ => StateKind::Shared,
        }
    }
}

impl Method {
    /// The name `--method` and the stores' lesson records use.
    pub fn name(self) -> &'static str {
        match self {
            Method::L2dm => "l2dm",
            Method::L2dmNullSpace => "l2dm-null-space",
            Method::L2dmNoTame => "l2dm-no-tame",
            Method::L2dmNoEcd => "l2dm-no-ecd",
            Method::L2dmNoOa => "l2dm-no-oa",
            Method::L2dmNoNullSpace => "l2dm-no-null-space",
            Method::Finetune => "finetune",
            Method::Ewc => "ewc",
            Method::LoraMerge => "lora-merge",
            Method::Routed => "routed",
        }
    }

    pub(super) fn protection(self) -> Protection {
        let (replay, distill) = match self {
            Method::L2dm | Method::L2dmNoOa | Method::L2dmNullSpace | Method::L2dmNoNullSpace => (true, true),
            Method::L2dmNoTame => (false, true),
            Method::L2dmNoEcd => (true, false),
            Method::Finetune | Method::Ewc | Method::LoraMerge | Method::Routed => (false, false),
        };
        let oa = if matches!(self, Method::L2dm | Method::L2dmNoTame | Method::L2dmNoEcd | Method::L2dmNullSpace | Method::L2dmNoNullSpace) { 0.05 } else { 0.0 };
        let gated = self.gated();
        let null_space = self == Method::L2dmNullSpace;
        Protection { replay, distill, ewc: if self == Method::Ewc { 5e4 } else { 0.0 }, oa, null_space, gated }
    }

    /// The unconditional anchor's weight for this method. A routed block is installed only for
    /// prompts that name its concept, guidance's empty-prompt branch included, so holding that
    /// branch at the base model buys nothing: it only makes the block's whole drift (backgrounds,
    /// contrast) a text-conditional difference that guidance multiplies into halos. Four outline
    /// concepts, 300 steps: 34.4% identified with the anchor, 81.2% without (README, "Lessons");
    /// the lesson also runs in about half the time. Finetune is the unprotected baseline, and the
    /// anchor protects the base model's empty-prompt branch, so finetune goes without it too:
    /// with it, finetune learnt 21.9% of its probes and so had only that to forget (README,
    /// "Lessons"). A null-space lesson on the text sites alone cannot move the empty prompt's
    /// keys and values (its hidden states are protected), so there the anchor would only cost a pass.
    pub(super) fn uncond(self, requested: f32, image_sites: bool) -> f32 {
        let text_only = self.protection().null_space && !image_sites;
        // A gated block is as a routed one: the empty prompt never opens its gate.
        if matches!(self, Method::Routed | Method::Finetune) || self.gated() || text_only { 0.0 } else { requested }
    }

    /// Lesson steps when none are asked for: 300 for a routed block (README, "Lessons": 150
    /// and 500 identified less on the built-in model), [`LessonOptions`]' 150 for the shared
    /// adapter, whose replay doubles each step's batch.
    pub fn default_steps(self) -> usize {
        if self == Method::Routed || self.gated() { 300 } else { LessonOptions::default().steps }
    }

    pub fn keeps_memory(self) -> bool {
        matches!(self, Method::L2dm | Method::L2dmNoTame | Method::L2dmNoEcd | Method::L2dmNoOa | Method::L2dmNullSpace | Method::L2dmNoNullSpace)
    }

    /// Whether the lesson adds a concept-gated block (L2DM and its TAME, ECD and OA ablations).
    pub fn gated(self) -> bool {
        matches!(self, Method::L2dm | Method::L2dmNoTame | Method::L2dmNoEcd | Method::L2dmNoOa)
    }
}
