//! Activation patching sweeps (interchange interventions).
//!
//! A run on a *base* input gets one activation replaced by its value on a
//! *source* input; a metric on the last position's logits says how much of
//! the clean behaviour that activation carries. Denoising patches clean into
//! corrupted; noising patches corrupted into clean.
//!
//! The fast strategy is exact and relies on causality: a patch at layer l,
//! position p changes nothing before layer l or before position p. So for
//! each layer it starts from the base run's residual stream at that layer,
//! reuses the base run's keys and values for the unchanged prefix, runs only
//! the positions from the first patched one on, and batches every cell of the
//! layer into one pass (cells sorted by their first differing position and
//! split into batches of at most `BATCH_TOKENS` rerun positions). A cell
//! whose source and base values are bitwise equal (e.g. positions before the
//! first differing token) is the base run itself and is not recomputed.
//! Families: a position of a residual-width hook (layer × position), a head
//! of `attn.hook_z` over all positions (layer × head), or a head at one
//! position (`head_z_pos`: rows layer × head, columns positions). The naive strategy runs one full forward per cell,
//! like TransformerLens's patching helpers; both give the same matrix.

use web_time::Instant;

use candle_core::{DType, Device, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use scalpel_engine::{
    ActivationCache, Error, Hook, HookCtx, HookList, HookPoint, KvCache, Logits, Model, Result, Site,
};
pub use scalpel_types::patching::*;



#[derive(Clone, Debug)]
pub struct PatchRequest {
    pub clean: Vec<u32>,
    pub corruption: Corruption,
    pub answer: u32,
    pub wrong: u32,
    pub site: PatchSite,
    pub metric: Metric,
    pub strategy: Strategy,
    pub direction: Direction,
}

/// Adds fixed noise to `hook_embed` at chosen positions.
struct EmbedNoise {
    noise: Tensor,
}

impl Hook for EmbedNoise {
    fn wants(&self, point: HookPoint) -> bool {
        point.site == Site::Embed
    }
    fn call(&mut self, ctx: &HookCtx, value: &Tensor) -> Result<Option<Tensor>> {
        let n = self.noise.narrow(0, ctx.start_pos, ctx.seq_len)?;
        Ok(Some(value.broadcast_add(&n)?))
    }
}

struct Run {
    ids: Vec<u32>,
    noise: Option<Tensor>,
}

impl Run {
    /// A forward pass on this run's ids, with its embedding noise, then `extra`;
    /// last-position logits.
    fn forward(&self, model: &Model, kv: Option<&mut KvCache>, extra: &mut dyn Hook) -> Result<Tensor> {
        let mut noise = self.noise.as_ref().map(|n| EmbedNoise { noise: n.clone() });
        let mut hooks = HookList::new();
        if let Some(n) = noise.as_mut() {
            hooks.push(n);
        }
        hooks.push(extra);
        model.forward(&model.ids_tensor(&self.ids)?, kv, Some(&mut hooks), Logits::Last)
    }
}

fn embed_std(model: &Model) -> Result<f32> {
    // The token embeddings are what `hook_embed` reads for every id; sample them.
    let vocab = model.config.d_vocab as u32;
    let ids: Vec<u32> = (0..vocab).step_by((vocab as usize / 2048).max(1)).collect();
    let (_, cache) = model.run_with_cache(&ids[..ids.len().min(model.config.n_ctx)], &[HookPoint::global(Site::Embed)])?;
    let e = cache.get(&HookPoint::global(Site::Embed)).expect("cached").flatten_all()?;
    let v: Vec<f32> = e.to_vec1()?;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
    Ok(var.sqrt() as f32)
}

fn gaussian_noise(t: usize, d: usize, positions: &[usize], std: f32, seed: u64) -> Result<Tensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut data = vec![0f32; t * d];
    for &p in positions {
        for x in &mut data[p * d..(p + 1) * d] {
            // Box–Muller: deterministic across platforms for a seed.
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
            *x = ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32 * std;
        }
    }
    Ok(Tensor::from_vec(data, (t, d), &Device::Cpu)?)
}

/// Computes the metric for each row of last-position logits `[b, vocab]`.
struct Scorer {
    metric: Metric,
    answer: usize,
    wrong: usize,
    ld_clean: f32,
    ld_corrupt: f32,
    clean_logprobs: Vec<f32>,
}

fn log_softmax(row: &[f32]) -> Vec<f32> {
    let lse = scalpel_engine::logsumexp(row);
    row.iter().map(|x| x - lse).collect()
}

impl Scorer {
    fn score(&self, row: &[f32]) -> f32 {
        let ld = row[self.answer] - row[self.wrong];
        match self.metric {
            Metric::LogitDiff => ld,
            Metric::LogitDiffNorm => (ld - self.ld_corrupt) / (self.ld_clean - self.ld_corrupt),
            Metric::Prob => log_softmax(row)[self.answer].exp(),
            Metric::Kl => {
                let lp = log_softmax(row);
                self.clean_logprobs
                    .iter()
                    .zip(&lp)
                    .map(|(&a, &b)| (a as f64).exp() * (a - b) as f64)
                    .sum::<f64>() as f32
            }
        }
    }
}

