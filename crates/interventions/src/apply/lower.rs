//! Lowering a compiled document to plain, position- and column-ranged edits
//! that a backend without engine hooks can apply in place at a hook point:
//! the GPU path (`scalpel_gpu::GpuModel`, `edit.wgsl`) applies add, scale,
//! zero, project-out and patch. Ops whose value depends on the run itself
//! (a mean over the running prompt, a cap, a conditional, an SAE, attention
//! knockout) or that edit the cache, the weights or the token stream have no
//! such form; lowering names the first one and the caller runs the document
//! on the CPU engine instead.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;

use scalpel_types::edit::{Edit, EditOp, Rows};

use scalpel_engine::{Model, Site};

use super::{Interventions, Kind, ProjMode, Sel};

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

fn flat(t: &scalpel_engine::Tensor) -> Result<Vec<f32>, String> {
    t.flatten_all()
        .and_then(|t| t.to_vec1())
        .map_err(|e| e.to_string())
}

impl Interventions {
    /// The document as in-place edits, in the order the engine applies them
    /// (document order at each hook point), or an error naming the first
    /// intervention that has no such form.
    pub fn lower(&self, model: &Model) -> Result<Vec<Edit>, String> {
        let cfg = &model.config;
        let no = |index: usize, op: &str, why: &str| {
            Err(format!(
                "intervention {index}: op '{op}' has no in-place GPU edit ({why})"
            ))
        };
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
        for (n, (it, op)) in self.items.iter().zip(&self.ops).enumerate() {
            match &it.kind {
                Kind::Conditional(_) => {
                    return no(it.index, op, "it reads a projection while generating")
                }
                Kind::MeanOfPrompt(_) => {
                    return no(
                        it.index,
                        op,
                        "the mean is taken over the running prompt; 'over' a prompt set lowers",
                    )
                }
                Kind::Knockout(_) => {
                    return no(
                        it.index,
                        op,
                        "attention scores are not materialised on the GPU",
                    )
                }
                Kind::SaeClamp(_) => return no(it.index, op, "it encodes through an SAE"),
                Kind::SetProjection(_, ProjMode::Cap(_)) => {
                    return no(it.index, op, "a cap depends on the value")
                }
                Kind::SetProjection(_, ProjMode::Source(_)) => {
                    return no(
                        it.index,
                        op,
                        "with 'source' the target differs per position",
                    )
                }
                _ => {}
            }
            for &p in &it.points {
                if !Site::gpu_editable().contains(&p.site) {
                    return Err(format!(
                        "intervention {}: hook '{}' is not on the GPU path (there: {})",
                        it.index,
                        p.name(),
                        Site::gpu_editable()
                            .iter()
                            .map(|s| s.suffix())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            let n_heads = match it.points[0].site {
                Site::Q | Site::RotQ | Site::Z => Some(cfg.n_heads),
                Site::K | Site::V => Some(cfg.n_kv_heads),
                _ => None,
            };
            let per_head = n_heads.is_some();
            let n_heads = n_heads.unwrap_or(1);
            let (width, unit) = if per_head {
                (n_heads * cfg.d_head, cfg.d_head)
            } else {
                (site_width(model, it.points[0].site), 0)
            };
            let last = if per_head { cfg.d_head } else { width };
            // Column runs within a head's block (or the whole row).
            #[allow(clippy::single_range_in_vec_init)]
            let unit_runs = match &it.neurons {
                Some(ns) => runs(ns.iter().copied()),
                None => vec![0..last],
            };
            let heads: Vec<usize> = if per_head {
                it.heads
                    .clone()
                    .unwrap_or_else(|| (0..n_heads).collect())
            } else {
                vec![0]
            };
            let heads: Vec<usize> = heads
                .into_iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut cols: Vec<(usize, Range<usize>)> = Vec::new(); // (head, run within the head's block)
            for &h in &heads {
                for r in &unit_runs {
                    cols.push((h, r.clone()));
                }
            }
            let positions: Vec<Option<Range<usize>>> = match &it.positions {
                Sel::All => vec![None],
                Sel::Prompt(n) => vec![Some(0..*n)],
                Sel::Generated(n) => vec![Some(*n..usize::MAX)],
                Sel::Set(s) => runs(s.iter().copied()).into_iter().map(Some).collect(),
            };
            // The item's vector or direction, read once.
            let item_vec = match &it.kind {
                Kind::Add(v) | Kind::ProjectOut(v) | Kind::SetProjection(v, _) => flat(v)?,
                _ => Vec::new(),
            };
            for &point in &it.points {
                // The per-point value (a mean, or the source run's value for a
                // patch: `rows` positions), read once and shared by its edits.
                let (rows, point_vec) = match &it.kind {
                    Kind::MeanOver(m) | Kind::Patch(m) => {
                        let t = &m[&point];
                        (t.dim(1).map_err(|e| e.to_string())?, Arc::new(flat(t)?))
                    }
                    _ => (0, Arc::default()),
                };
                for pos in &positions {
                    for (h, r) in &cols {
                        let c = h * unit + r.start..h * unit + r.end;
                        let spec = |op| Edit {
                            item: n,
                            point,
                            positions: pos.clone(),
                            cols: Some(c.clone()),
                            op,
                        };
                        match &it.kind {
                            Kind::Add(_) => {
                                let v = &item_vec;
                                // A per-head vector holds one d_head block per head.
                                let base = if v.len() == width && per_head {
                                    h * unit
                                } else {
                                    0
                                };
                                out.push(spec(EditOp::Add {
                                    v: v[base + r.start..base + r.end].to_vec(),
                                    alpha: 1.0,
                                }));
                            }
                            Kind::Scale(f) => out.push(spec(EditOp::Scale(*f))),
                            Kind::Zero => out.push(spec(EditOp::Zero)),
                            Kind::MeanOver(_) => {
                                out.push(spec(EditOp::Zero));
                                out.push(spec(EditOp::Add {
                                    v: point_vec[c.clone()].to_vec(),
                                    alpha: 1.0,
                                }));
                            }
                            Kind::Patch(_) => out.push(spec(EditOp::Patch(Rows { rows, width, data: point_vec.clone() }))),
                            Kind::ProjectOut(_) => out.push(spec(EditOp::ProjectOut(item_vec[r.clone()].to_vec()))),
                            Kind::SetProjection(_, ProjMode::Value(c)) => {
                                // x + (c − x·û) û = (x − (x·û) û) + c û.
                                let u = item_vec[r.clone()].to_vec();
                                out.push(spec(EditOp::ProjectOut(u.clone())));
                                out.push(spec(EditOp::Add { v: u, alpha: *c }));
                            }
                            _ => unreachable!("rejected above"),
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Counts, as the engine hook does, one application per item and hook
    /// point for a forward call over the absolute positions `call` in which
    /// one of its edits (from [`lower`](Self::lower)) selects a position.
    /// A patch applies only while the call lies within its source.
    pub fn count_applications(&mut self, specs: &[Edit], call: Range<usize>) {
        let mut hit: BTreeSet<(usize, String)> = BTreeSet::new();
        for s in specs {
            let pos = s.positions.clone().unwrap_or(0..usize::MAX);
            let overlaps = pos.start < call.end && call.start < pos.end;
            let in_source = match &s.op {
                EditOp::Patch(src) => call.end <= src.rows,
                _ => true,
            };
            if overlaps && in_source {
                hit.insert((s.item, s.point.name()));
            }
        }
        for (item, _) in hit {
            self.items[item].applications += 1;
        }
    }
}

fn site_width(model: &Model, site: Site) -> usize {
    match site {
        Site::MlpPre | Site::MlpPreLinear | Site::MlpPost => model.config.d_mlp,
        _ => model.config.d_model,
    }
}
