//! Lowering a compiled document to plain, position- and column-ranged
//! in-place edits (`scalpel_types::Edit`) that a backend without engine
//! hooks applies at a hook point: the GPU path (`scalpel_gpu::GpuModel`,
//! `edit.wgsl`). Ops whose value depends on the run itself, or that edit
//! the cache, the weights or the token stream, have no such form; lowering
//! names the first one and the caller runs the document on the CPU engine.

use std::collections::BTreeSet;
use std::ops::Range;

use scalpel_engine::{Model, Site};
use scalpel_types::edit::Edit;

use crate::compile::{Action, Interventions, Item};
use crate::ops::Columns;
use crate::select::Sel;

/// Contiguous runs of a sorted set.
fn runs(set: impl IntoIterator<Item = usize>) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    for x in set.into_iter().collect::<BTreeSet<_>>() {
        match out.last_mut() {
            Some(r) if r.end == x => r.end = x + 1,
            _ => out.push(x..x + 1),
        }
    }
    out
}

fn no(index: usize, op: &str, why: &str) -> Result<Vec<Edit>, String> {
    Err(format!("intervention {index}: op '{op}' has no in-place GPU edit ({why})"))
}

impl Interventions {
    /// The document as in-place edits, in the order the engine applies them
    /// (document order at each hook point), or an error naming the first
    /// intervention that has no such form.
    pub fn lower(&self, model: &Model) -> Result<Vec<Edit>, String> {
        if let Some(k) = self.kv_adds.first() {
            return no(k.index, "kv_add", "it edits the KV cache");
        }
        if let Some(k) = self.low_ranks.first() {
            return no(k.index, "low_rank", "it edits the weights");
        }
        if let Some(k) = self.inserts.first() {
            return no(k.index, "insert", "it edits the token stream");
        }
        let mut out = Vec::new();
        for (n, it) in self.items.iter().enumerate() {
            out.extend(lower_item(model, n, it)?);
        }
        Ok(out)
    }

    /// Counts, as the engine hook does, one application per item and hook
    /// point for a forward call over the absolute positions `call` in which
    /// one of its edits (from [`lower`](Self::lower)) selects a position.
    /// A patch applies only while the call lies within its source.
    pub fn count_applications(&mut self, edits: &[Edit], call: Range<usize>) {
        let mut hit: BTreeSet<(usize, String)> = BTreeSet::new();
        for e in edits {
            let pos = e.positions.clone().unwrap_or(0..usize::MAX);
            let overlaps = pos.start < call.end && call.start < pos.end;
            let in_source = match &e.op {
                scalpel_types::EditOp::Patch(src) => call.end <= src.rows,
                _ => true,
            };
            if overlaps && in_source {
                hit.insert((e.item, e.point.name()));
            }
        }
        for (item, _) in hit {
            self.items[item].applications += 1;
        }
    }
}

/// Item `n`'s edits: for each hook point, position run and column run.
fn lower_item(model: &Model, n: usize, it: &Item) -> Result<Vec<Edit>, String> {
    let op = match &it.action {
        Action::Conditional(_) => return no(it.index, it.op, "it reads a projection while generating"),
        Action::Op(op) => op,
    };
    if let Some(why) = op.gpu_unsupported() {
        return no(it.index, it.op, why);
    }
    for &p in &it.points {
        if !Site::gpu_editable().contains(&p.site) {
            let there: Vec<&str> = Site::gpu_editable().iter().map(|s| s.suffix()).collect();
            return Err(format!("intervention {}: hook '{}' is not on the GPU path (there: {})", it.index, p.name(), there.join(", ")));
        }
    }
    let shape = model.config.site_shape(it.points[0].site);
    let width = shape.flat().expect("GPU-editable sites have a width");
    // Column runs within a head's block (or the whole row).
    let (heads, unit) = match shape.heads {
        Some(h) => (it.select.heads.clone().unwrap_or_else(|| (0..h).collect()), shape.width.expect("per-head width")),
        None => (vec![0], 0),
    };
    let block = if shape.heads.is_some() { unit } else { width };
    #[allow(clippy::single_range_in_vec_init)]
    let unit_runs = match &it.select.neurons {
        Some(ns) => runs(ns.iter().copied()),
        None => vec![0..block],
    };
    let heads: BTreeSet<usize> = heads.into_iter().collect();
    let cols: Vec<Columns> = heads
        .iter()
        .flat_map(|&h| unit_runs.iter().map(move |r| Columns { head: h, run: r.clone(), cols: h * unit + r.start..h * unit + r.end }))
        .collect();
    let positions: Vec<Option<Range<usize>>> = match &it.select.positions {
        Sel::All => vec![None],
        Sel::Prompt(n) => vec![Some(0..*n)],
        Sel::Generated(n) => vec![Some(*n..usize::MAX)],
        Sel::Range(r) => vec![Some(r.clone())],
        Sel::Set(s) => runs(s.iter().copied()).into_iter().map(Some).collect(),
    };
    let mut out = Vec::new();
    for &point in &it.points {
        let per_col = op.lower(point, &cols, width)?;
        for pos in &positions {
            for (c, edits) in cols.iter().zip(&per_col) {
                for e in edits {
                    out.push(Edit { item: n, point, positions: pos.clone(), cols: Some(c.cols.clone()), op: e.clone() });
                }
            }
        }
    }
    Ok(out)
}
