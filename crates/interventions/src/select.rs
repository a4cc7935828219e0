//! What an intervention selects at a hook: absolute positions (resolved
//! against the prompt), heads and units, as a 0/1 mask over the hook's value.

use std::collections::BTreeSet;
use std::ops::Range;

use candle_core::{Device, Tensor};
use scalpel_engine::HookCtx;
use scalpel_types::document::{NamedPositions, Positions};

use crate::Res;

/// Absolute positions an item covers.
#[derive(Clone, Debug)]
pub(crate) enum Sel {
    All,
    Prompt(usize),
    Generated(usize),
    /// Kept a range, never expanded: a link may name `0..4000000000`.
    Range(Range<usize>),
    Set(BTreeSet<usize>),
}

impl Sel {
    pub fn contains(&self, abs: usize) -> bool {
        match self {
            Sel::All => true,
            Sel::Prompt(n) => abs < *n,
            Sel::Generated(n) => abs >= *n,
            Sel::Range(r) => r.contains(&abs),
            Sel::Set(s) => s.contains(&abs),
        }
    }
}

/// Resolves a position index (negative = from the end of `len`).
pub(crate) fn resolve_pos(i: usize, field: &str, p: i64, len: usize) -> Res<usize> {
    let abs = if p < 0 { (len as i64).checked_add(p) } else { Some(p) };
    match abs.and_then(|a| usize::try_from(a).ok()) {
        Some(a) => Ok(a),
        None => Err(format!("intervention {i}: field '{field}': position {p} is before the start of a {len}-token prompt")),
    }
}

/// Resolves `positions` (or `keys`) against the prompt length. Every
/// position must lie in the model's context of `n_ctx` tokens: a position
/// past it could never be reached, and a range stays a range however long.
pub(crate) fn resolve_sel(i: usize, field: &str, p: &Positions, prompt_len: usize, n_ctx: usize) -> Res<Sel> {
    let in_context = |x: i64, end: bool| -> Res<usize> {
        let a = resolve_pos(i, field, x, prompt_len)?;
        let limit = if end { n_ctx } else { n_ctx.saturating_sub(1) };
        if a > limit {
            let what = if end { "range end" } else { "position" };
            return Err(format!(
                "intervention {i}: field '{field}': {what} {x} is beyond the model's context of {n_ctx} tokens"
            ));
        }
        Ok(a)
    };
    Ok(match p {
        Positions::Named(NamedPositions::All) => Sel::All,
        Positions::Named(NamedPositions::Prompt) => Sel::Prompt(prompt_len),
        Positions::Named(NamedPositions::Generated) => Sel::Generated(prompt_len),
        Positions::List(v) => {
            if v.is_empty() {
                return Err(format!("intervention {i}: field '{field}' is an empty list"));
            }
            Sel::Set(v.iter().map(|&x| in_context(x, false)).collect::<Res<_>>()?)
        }
        Positions::Range { start, end } => {
            let (a, b) = (in_context(*start, false)?, in_context(*end, true)?);
            if a >= b {
                return Err(format!("intervention {i}: field '{field}': empty range {start}..{end}"));
            }
            Sel::Range(a..b)
        }
    })
}

/// The positions, heads and units an item selects.
pub(crate) struct Selection {
    pub positions: Sel,
    pub heads: Option<Vec<usize>>,
    pub neurons: Option<Vec<usize>>,
}

impl Selection {
    /// A 0/1 mask broadcastable to `shape` (the hook's value at `ctx`);
    /// `None` if nothing in this chunk is selected.
    pub fn mask(&self, ctx: &HookCtx, shape: &[usize]) -> candle_core::Result<Option<Tensor>> {
        let site = ctx.point.site;
        let (pos_axis, head_axis) = (site.pos_axis(), site.head_axis());
        let rank = shape.len();
        let mut dims = vec![1usize; rank];
        dims[pos_axis] = shape[pos_axis];
        let pos_on: Vec<bool> = (0..shape[pos_axis]).map(|p| self.positions.contains(ctx.start_pos + p)).collect();
        if !pos_on.iter().any(|&b| b) {
            return Ok(None);
        }
        let mut head_on: Option<Vec<bool>> = None;
        if let (Some(hs), Some(ha)) = (&self.heads, head_axis) {
            dims[ha] = shape[ha];
            head_on = Some((0..shape[ha]).map(|h| hs.contains(&h)).collect());
        }
        let mut unit_on: Option<Vec<bool>> = None;
        if let Some(ns) = &self.neurons {
            dims[rank - 1] = shape[rank - 1];
            unit_on = Some((0..shape[rank - 1]).map(|u| ns.contains(&u)).collect());
        }
        let n: usize = dims.iter().product();
        let mut data = vec![0f32; n];
        let mut idx = vec![0usize; rank];
        for slot in data.iter_mut() {
            let on = pos_on[idx[pos_axis]]
                && head_on.as_ref().is_none_or(|h| h[idx[head_axis.unwrap_or(0)]])
                && unit_on.as_ref().is_none_or(|u| u[idx[rank - 1]]);
            *slot = on as u8 as f32;
            for a in (0..rank).rev() {
                idx[a] += 1;
                if idx[a] < dims[a] {
                    break;
                }
                idx[a] = 0;
            }
        }
        Ok(Some(Tensor::from_vec(data, dims, &Device::Cpu)?))
    }
}

/// `replacement` where the mask is on, `x` elsewhere. A select, not
/// x·(1−m) + r·m: attention scores hold −∞, and −∞·0 is NaN.
pub(crate) fn blend(x: &Tensor, m: &Tensor, replacement: &Tensor) -> candle_core::Result<Tensor> {
    let shape = x.shape();
    m.broadcast_as(shape)?.ne(0f32)?.where_cond(&replacement.broadcast_as(shape)?, x)
}

/// x scaled by `factor` where the mask is on. Masked attention scores (−∞)
/// stay −∞, so scaling or zeroing scores keeps the causal mask.
pub(crate) fn scale_masked(x: &Tensor, m: &Tensor, factor: f64) -> candle_core::Result<Tensor> {
    let scaled = x.affine(factor, 0.0)?;
    let scaled = x.ne(f32::NEG_INFINITY)?.where_cond(&scaled, x)?;
    blend(x, m, &scaled)
}