fn last_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let (b, t, v) = logits.dims3()?;
    Ok(logits.narrow(1, t - 1, 1)?.reshape((b, v))?.to_vec2()?)
}

/// One cell of a sweep: where it goes in the matrix and what it patches.
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

/// Token positions one batched rerun may hold (cells × positions rerun).
const BATCH_TOKENS: usize = 4096;

/// Runs the sweep. `progress(done_rows, total_rows)` returns false to cancel.
/// Checks the request and builds the clean and corrupted runs.
fn prepare(model: &Model, req: &PatchRequest) -> Result<(Run, Run)> {
    let cfg = &model.config;
    let t = req.clean.len();
    if t == 0 {
        return Err(Error::input("empty clean prompt"));
    }
    for (name, id) in [("answer", req.answer), ("wrong", req.wrong)] {
        if id as usize >= cfg.d_vocab {
            return Err(Error::input(format!("{name} token id {id} is out of range (vocabulary {})", cfg.d_vocab)));
        }
    }
    if req.answer == req.wrong && matches!(req.metric, Metric::LogitDiff | Metric::LogitDiffNorm) {
        return Err(Error::input("answer and wrong are the same token: the logit difference is always 0"));
    }
    let clean = Run { ids: req.clean.clone(), noise: None };
    let corrupt = match &req.corruption {
        Corruption::Prompt(ids) => {
            if ids.len() != t {
                return Err(Error::input(format!(
                    "the corrupted prompt has {} tokens but the clean one has {t}; patching needs equal token lengths",
                    ids.len()
                )));
            }
            Run { ids: ids.clone(), noise: None }
        }
        Corruption::Noise { positions, std, seed } => {
            if positions.is_empty() {
                return Err(Error::input("noise corruption needs at least one position"));
            }
            if let Some(&p) = positions.iter().find(|&&p| p >= t) {
                return Err(Error::input(format!("noise position {p} is out of range for a {t}-token prompt")));
            }
            let std = match std {
                Some(s) if s.is_finite() && *s >= 0.0 => *s,
                Some(s) => return Err(Error::input(format!("noise std {s} must be a finite number >= 0"))),
                None => 3.0 * embed_std(model)?,
            };
            Run { ids: req.clean.clone(), noise: Some(gaussian_noise(t, cfg.d_model, positions, std, *seed)?) }
        }
    };
    Ok((clean, corrupt))
}

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

    for l in 0..layers {
        let point = points[l];
        let src = source_acts.get(&point).expect("cached");
        let bas = base_acts.get(&point).expect("cached");
        let sv: Vec<f32> = src.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let bv: Vec<f32> = bas.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let per_pos = sv.len() / t;
        // Whether source and base differ (bitwise) at position p, in head h or anywhere.
        let differs = |p: usize, h: Option<usize>| -> bool {
            let (a, b) = match h {
                None => (p * per_pos, (p + 1) * per_pos),
                Some(h) => {
                    let dh = per_pos / n_heads;
                    (p * per_pos + h * dh, p * per_pos + (h + 1) * dh)
                }
            };
            sv[a..b].iter().zip(&bv[a..b]).any(|(x, y)| x.to_bits() != y.to_bits())
        };
        // Every cell of the layer, with the first position where it differs
        // (None: source and base are equal there, the cell is the base run).
        let mut all: Vec<(Cell, bool)> = Vec::new();
        match req.site {
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
        let row0 = l * rows_per_layer;
        match req.strategy {
            // One full forward per cell, every cell, as TransformerLens does.
            Strategy::Naive => {
                computed += all.len();
                for &(cell, _) in &all {
                    let mut patch = CellPatch { point, source: src, cells: vec![cell] };
                    let logits = base.forward(model, None, &mut patch)?;
                    values[row0 + cell.row][cell.col] = scorer.score(&last_rows(&logits)?[0]);
                }
            }
            Strategy::Fast => {
                let mut cells: Vec<Cell> = all.iter().filter(|c| c.1).map(|c| c.0).collect();
                computed += cells.len();
                // Cells that start late rerun fewer positions: group them so.
                cells.sort_by_key(|c| c.first);
                let mut rest = cells.as_slice();
                while !rest.is_empty() {
                    let p_min = rest[0].first;
                    let b = (BATCH_TOKENS / (t - p_min)).clamp(1, rest.len());
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
                        values[row0 + cell.row][cell.col] = scorer.score(row);
                    }
                }
            }
        }
        if !progress(l + 1, layers) {
            return Err(Error::Cancelled);
        }
    }
    Ok(PatchResult {
        site: req.site,
        metric: req.metric,
        rows: layers * rows_per_layer,
        cols,
        heads_per_layer: (req.site == PatchSite::HeadZPos).then_some(n_heads),
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

/// Adds a zero `Var` at chosen points, so the backward pass yields the
/// metric's gradient with respect to each of those activations.
struct GradProbe {
    points: Vec<HookPoint>,
    taken: Vec<(HookPoint, candle_core::Var, Tensor)>,
}

impl Hook for GradProbe {
    fn wants(&self, point: HookPoint) -> bool {
        self.points.contains(&point)
    }
    fn call(&mut self, ctx: &HookCtx, x: &Tensor) -> Result<Option<Tensor>> {
        let zero = candle_core::Var::zeros(x.shape(), DType::F32, &Device::Cpu)?;
        let out = (x + zero.as_tensor())?;
        self.taken.push((ctx.point, zero, x.detach()));
        Ok(Some(out))
    }
}

/// Attribution patching (Nanda; Syed et al.): metric(patched) ≈
/// metric(base) + (source − base) · ∂metric/∂activation, with the gradient
/// from one backward pass through the base run. Needs f32 precision.
pub fn attribution(model: &mut Model, req: &PatchRequest) -> Result<AttributionResult> {
    let exact = sweep(model, &PatchRequest { strategy: Strategy::Fast, ..req.clone() }, &mut |_, _| true)?;
    let t0 = Instant::now();
    let (clean, corrupt) = prepare(model, req)?;
    let (base, source) = match req.direction {
        Direction::Denoise => (&corrupt, &clean),
        Direction::Noise => (&clean, &corrupt),
    };
    let cfg = model.config.clone();
    let points: Vec<HookPoint> = (0..cfg.n_layers).map(|l| HookPoint::block(l, req.site.site())).collect();
    // Source activations (no gradient needed).
    let mut acts = ActivationCache::new(points.iter().copied());
    source.forward(model, None, &mut acts)?;
    model.set_differentiable(true)?;
    let mut probe = GradProbe { points: points.clone(), taken: Vec::new() };
    let logits = base.forward(model, None, &mut probe);
    model.set_differentiable(false)?;
    let row = logits?.flatten_all()?;
    let (a, w) = (req.answer as usize, req.wrong as usize);
    let ld = (row.get(a)? - row.get(w)?)?;
    let metric = match req.metric {
        Metric::LogitDiff => ld,
        Metric::LogitDiffNorm => {
            let span = (exact.clean_ld - exact.corrupt_ld) as f64;
            ld.affine(1.0 / span, -(exact.corrupt_ld as f64) / span)?
        }
        Metric::Prob => candle_nn_softmax(&row)?.get(a)?,
        Metric::Kl => {
            let lp = log_softmax_t(&row)?;
            let clean_lp = Tensor::new(exact.clean_logprobs.as_slice(), &Device::Cpu)?;
            (clean_lp.exp()? * (clean_lp - lp)?)?.sum_all()?
        }
    };
    let base_value = metric.to_scalar::<f32>()?;
    let grads = metric.backward()?;
    let mut values = vec![vec![0f32; exact.cols]; exact.rows];
    for (point, var, base_val) in &probe.taken {
        let l = point.layer.expect("block point");
        let g = grads.get(var.as_tensor()).cloned().unwrap_or(var.as_tensor().zeros_like()?);
        let delta = (acts.get(point).expect("cached") - base_val)?;
        let prod = (g * delta)?.squeeze(0)?; // [t, ...] or [t, h, d]
        // (row within the layer, values along the columns)
        let per_row: Vec<Vec<f32>> = match req.site {
            PatchSite::HeadZ => vec![prod.sum(2)?.sum(0)?.to_vec1()?],
            PatchSite::HeadZPos => prod.sum(2)?.t()?.to_vec2()?, // [h, t]
            _ => vec![prod.flatten_from(1)?.sum(1)?.to_vec1()?],
        };
        let rows_per_layer = per_row.len();
        for (r, row) in per_row.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                values[l * rows_per_layer + r][c] = base_value + v;
            }
        }
    }
    let attribution_seconds = t0.elapsed().as_secs_f64();
    let correlation = pearson(values.iter().flatten().copied(), exact.values.iter().flatten().copied());
    let estimate = PatchResult { values, seconds: attribution_seconds, computed_cells: 0, ..exact.clone() };
    Ok(AttributionResult { estimate, exact, correlation, attribution_seconds })
}

fn candle_nn_softmax(x: &Tensor) -> Result<Tensor> {
    let lp = log_softmax_t(x)?;
    Ok(lp.exp()?)
}

fn log_softmax_t(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(0)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(0)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

fn pearson(a: impl Iterator<Item = f32>, b: impl Iterator<Item = f32>) -> f64 {
    let pairs: Vec<(f64, f64)> = a.zip(b).map(|(x, y)| (x as f64, y as f64)).collect();
    let n = pairs.len() as f64;
    let (ma, mb) = (pairs.iter().map(|p| p.0).sum::<f64>() / n, pairs.iter().map(|p| p.1).sum::<f64>() / n);
    let cov: f64 = pairs.iter().map(|p| (p.0 - ma) * (p.1 - mb)).sum();
    let va: f64 = pairs.iter().map(|p| (p.0 - ma).powi(2)).sum();
    let vb: f64 = pairs.iter().map(|p| (p.1 - mb).powi(2)).sum();
    if va == 0.0 || vb == 0.0 {
        return f64::NAN;
    }
    cov / (va * vb).sqrt()
}
