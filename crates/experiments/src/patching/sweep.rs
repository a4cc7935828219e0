//! The sweep: every cell of a hook family patched, exactly, with the work a
//! patch cannot change reused.

use web_time::Instant;

use candle_core::{DType, Device, Tensor};
use scalpel_engine::{
    ActivationCache, Error, Hook, HookCtx, HookPoint, KvCache, Logits, Model, Result, Site,
};
use scalpel_types::patching::*;




use super::*;

#[derive(Clone, Copy, Debug)]
struct Cell {
    /// Row within the layer (the head for `head_z_pos`, else 0) and column.
    row: usize,
    col: usize,
    /// The head patched (None: the whole hook) and the position (None: all).
    head: Option<usize>,
    pos: Option<usize>,
    /// First position where source and base differ (where a rerun starts).
    first: usize,
}

/// Replaces, for each batch item, one cell (a position, a head over all
/// positions, or a head at one position) at one hook point with the source value.
struct CellPatch<'a> {
    point: HookPoint,
    /// Source value `[1, t_full, ...]` at `point`.
    source: &'a Tensor,
    /// The cell of each batch item.
    cells: Vec<Cell>,
}

impl Hook for CellPatch<'_> {
    fn wants(&self, point: HookPoint) -> bool {
        point == self.point
    }
    fn call(&mut self, ctx: &HookCtx, x: &Tensor) -> Result<Option<Tensor>> {
        let dims = x.dims().to_vec();
        let (b, seq) = (dims[0], dims[1]);
        let src = self.source.narrow(1, ctx.start_pos, ctx.seq_len)?;
        // Mask [b, seq, heads, 1] on per-head hooks, [b, seq, 1] otherwise.
        let heads = if dims.len() == 4 { dims[2] } else { 1 };
        let mut mdims = vec![1usize; dims.len()];
        mdims[0] = b;
        mdims[1] = seq;
        if dims.len() == 4 {
            mdims[2] = heads;
        }
        let mut m = vec![0f32; b * seq * heads];
        for (i, c) in self.cells.iter().enumerate() {
            for p in 0..seq {
                if c.pos.is_some_and(|q| q != ctx.start_pos + p) {
                    continue;
                }
                for h in 0..heads {
                    if c.head.is_none_or(|k| k == h) {
                        m[(i * seq + p) * heads + h] = 1.0;
                    }
                }
            }
        }
        let m = Tensor::from_vec(m, mdims, &Device::Cpu)?;
        let kept = x.broadcast_mul(&m.affine(-1.0, 1.0)?)?;
        Ok(Some(kept.broadcast_add(&src.broadcast_mul(&m)?)?))
    }
}

/// One layer's computed cells: (row, column, value) each.
type CellValues = Vec<(usize, usize, f32)>;

/// Token positions one batched rerun may hold (cells × positions rerun).
const BATCH_TOKENS: usize = 4096;

