//! The intervention ops, one file each: the fields it takes and its own
//! checks (parsing), what it compiles to, how it applies at a hook point,
//! and its in-place GPU form (lowering). This file is the registry.
//!
//! Adding an op: its variant in `scalpel_types::document::Op`, its file
//! here with a `DEF`, and its two registry lines below (`OPS` and `def`).

pub(crate) mod add;
pub(crate) mod conditional;
pub(crate) mod insert;
pub(crate) mod knockout;
pub(crate) mod kv_add;
pub(crate) mod low_rank;
pub(crate) mod mean;
pub(crate) mod patch;
pub(crate) mod project_out;
pub(crate) mod sae_clamp;
pub(crate) mod scale;
pub(crate) mod set_projection;
pub(crate) mod zero;

use serde_json::{Map, Value};

use scalpel_engine::{HookCtx, HookPoint, Tensor};
use scalpel_types::document::{Intervention, Op};
use scalpel_types::EditOp;

use crate::context::{Cx, Target};
use crate::Res;
pub use insert::Insert;
pub use kv_add::KvAdd;
pub use low_rank::LowRank;

/// An op as the parser and the compiler know it.
pub(crate) struct OpDef {
    /// Its `op` tag.
    pub name: &'static str,
    /// Fields it takes besides the common ones (`hook`, `positions`, ...):
    /// serde cannot deny unknown fields through `flatten`, so the parser does.
    pub fields: &'static [&'static str],
    /// Checks on the item's JSON beyond its types (`name` is the item's
    /// index for messages, e.g. "3" or "0.then.1").
    pub check: fn(&Map<String, Value>, &str) -> Res<()>,
    /// Compiles intervention `i` of the document.
    pub compile: fn(&mut Cx, usize, &Intervention) -> Res<Compiled>,
}

/// No checks beyond the types.
pub(crate) fn no_check(_: &Map<String, Value>, _: &str) -> Res<()> {
    Ok(())
}

const OPS: [&OpDef; 13] = [
    &add::DEF,
    &scale::DEF,
    &zero::DEF,
    &mean::DEF,
    &patch::DEF,
    &project_out::DEF,
    &set_projection::DEF,
    &knockout::DEF,
    &kv_add::DEF,
    &low_rank::DEF,
    &insert::DEF,
    &conditional::DEF,
    &sae_clamp::DEF,
];

/// The op of a parsed intervention.
pub(crate) fn def(op: &Op) -> &'static OpDef {
    match op {
        Op::Add { .. } => &add::DEF,
        Op::Scale { .. } => &scale::DEF,
        Op::Zero => &zero::DEF,
        Op::Mean { .. } => &mean::DEF,
        Op::Patch { .. } => &patch::DEF,
        Op::ProjectOut { .. } => &project_out::DEF,
        Op::SetProjection { .. } => &set_projection::DEF,
        Op::Knockout { .. } => &knockout::DEF,
        Op::KvAdd { .. } => &kv_add::DEF,
        Op::LowRank { .. } => &low_rank::DEF,
        Op::Insert { .. } => &insert::DEF,
        Op::Conditional { .. } => &conditional::DEF,
        Op::SaeClamp { .. } => &sae_clamp::DEF,
    }
}

pub(crate) fn by_name(name: &str) -> Option<&'static OpDef> {
    OPS.iter().copied().find(|d| d.name == name)
}

pub(crate) fn names() -> Vec<&'static str> {
    OPS.iter().map(|d| d.name).collect()
}

/// What compiling an op gives.
pub(crate) enum Compiled {
    /// Acts at hook points.
    Hook(Target, Box<dyn HookOp>),
    /// Watches a hook and switches other interventions on.
    Conditional(Target, Box<conditional::Conditional>),
    /// Edits the KV cache once the prompt is cached.
    KvAdds(Vec<KvAdd>),
    /// Replaces weights for the run.
    LowRanks(Vec<LowRank>),
    /// Forces tokens into the output while generating.
    Insert(Insert),
}

/// Where on a hook point's row one lowered edit acts: head `head`'s block
/// (or the whole row), `run` within it, at absolute columns `cols`.
pub(crate) struct Columns {
    pub head: usize,
    pub run: std::ops::Range<usize>,
    pub cols: std::ops::Range<usize>,
}

/// A compiled op at hook points.
pub(crate) trait HookOp {
    /// `x` (the hook's value) with the op applied where `mask` (the item's
    /// positions, heads and units) is on; `None` to leave this call alone.
    fn apply(&mut self, x: &Tensor, mask: &Tensor, ctx: &HookCtx) -> scalpel_engine::Result<Option<Tensor>>;

    /// Forgets what it learned from a run (e.g. a mean over the running
    /// prompt), so the compiled document serves another run.
    fn reset(&mut self) {}

    /// Whether it applies to attention scores and patterns.
    fn on_scores(&self) -> bool {
        false
    }

    /// Whether it acts along a direction of the whole last axis (so a
    /// `neurons` selection makes no sense).
    fn directional(&self) -> bool {
        false
    }

    /// Why it has no in-place GPU form, if it has none (worded to follow
    /// "has no in-place GPU edit").
    fn gpu_unsupported(&self) -> Option<&'static str> {
        None
    }

    /// Its in-place edits at `point` (rows `row_width` wide) for each column
    /// run, in order; only asked when `gpu_unsupported` is `None`.
    fn lower(&self, point: HookPoint, cols: &[Columns], row_width: usize) -> Result<Vec<Vec<EditOp>>, String> {
        let _ = (point, cols, row_width);
        Err(self.gpu_unsupported().unwrap_or("it has no GPU form").into())
    }
}