/// Runs the sweep: one row per layer (or layer × head), one column per
/// position (or head), each cell the metric with that cell patched from the
/// source run into the base run. `progress(layers done, layers)` returns
/// false to stop (`Error::Cancelled`).
pub fn sweep(model: &Model, req: &PatchRequest, progress: &mut dyn FnMut(usize, usize) -> bool) -> Result<PatchResult> {
    let t0 = Instant::now();
    let cfg = &model.config;
    let t = req.clean.len();
    let (clean, corrupt) = prepare(model, req)?;
    let (base, source) = match req.direction {
        Direction::Denoise => (&corrupt, &clean),
        Direction::Noise => (&clean, &corrupt),
    };
    let site = req.site.site();
    let layers = cfg.n_layers;
    let points: Vec<HookPoint> = (0..layers).map(|l| HookPoint::block(l, site)).collect();
    let resid_points: Vec<HookPoint> = (0..layers).map(|l| HookPoint::block(l, Site::ResidPre)).collect();
    // A site this architecture lacks (e.g. `hook_resid_mid` of a parallel
    // block) is refused by its name before anything runs.
    if let Some(p) = points.first() {
        model.hook_point(&p.name())?;
    }

    // Clean and corrupted logits for the metric's reference points.
    let run_full = |run: &Run, cache_pts: &[HookPoint], kv: Option<&mut KvCache>| -> Result<(Vec<f32>, ActivationCache)> {
        let mut acts = ActivationCache::new(cache_pts.iter().copied());
        let logits = run.forward(model, kv, &mut acts)?;
        Ok((last_rows(&logits)?.remove(0), acts))
    };
    let mut base_kv = KvCache::new(cfg);
    let mut base_pts = points.clone();
    base_pts.extend(&resid_points);
    let (base_logits, base_acts) = run_full(base, &base_pts, Some(&mut base_kv))?;
    let (source_logits, source_acts) = run_full(source, &points, None)?;
    let (clean_logits, corrupt_logits) = match req.direction {
        Direction::Denoise => (&source_logits, &base_logits),
        Direction::Noise => (&base_logits, &source_logits),
    };
    let (a, w) = (req.answer as usize, req.wrong as usize);
    let scorer = Scorer {
        metric: req.metric,
        answer: a,
        wrong: w,
        ld_clean: clean_logits[a] - clean_logits[w],
        ld_corrupt: corrupt_logits[a] - corrupt_logits[w],
        clean_logprobs: log_softmax(clean_logits),
    };
    if req.metric == Metric::LogitDiffNorm && (scorer.ld_clean - scorer.ld_corrupt).abs() < 1e-6 {
        return Err(Error::input(
            "the clean and corrupted runs have the same logit difference: the normalised metric is undefined (use logit_diff)",
        ));
    }
    let base_score = scorer.score(&base_logits);
    let n_heads = cfg.n_heads;
    let (rows_per_layer, cols) = match req.site {
        PatchSite::HeadZ => (1, n_heads),
        PatchSite::HeadZPos => (n_heads, t),
        _ => (1, t),
    };
    let mut values = vec![vec![base_score; cols]; layers * rows_per_layer];
    let mut computed = 0;

    // Layers run `group` at a time, one per thread (natively; see
    // `pass_threads`), each with its own reruns (whose products then stay
    // on that thread): that splits the work outside the matmuls too
    // (attention, norms, the patch itself), which splitting each product by
    // rows does not. Adjacent layers rerun nearly as many layers, so a
    // group's threads finish together. A cell's operations do not depend on
    // its thread or its group, so the values are those of one thread. Each
    // rerun holds at most BATCH_TOKENS / group positions, so the group
    // together holds what one rerun did.
    let group = scalpel_engine::pass_threads().clamp(1, layers.max(1));
    let batch_tokens = (BATCH_TOKENS / group).max(1);
    let layer = |l: usize| -> Result<CellValues> {
        let point = points[l];
        let missing = || Error::input(format!("hook '{}' was not reached by the forward pass", point.name()));
        let src = source_acts.get(&point).ok_or_else(missing)?;
        let bas = base_acts.get(&point).ok_or_else(missing)?;
        let sv: Vec<f32> = src.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let bv: Vec<f32> = bas.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let all = layer_cells(req.site, t, n_heads, &sv, &bv);
        let row0 = l * rows_per_layer;
        let mut out = Vec::new();
        match req.strategy {
            // One full forward per cell, every cell, as TransformerLens does.
            Strategy::Naive => {
                for &(cell, _) in &all {
                    let mut patch = CellPatch { point, source: src, cells: vec![cell] };
                    let logits = base.forward(model, None, &mut patch)?;
                    out.push((row0 + cell.row, cell.col, scorer.score(&last_rows(&logits)?[0])));
                }
            }
            Strategy::Fast => {
                let mut cells: Vec<Cell> = all.iter().filter(|c| c.1).map(|c| c.0).collect();
                // Cells that start late rerun fewer positions: group them so.
                cells.sort_by_key(|c| c.first);
                let mut rest = cells.as_slice();
                while !rest.is_empty() {
                    let p_min = rest[0].first;
                    let b = (batch_tokens / (t - p_min)).clamp(1, rest.len());
                    let (chunk, tail) = rest.split_at(b);
                    rest = tail;
                    let resid = base_acts.get(&resid_points[l]).expect("cached").narrow(1, p_min, t - p_min)?;
                    let resid = resid.broadcast_as((b, t - p_min, cfg.d_model))?.contiguous()?;
                    let mut kv = base_kv.clone();
                    kv.truncate(p_min)?;
                    let mut patch = CellPatch { point, source: src, cells: chunk.to_vec() };
                    let kv = if p_min > 0 { Some(&mut kv) } else { None };
                    let logits = model.forward_from(l, resid, p_min, kv, Some(&mut patch), Logits::Last)?;
                    for (row, cell) in last_rows(&logits)?.iter().zip(chunk) {
                        out.push((row0 + cell.row, cell.col, scorer.score(row)));
                    }
                }
            }
        }
        Ok(out)
    };
    let mut l0 = 0;
    while l0 < layers {
        let n = group.min(layers - l0);
        for (i, cells) in scalpel_engine::map_pieces(n, |i| layer(l0 + i)).into_iter().enumerate() {
            let cells = cells?;
            computed += cells.len();
            for (row, col, v) in cells {
                values[row][col] = v;
            }
            if !progress(l0 + i + 1, layers) {
                return Err(Error::Cancelled);
            }
        }
        l0 += n;
    }
    let rows = layers * rows_per_layer;
    let heads_per_layer = (req.site == PatchSite::HeadZPos).then_some(n_heads);
    Ok(PatchResult {
        site: req.site,
        metric: req.metric,
        rows,
        cols,
        heads_per_layer,
        row_labels: row_labels(rows, heads_per_layer),
        col_labels: col_labels(model, req, cols),
        values,
        clean: scorer.score(clean_logits),
        corrupt: scorer.score(corrupt_logits),
        computed_cells: computed,
        seconds: t0.elapsed().as_secs_f64(),
        clean_ld: scorer.ld_clean,
        corrupt_ld: scorer.ld_corrupt,
        clean_logprobs: scorer.clean_logprobs.clone(),
    })
}

/// Every cell of one layer's sweep, each with whether source and base
/// differ (bitwise) in it: a cell where they are equal is the base run and
/// needs no forward pass. `source` and `base` are the layer's values at the
/// patched site, flattened (`t` positions of equal width, `n_heads` heads).
fn layer_cells(site: PatchSite, t: usize, n_heads: usize, source: &[f32], base: &[f32]) -> Vec<(Cell, bool)> {
    let per_pos = source.len() / t;
    // Whether source and base differ at position p, in head h or anywhere.
    let differs = |p: usize, h: Option<usize>| -> bool {
        let (a, b) = match h {
            None => (p * per_pos, (p + 1) * per_pos),
            Some(h) => {
                let dh = per_pos / n_heads;
                (p * per_pos + h * dh, p * per_pos + (h + 1) * dh)
            }
        };
        source[a..b].iter().zip(&base[a..b]).any(|(x, y)| x.to_bits() != y.to_bits())
    };
    let mut all = Vec::new();
    match site {
        // One cell per head over every position; it reruns from the first
        // position where the head differs.
        PatchSite::HeadZ => {
            for h in 0..n_heads {
                let first = (0..t).find(|&p| differs(p, Some(h)));
                all.push((Cell { row: 0, col: h, head: Some(h), pos: None, first: first.unwrap_or(0) }, first.is_some()));
            }
        }
        PatchSite::HeadZPos => {
            for h in 0..n_heads {
                for p in 0..t {
                    all.push((Cell { row: h, col: p, head: Some(h), pos: Some(p), first: p }, differs(p, Some(h))));
                }
            }
        }
        _ => {
            for p in 0..t {
                all.push((Cell { row: 0, col: p, head: None, pos: Some(p), first: p }, differs(p, None)));
            }
        }
    }
    all
}

/// `L{l}` per row, or `L{l}.H{h}` when rows are layer × head.
fn row_labels(rows: usize, heads_per_layer: Option<usize>) -> Vec<String> {
    match heads_per_layer {
        Some(h) => (0..rows).map(|i| format!("L{}.H{}", i / h, i % h)).collect(),
        None => (0..rows).map(|l| format!("L{l}")).collect(),
    }
}

/// The clean prompt's tokens, or `H{h}` when columns are heads.
fn col_labels(model: &Model, req: &PatchRequest, cols: usize) -> Vec<String> {
    if req.site == PatchSite::HeadZ {
        (0..cols).map(|h| format!("H{h}")).collect()
    } else {
        model.tokenizer().token_strings(&req.clean)
    }
}
