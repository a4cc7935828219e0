//! Reading the model: logit lens, direct logit attribution (DLA), attention
//! patterns, neuron → vocabulary projections, and per-token projection
//! monitoring while generating.
//!
//! Every function returns plain serde data (documented in docs/readouts.md)
//! and takes an optional extra hook (e.g. compiled interventions) that runs
//! *before* the reading, so what is read is the value the model used.
//!
//! Nothing here changes a weight or folds a norm: the final norm and
//! unembedding are the model's own (`Model::final_norm`, `Model::unembed`).

use web_time::Instant;

use candle_core::{Device, Tensor};
use scalpel_engine::config::NormKind;
use scalpel_engine::{
    logsumexp, top_k, ActivationCache, Error, GenerateOptions, Hook, HookCtx, HookList, HookPoint, KvCache, Logits,
    Matrix, Model, Result, Sampler, Site,
};
pub use scalpel_types::readouts::*;

// ------------------------------------------------------------------ shared

pub fn token_ref(model: &Model, id: u32) -> TokenRef {
    TokenRef { id, token: model.tokenizer().decode(&[id]) }
}

/// The first token of `text` as the model tokenizes it (a BOS the tokenizer
/// prepends is skipped). `what` names the field in the error message.
pub fn first_token(model: &Model, what: &str, text: &str) -> Result<u32> {
    let tok = model.tokenizer();
    let skip = tok.encode("")?.len(); // the BOS the tokenizer adds, if any
    let ids = tok.encode(text)?;
    ids.get(skip).copied().ok_or_else(|| Error::input(format!("{what} {text:?} tokenizes to nothing")))
}

fn check_ids(model: &Model, ids: &[u32]) -> Result<()> {
    if ids.is_empty() {
        return Err(Error::input("empty prompt: there are no tokens to run"));
    }
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= model.config.d_vocab) {
        return Err(Error::input(format!(
            "token id {bad} is out of range: the vocabulary has {} tokens",
            model.config.d_vocab
        )));
    }
    Ok(())
}

fn check_token(model: &Model, what: &str, id: u32) -> Result<()> {
    if id as usize >= model.config.d_vocab {
        return Err(Error::input(format!(
            "{what} token id {id} is out of range: the vocabulary has {} tokens",
            model.config.d_vocab
        )));
    }
    Ok(())
}

fn check_layer(model: &Model, layer: usize) -> Result<()> {
    let n = model.config.n_layers;
    if layer >= n {
        return Err(Error::input(format!("layer {layer} is out of range: the model has {n} layers (0..={})", n - 1)));
    }
    Ok(())
}

fn check_head(model: &Model, head: usize) -> Result<()> {
    let n = model.config.n_heads;
    if head >= n {
        return Err(Error::input(format!("head {head} is out of range: the model has {n} heads per layer (0..={})", n - 1)));
    }
    Ok(())
}

/// A position index; negative counts from the end (-1 = last).
pub fn resolve_position(pos: i64, len: usize) -> Result<usize> {
    let p = if pos < 0 { len as i64 + pos } else { pos };
    if p < 0 || p >= len as i64 {
        return Err(Error::input(format!(
            "position {pos} is out of range for a {len}-token prompt (use 0..={} or -1..=-{len})",
            len.saturating_sub(1)
        )));
    }
    Ok(p as usize)
}

/// One forward pass with `extra` hooks first and a cache of `points` after
/// them. Returns logits `[t, vocab]` and the cached values (batch axis removed).
fn run_cached(
    model: &Model,
    ids: &[u32],
    points: &[HookPoint],
    extra: Option<&mut dyn Hook>,
) -> Result<(Tensor, ActivationCache)> {
    check_ids(model, ids)?;
    let mut cache = ActivationCache::new(points.iter().copied());
    let logits = {
        let mut list = HookList::new();
        if let Some(e) = extra {
            list.push(e);
        }
        list.push(&mut cache);
        model.forward(&model.ids_tensor(ids)?, None, Some(&mut list), Logits::All)?.squeeze(0)?
    };
    for v in cache.values.values_mut() {
        *v = v.squeeze(0)?;
    }
    Ok((logits, cache))
}

fn cached(cache: &ActivationCache, p: HookPoint) -> Result<&Tensor> {
    cache.get(&p).ok_or_else(|| Error::input(format!("hook '{}' was not reached", p.name())))
}

/// The final norm's weight and bias, `[d_model]` each (bias only for
/// LayerNorm: zeros when the model has none), as the model stores them.
pub fn final_norm_params(model: &Model) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
    let (w, b, _) = model.final_norm_params();
    let w: Vec<f32> = w.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1()?;
    let b = match (model.config.norm, b) {
        (NormKind::Rms, _) => None,
        (NormKind::Layer, Some(b)) => Some(b.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1()?),
        (NormKind::Layer, None) => Some(vec![0f32; w.len()]),
    };
    Ok((w, b))
}

fn row_of(t: &Tensor, i: usize) -> Result<Vec<f32>> {
    Ok(t.get(i)?.flatten_all()?.to_vec1()?)
}

fn dot(a: &[f32], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y).sum()
}

// ------------------------------------------------------------------ logit lens

#[derive(Clone, Debug)]
pub struct LensOptions {
    /// Tokens listed per cell.
    pub top_k: usize,
    /// A token whose probability and rank are reported in every cell.
    pub target: Option<u32>,
    /// Also decode `blocks.0.hook_resid_pre` (the embeddings).
    pub include_embed: bool,
    /// Layers whose `hook_resid_post` is decoded (default: all).
    pub layers: Option<Vec<usize>>,
    /// Positions (negative = from the end; default: all).
    pub positions: Option<Vec<i64>>,
}

impl Default for LensOptions {
    fn default() -> Self {
        LensOptions { top_k: 5, target: None, include_embed: true, layers: None, positions: None }
    }
}

fn lens_cell(model: &Model, position: usize, row: &[f32], final_lp: &[f32], opts: &LensOptions) -> LensCell {
    let lse = logsumexp(row);
    let top = top_k(row, opts.top_k)
        .into_iter()
        .map(|(id, l)| TokenProb { id, token: model.tokenizer().decode(&[id]), prob: (l - lse).exp(), logit: l })
        .collect();
    let target = opts.target.map(|t| {
        let l = row[t as usize];
        TargetStat { prob: (l - lse).exp(), logprob: l - lse, logit: l, rank: 1 + row.iter().filter(|&&x| x > l).count() }
    });
    let (mut entropy, mut kl) = (0f64, 0f64);
    for (&x, &f) in row.iter().zip(final_lp) {
        let lp = (x - lse) as f64;
        entropy -= lp.exp() * lp;
        kl += (f as f64).exp() * (f as f64 - lp);
    }
    LensCell { position, top, target, entropy: entropy as f32, kl_to_final: kl.max(0.0) as f32 }
}

/// Logit lens: each layer's residual stream (`hook_resid_post`, and the
/// embeddings) decoded through the final norm and the unembedding, at every
/// chosen position. The last layer's row is the model's own output.
pub fn logit_lens(model: &Model, ids: &[u32], opts: &LensOptions, extra: Option<&mut dyn Hook>) -> Result<LensResult> {
    let t0 = Instant::now();
    check_ids(model, ids)?;
    if let Some(t) = opts.target {
        check_token(model, "target", t)?;
    }
    let layers: Vec<usize> = match &opts.layers {
        Some(ls) => ls.clone(),
        None => (0..model.config.n_layers).collect(),
    };
    for &l in &layers {
        check_layer(model, l)?;
    }
    let positions: Vec<usize> = match &opts.positions {
        Some(ps) => ps.iter().map(|&p| resolve_position(p, ids.len())).collect::<Result<_>>()?,
        None => (0..ids.len()).collect(),
    };
    let mut rows_to_read: Vec<(String, HookPoint, Option<usize>)> = Vec::new();
    if opts.include_embed {
        rows_to_read.push(("embed".into(), HookPoint::block(0, Site::ResidPre), None));
    }
    for &l in &layers {
        rows_to_read.push((format!("L{l}"), HookPoint::block(l, Site::ResidPost), Some(l)));
    }
    let points: Vec<HookPoint> = rows_to_read.iter().map(|r| r.1).collect();
    let (logits, cache) = run_cached(model, ids, &points, extra)?;
    let pos_idx = Tensor::new(positions.iter().map(|&p| p as u32).collect::<Vec<_>>().as_slice(), &Device::Cpu)?;
    let final_rows: Vec<Vec<f32>> = logits.index_select(&pos_idx, 0)?.to_vec2()?;
    let final_lp: Vec<Vec<f32>> = final_rows
        .iter()
        .map(|r| {
            let lse = logsumexp(r);
            r.iter().map(|x| x - lse).collect()
        })
        .collect();
    let mut rows = Vec::with_capacity(rows_to_read.len());
    for (label, point, layer) in rows_to_read {
        let x = cached(&cache, point)?.index_select(&pos_idx, 0)?;
        let decoded: Vec<Vec<f32>> = model.unembed(&model.final_norm(&x)?)?.to_vec2()?;
        let cells = positions
            .iter()
            .zip(&decoded)
            .zip(&final_lp)
            .map(|((&p, row), flp)| lens_cell(model, p, row, flp, opts))
            .collect();
        rows.push(LensRow { label, hook: point.name(), layer, cells });
    }
    Ok(LensResult {
        ids: ids.to_vec(),
        tokens: model.tokenizer().token_strings(ids),
        positions,
        target: opts.target.map(|t| token_ref(model, t)),
        rows,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

// ------------------------------------------------------------------ direct logit attribution

#[derive(Clone, Debug)]
pub struct DlaRequest {
    pub ids: Vec<u32>,
    pub answer: u32,
    /// If given, the metric is logit[answer] − logit[wrong]; otherwise logit[answer].
    pub wrong: Option<u32>,
    /// Position whose logits are attributed (negative = from the end).
    pub position: i64,
}

/// Direct logit attribution at one position.
///
/// With x the final residual stream, s the final norm's scale computed from x
/// and *frozen*, w (and b) the final norm's weight (and bias), the model's
/// logits are W_U · (w ⊙ (x − mean(x)) / s + b) for LayerNorm and
/// W_U · (w ⊙ x / s) for RMSNorm. Holding s fixed this is linear in x, and x is
/// the sum of the embeddings, every head's output z_h · W_O[:, h]ᵀ, the
/// attention output biases and every MLP's `hook_mlp_out`. Each component c
/// contributes (w ⊙ (c − mean c) / s) · (W_U[answer] − W_U[wrong]); the
/// LayerNorm bias contributes b · (W_U[answer] − W_U[wrong]). The components sum
/// to the real logit difference (exactly, in exact arithmetic).
pub fn direct_logit_attribution(model: &Model, req: &DlaRequest, extra: Option<&mut dyn Hook>) -> Result<DlaResult> {
    let t0 = Instant::now();
    let cfg = &model.config;
    check_ids(model, &req.ids)?;
    check_token(model, "answer", req.answer)?;
    if let Some(w) = req.wrong {
        check_token(model, "wrong", w)?;
    }
    let pos = resolve_position(req.position, req.ids.len())?;
    let (nl, nh, dh, d) = (cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model);
    let has_pos = scalpel_engine::HookLayout::has_site(cfg, Site::PosEmbed);
    let mut points = vec![HookPoint::global(Site::Embed), HookPoint::block(nl - 1, Site::ResidPost)];
    if has_pos {
        points.push(HookPoint::global(Site::PosEmbed));
    }
    for l in 0..nl {
        points.extend([Site::Z, Site::AttnOut, Site::MlpOut].map(|s| HookPoint::block(l, s)));
    }
    let (logits, cache) = run_cached(model, &req.ids, &points, extra)?;
    let at = |p: HookPoint| -> Result<Vec<f32>> { row_of(cached(&cache, p)?, pos) };

    // The frozen final norm and the unembedding direction.
    let x = at(HookPoint::block(nl - 1, Site::ResidPost))?;
    let eps = cfg.norm_eps;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
    let s = match cfg.norm {
        NormKind::Rms => (x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / d as f64 + eps).sqrt(),
        NormKind::Layer => (x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64 + eps).sqrt(),
    };
    let wu = model.unembedding_matrix()?;
    let mut dir: Vec<f64> = row_of(&wu, req.answer as usize)?.iter().map(|&v| v as f64).collect();
    if let Some(w) = req.wrong {
        for (a, b) in dir.iter_mut().zip(row_of(&wu, w as usize)?) {
            *a -= b as f64;
        }
    }
    let (nw, nb) = final_norm_params(model)?;
    let mut u: Vec<f64> = dir.iter().zip(&nw).map(|(&g, &w)| g * w as f64 / s).collect();
    if cfg.norm == NormKind::Layer {
        // (c − mean c) · u = c · (u − mean u)
        let m = u.iter().sum::<f64>() / d as f64;
        u.iter_mut().for_each(|v| *v -= m);
    }
    let ln_final_bias = nb.as_ref().map(|b| b.iter().zip(&dir).map(|(&b, &g)| b as f64 * g).sum::<f64>());

    let mut components = Vec::new();
    let mut push = |name: String, kind, layer, head, v: f64| {
        components.push(DlaComponent { name, kind, layer, head, value: v as f32 });
        v
    };
    let mut sum = 0f64;
    let embed = dot(&at(HookPoint::global(Site::Embed))?, &u);
    sum += push("embed".into(), ComponentKind::Embed, None, None, embed);
    let pos_embed = if has_pos {
        let v = dot(&at(HookPoint::global(Site::PosEmbed))?, &u);
        sum += push("pos_embed".into(), ComponentKind::PosEmbed, None, None, v);
        Some(v as f32)
    } else {
        None
    };
    let mut layers = Vec::with_capacity(nl);
    for l in 0..nl {
        // W_O is [d_model, n_heads·d_head]; g = W_Oᵀ u, head h = z_h · g[h].
        let wo: Vec<Vec<f32>> = model.weight(l, Matrix::O)?.to_vec2()?;
        let mut g = vec![0f64; nh * dh];
        for (row, &ui) in wo.iter().zip(&u) {
            for (gj, &w) in g.iter_mut().zip(row) {
                *gj += w as f64 * ui;
            }
        }
        let z = at(HookPoint::block(l, Site::Z))?; // [n_heads·d_head] at `pos`
        let mut heads = Vec::with_capacity(nh);
        for h in 0..nh {
            let v = dot(&z[h * dh..(h + 1) * dh], &g[h * dh..(h + 1) * dh]);
            sum += push(format!("L{l}H{h}"), ComponentKind::Head, Some(l), Some(h), v);
            heads.push(v as f32);
        }
        let attn_bias = match model.bias(l, Matrix::O)? {
            Some(b) => {
                let v = dot(&b.to_vec1::<f32>()?, &u);
                sum += push(format!("L{l}.attn_bias"), ComponentKind::AttnBias, Some(l), None, v);
                Some(v as f32)
            }
            None => None,
        };
        let attn_out = dot(&at(HookPoint::block(l, Site::AttnOut))?, &u) as f32;
        let mlp = dot(&at(HookPoint::block(l, Site::MlpOut))?, &u);
        sum += push(format!("L{l}.mlp"), ComponentKind::Mlp, Some(l), None, mlp);
        layers.push(DlaLayer { layer: l, heads, attn_bias, attn_out, mlp: mlp as f32 });
    }
    if let Some(v) = ln_final_bias {
        sum += push("ln_final.bias".into(), ComponentKind::LnFinalBias, None, None, v);
    }
    let row = row_of(&logits, pos)?;
    let total = row[req.answer as usize] - req.wrong.map(|w| row[w as usize]).unwrap_or(0.0);
    Ok(DlaResult {
        ids: req.ids.clone(),
        tokens: model.tokenizer().token_strings(&req.ids),
        position: pos,
        answer: token_ref(model, req.answer),
        wrong: req.wrong.map(|w| token_ref(model, w)),
        metric: if req.wrong.is_some() { "logit_diff" } else { "logit" }.into(),
        total,
        sum_of_components: sum as f32,
        unexplained: (total as f64 - sum) as f32,
        norm: match cfg.norm {
            NormKind::Rms => "rms",
            NormKind::Layer => "layer",
        }
        .into(),
        norm_scale: s as f32,
        embed: embed as f32,
        pos_embed,
        ln_final_bias: ln_final_bias.map(|v| v as f32),
        layers,
        components,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

// ------------------------------------------------------------------ attention patterns

/// Attention patterns (`attn.hook_pattern`) of the chosen layers and heads
/// (default: all).
pub fn attention_patterns(
    model: &Model,
    ids: &[u32],
    layers: Option<&[usize]>,
    heads: Option<&[usize]>,
    extra: Option<&mut dyn Hook>,
) -> Result<AttentionResult> {
    let t0 = Instant::now();
    let layers: Vec<usize> = layers.map(<[usize]>::to_vec).unwrap_or_else(|| (0..model.config.n_layers).collect());
    let heads: Vec<usize> = heads.map(<[usize]>::to_vec).unwrap_or_else(|| (0..model.config.n_heads).collect());
    for &l in &layers {
        check_layer(model, l)?;
    }
    for &h in &heads {
        check_head(model, h)?;
    }
    let points: Vec<HookPoint> = layers.iter().map(|&l| HookPoint::block(l, Site::Pattern)).collect();
    let (_, cache) = run_cached(model, ids, &points, extra)?;
    let mut out = Vec::with_capacity(layers.len());
    for (&l, &p) in layers.iter().zip(&points) {
        let pat = cached(&cache, p)?; // [head, q, k]
        let heads = heads
            .iter()
            .map(|&h| Ok(AttentionHead { head: h, pattern: pat.get(h)?.to_vec2()? }))
            .collect::<Result<Vec<_>>>()?;
        out.push(AttentionLayer { layer: l, heads });
    }
    Ok(AttentionResult {
        ids: ids.to_vec(),
        tokens: model.tokenizer().token_strings(ids),
        layers: out,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

// ------------------------------------------------------------------ neuron → vocabulary

#[derive(Clone, Debug)]
pub struct NeuronRequest {
    pub layer: usize,
    pub neuron: usize,
    pub top_k: usize,
    /// Multiply the output weights by the final norm's weight (LayerNorm:
    /// after centering) before the unembedding, as the residual stream would
    /// be at the end (the norm's positive scale does not change the ranking).
    pub through_final_norm: bool,
    /// Also report the neuron's activation on this prompt, per position.
    pub prompt: Option<Vec<u32>>,
}

/// The neuron's output weights (column `neuron` of the down projection)
/// projected onto the vocabulary (LM-Debugger), and optionally its
/// activation on a prompt.
pub fn neuron_vocab(model: &Model, req: &NeuronRequest, extra: Option<&mut dyn Hook>) -> Result<NeuronResult> {
    let t0 = Instant::now();
    let cfg = &model.config;
    check_layer(model, req.layer)?;
    if req.neuron >= cfg.d_mlp {
        return Err(Error::input(format!(
            "neuron {} is out of range: layer {}'s MLP has {} neurons (0..={})",
            req.neuron,
            req.layer,
            cfg.d_mlp,
            cfg.d_mlp - 1
        )));
    }
    let w_down = model.weight(req.layer, Matrix::Down)?; // [d_model, d_mlp]
    let col: Vec<f32> = w_down.narrow(1, req.neuron, 1)?.flatten_all()?.to_vec1()?;
    let output_norm = col.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt() as f32;
    let mut v = col.clone();
    if req.through_final_norm {
        let (w, _) = final_norm_params(model)?;
        if cfg.norm == NormKind::Layer {
            let m = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
            v.iter_mut().for_each(|x| *x = (*x as f64 - m) as f32);
        }
        v.iter_mut().zip(&w).for_each(|(x, &w)| *x *= w);
    }
    let vt = Tensor::from_vec(v, (cfg.d_model, 1), &Device::Cpu)?;
    let scores: Vec<f32> = model.unembedding_matrix()?.matmul(&vt)?.flatten_all()?.to_vec1()?;
    let neg: Vec<f32> = scores.iter().map(|x| -x).collect();
    let tok = model.tokenizer();
    let promoted = top_k(&scores, req.top_k)
        .into_iter()
        .map(|(id, s)| TokenScore { id, token: tok.decode(&[id]), score: s })
        .collect();
    let suppressed = top_k(&neg, req.top_k)
        .into_iter()
        .map(|(id, s)| TokenScore { id, token: tok.decode(&[id]), score: -s })
        .collect();
    let activations = match &req.prompt {
        None => None,
        Some(ids) => {
            let mut points = vec![HookPoint::block(req.layer, Site::MlpPost), HookPoint::block(req.layer, Site::MlpPre)];
            if cfg.gated_mlp {
                points.push(HookPoint::block(req.layer, Site::MlpPreLinear));
            }
            let (_, cache) = run_cached(model, ids, &points, extra)?;
            let unit = |p: HookPoint| -> Result<Vec<f32>> {
                Ok(cached(&cache, p)?.narrow(1, req.neuron, 1)?.flatten_all()?.to_vec1()?)
            };
            Some(NeuronActivations {
                ids: ids.clone(),
                tokens: tok.token_strings(ids),
                post: unit(points[0])?,
                pre: unit(points[1])?,
                pre_linear: if cfg.gated_mlp { Some(unit(points[2])?) } else { None },
            })
        }
    };
    Ok(NeuronResult {
        layer: req.layer,
        neuron: req.neuron,
        hook: HookPoint::block(req.layer, Site::MlpPost).name(),
        through_final_norm: req.through_final_norm,
        output_norm,
        promoted,
        suppressed,
        activations,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

// ------------------------------------------------------------------ projection monitoring

/// The width of the last axis of a hook's value, for hooks whose value is
/// `[batch, pos, n]`; `None` for per-head hooks and attention scores/patterns.
pub fn hook_width(model: &Model, point: HookPoint) -> Option<usize> {
    let cfg = &model.config;
    match point.site {
        Site::MlpPre | Site::MlpPreLinear | Site::MlpPost => Some(cfg.d_mlp),
        s if s.head_axis().is_some() => None,
        _ => Some(cfg.d_model),
    }
}

/// A hook that records each position's projection onto a direction at one
/// hook point (batch item 0), during a forward pass or KV-cached generation
/// (positions come from `HookCtx::start_pos`). When a position is seen again
/// (after a rollback of the KV cache) the readings from it on are replaced.
pub struct ProjectionMonitor {
    point: HookPoint,
    unit: Vec<f64>,
    pub direction_norm: f32,
    pub readings: Vec<Projection>,
}

impl ProjectionMonitor {
    pub fn new(model: &Model, point: HookPoint, direction: &[f32]) -> Result<Self> {
        let width = hook_width(model, point).ok_or_else(|| {
            Error::input(format!(
                "hook '{}' is per head or per key; monitor a [pos, d] hook such as blocks.L.hook_resid_post, \
                 blocks.L.hook_attn_out or blocks.L.mlp.hook_post",
                point.name()
            ))
        })?;
        if direction.len() != width {
            return Err(Error::input(format!(
                "the direction has {} numbers but '{}' has width {width}",
                direction.len(),
                point.name()
            )));
        }
        if let Some(i) = direction.iter().position(|x| !x.is_finite()) {
            return Err(Error::input(format!("the direction's entry {i} is {} (not a finite number)", direction[i])));
        }
        let norm = direction.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        if norm == 0.0 {
            return Err(Error::input("the direction is all zeros"));
        }
        Ok(ProjectionMonitor {
            point,
            unit: direction.iter().map(|&x| x as f64 / norm).collect(),
            direction_norm: norm as f32,
            readings: Vec::new(),
        })
    }
}

impl Hook for ProjectionMonitor {
    fn wants(&self, point: HookPoint) -> bool {
        point == self.point
    }
    fn call(&mut self, ctx: &HookCtx, value: &Tensor) -> Result<Option<Tensor>> {
        let v: Vec<Vec<f32>> = value.get(0)?.to_vec2()?;
        self.readings.retain(|r| r.position < ctx.start_pos);
        for (i, row) in v.iter().enumerate() {
            let projection = dot(row, &self.unit);
            let norm = row.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
            self.readings.push(Projection {
                position: ctx.start_pos + i,
                projection: projection as f32,
                norm: norm as f32,
                cosine: if norm > 0.0 { (projection / norm) as f32 } else { 0.0 },
            });
        }
        Ok(None)
    }
}

/// Generates from `prompt` (KV cache; the engine's sampler, so the same ids as
/// `scalpel_engine::generate` for the same options) and reports every
/// token's projection onto `direction` at `hook`. The last generated token is
/// run through the model once more (its logits unused) so it has a reading
/// too. `extra` hooks (e.g. steering) run before the reading.
pub fn monitor(
    model: &Model,
    prompt: &[u32],
    opts: &GenerateOptions,
    hook: &str,
    direction: &[f32],
    extra: Option<&mut dyn Hook>,
) -> Result<MonitorResult> {
    let t0 = Instant::now();
    check_ids(model, prompt)?;
    opts.validate().map_err(Error::Input)?;
    let point = model.hook_point(hook)?;
    let mut mon = ProjectionMonitor::new(model, point, direction)?;
    let n_ctx = model.config.n_ctx;
    if prompt.len() > n_ctx {
        return Err(Error::input(format!("the prompt has {} tokens; the context length is {n_ctx}", prompt.len())));
    }
    let mut generated = Vec::new();
    {
        let mut list = HookList::new();
        if let Some(e) = extra {
            list.push(e);
        }
        list.push(&mut mon);
        let mut cache = KvCache::new(&model.config);
        let mut sampler = Sampler::new(opts);
        let budget = opts.max_new_tokens.min(n_ctx - prompt.len());
        let mut input = prompt.to_vec();
        loop {
            let logits = model.forward(&model.ids_tensor(&input)?, Some(&mut cache), Some(&mut list), Logits::Last)?;
            if generated.len() >= budget || generated.last().is_some_and(|&id| opts.stop_at_eos && model.tokenizer().is_eos(id)) {
                break;
            }
            let next = sampler.sample(&logits.flatten_all()?.to_vec1()?);
            generated.push(next);
            if cache.len() + 1 > n_ctx {
                break; // no room to read the last token
            }
            input = vec![next];
        }
    }
    let all: Vec<u32> = prompt.iter().chain(&generated).copied().collect();
    let tok = model.tokenizer();
    let rows: Vec<MonitorRow> = mon
        .readings
        .iter()
        .filter(|r| r.position < all.len())
        .map(|r| MonitorRow {
            position: r.position,
            id: all[r.position],
            token: tok.decode(&[all[r.position]]),
            generated: r.position >= prompt.len(),
            projection: r.projection,
            norm: r.norm,
            cosine: r.cosine,
        })
        .collect();
    let mean = |gen: bool| -> Option<f32> {
        let v: Vec<f64> = rows.iter().filter(|r| r.generated == gen).map(|r| r.projection as f64).collect();
        (!v.is_empty()).then(|| (v.iter().sum::<f64>() / v.len() as f64) as f32)
    };
    Ok(MonitorResult {
        hook: point.name(),
        direction_norm: mon.direction_norm,
        prompt_len: prompt.len(),
        text: tok.decode(&generated),
        generated_ids: generated,
        mean_prompt: mean(false).unwrap_or(0.0),
        mean_generated: mean(true),
        rows,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The value of a `[pos, d]` hook at one position of a prompt (for building a
/// direction from a prompt pair: `read_vector(plus) − read_vector(minus)`).
pub fn read_vector(model: &Model, ids: &[u32], hook: &str, position: i64) -> Result<Vec<f32>> {
    let point = model.hook_point(hook)?;
    if hook_width(model, point).is_none() {
        return Err(Error::input(format!("hook '{hook}' is per head or per key; read a [pos, d] hook")));
    }
    let pos = resolve_position(position, ids.len())?;
    let (_, cache) = run_cached(model, ids, &[point], None)?;
    row_of(cached(&cache, point)?, pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use scalpel_engine::{generate, ModelSource, Precision};

    fn smol() -> Option<Model> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
        let bytes = std::fs::read(path).ok()?;
        Some(Model::load("smol", ModelSource::Gguf(bytes), Precision::F32).expect("SmolLM2 loads"))
    }

    fn softmax(row: &[f32]) -> Vec<f32> {
        let lse = logsumexp(row);
        row.iter().map(|x| (x - lse).exp()).collect()
    }

    #[test]
    fn readouts_on_smollm2() {
        let Some(model) = smol() else {
            eprintln!("SmolLM2 not found: skipped");
            return;
        };
        let tok = model.tokenizer();
        let ids = tok.encode("When Mary and John went to the store, John gave a drink to").unwrap();

        // Lens: the last layer decodes to the model's own distribution.
        let paris = first_token(&model, "target", " Paris").unwrap();
        let opts = LensOptions { top_k: 3, target: Some(paris), ..Default::default() };
        let lens = logit_lens(&model, &ids, &opts, None).unwrap();
        assert_eq!(lens.rows.len(), model.config.n_layers + 1);
        let logits: Vec<Vec<f32>> = model.logits(&ids).unwrap().to_vec2().unwrap();
        let last = lens.rows.last().unwrap();
        for (cell, row) in last.cells.iter().zip(&logits) {
            let p = softmax(row);
            for t in &cell.top {
                assert!((t.prob - p[t.id as usize]).abs() < 1e-5);
            }
            assert!(cell.kl_to_final < 1e-5, "kl {}", cell.kl_to_final);
            assert_eq!(cell.top[0].id, scalpel_engine::argmax(row));
        }

        // DLA: components sum to the real logit difference.
        let mary = first_token(&model, "answer", " Mary").unwrap();
        let john = first_token(&model, "wrong", " John").unwrap();
        let req = DlaRequest { ids: ids.clone(), answer: mary, wrong: Some(john), position: -1 };
        let dla = direct_logit_attribution(&model, &req, None).unwrap();
        let row = logits.last().unwrap();
        assert!((dla.total - (row[mary as usize] - row[john as usize])).abs() < 1e-4);
        assert!(dla.unexplained.abs() < 1e-3 * (1.0 + dla.total.abs()), "unexplained {}", dla.unexplained);
        for l in &dla.layers {
            let heads: f32 = l.heads.iter().sum();
            assert!((heads - l.attn_out).abs() < 1e-3, "layer {}: heads {heads} vs attn_out {}", l.layer, l.attn_out);
        }

        // Monitor: the hook under engine generation (KV cache) reads the same
        // values as a full forward over the whole sequence.
        let hook = "blocks.12.hook_resid_post";
        let point = model.hook_point(hook).unwrap();
        let dir: Vec<f32> = (0..model.config.d_model).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
        let mut mon = ProjectionMonitor::new(&model, point, &dir).unwrap();
        let gopts = GenerateOptions { max_new_tokens: 6, stop_at_eos: false, ..Default::default() };
        let new = generate(&model, &ids, &gopts, Some(&mut mon), &mut |_| true).unwrap();
        assert_eq!(mon.readings.len(), ids.len() + new.len() - 1);
        let r = monitor(&model, &ids, &gopts, hook, &dir, None).unwrap();
        assert_eq!(r.generated_ids, new);
        assert_eq!(r.rows.len(), ids.len() + new.len());
        let all: Vec<u32> = ids.iter().chain(&new).copied().collect();
        let full = read_all(&model, &all, point, &dir);
        for (row, want) in r.rows.iter().zip(&full) {
            assert!((row.projection - want).abs() < 1e-3 * (1.0 + want.abs()), "pos {}: {} vs {want}", row.position, row.projection);
        }
        for (a, b) in mon.readings.iter().zip(&r.rows) {
            assert!((a.projection - b.projection).abs() < 1e-4);
        }

        // Neuron: the scores are W_U · W_down[:, n].
        let nr = NeuronRequest { layer: 3, neuron: 17, top_k: 5, through_final_norm: false, prompt: Some(ids.clone()) };
        let res = neuron_vocab(&model, &nr, None).unwrap();
        assert_eq!(res.promoted.len(), 5);
        assert!(res.promoted[0].score >= res.promoted[4].score);
        assert!(res.suppressed[0].score <= res.suppressed[4].score);
        assert_eq!(res.activations.unwrap().post.len(), ids.len());
    }

    fn read_all(model: &Model, ids: &[u32], point: HookPoint, dir: &[f32]) -> Vec<f32> {
        let (_, cache) = model.run_with_cache(ids, &[point]).unwrap();
        let v: Vec<Vec<f32>> = cache.get(&point).unwrap().to_vec2().unwrap();
        let n = dir.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        v.iter().map(|r| (r.iter().zip(dir).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() / n) as f32).collect()
    }

    #[test]
    fn bad_input_is_named() {
        let Some(model) = smol() else { return };
        let ids = model.tokenizer().encode("Hello there").unwrap();
        let err = |r: Result<()>| r.unwrap_err().to_string();
        let e = err(logit_lens(&model, &[], &LensOptions::default(), None).map(|_| ()));
        assert!(e.contains("empty prompt"), "{e}");
        let opts = LensOptions { layers: Some(vec![30]), ..Default::default() };
        let e = err(logit_lens(&model, &ids, &opts, None).map(|_| ()));
        assert!(e.contains("layer 30 is out of range"), "{e}");
        let opts = LensOptions { positions: Some(vec![-5]), ..Default::default() };
        let e = err(logit_lens(&model, &ids, &opts, None).map(|_| ()));
        assert!(e.contains("position -5 is out of range"), "{e}");
        let e = err(attention_patterns(&model, &ids, Some(&[0]), Some(&[9]), None).map(|_| ()));
        assert!(e.contains("head 9 is out of range"), "{e}");
        let nr = NeuronRequest { layer: 0, neuron: 1536, top_k: 5, through_final_norm: false, prompt: None };
        let e = err(neuron_vocab(&model, &nr, None).map(|_| ()));
        assert!(e.contains("neuron 1536 is out of range"), "{e}");
        let e = err(first_token(&model, "answer", "").map(|_| ()));
        assert!(e.contains("tokenizes to nothing"), "{e}");
        let req = DlaRequest { ids: ids.clone(), answer: 1 << 20, wrong: None, position: -1 };
        let e = err(direct_logit_attribution(&model, &req, None).map(|_| ()));
        assert!(e.contains("answer token id"), "{e}");
        let opts = GenerateOptions { max_new_tokens: 1, ..Default::default() };
        let e = err(monitor(&model, &ids, &opts, "blocks.0.hook_resid_post", &[1.0; 3], None).map(|_| ()));
        assert!(e.contains("has width 576"), "{e}");
        let e = err(monitor(&model, &ids, &opts, "blocks.0.attn.hook_z", &[1.0; 64], None).map(|_| ()));
        assert!(e.contains("per head"), "{e}");
        let e = err(monitor(&model, &ids, &opts, "blocks.0.hook_resid_post", &[0.0; 576], None).map(|_| ()));
        assert!(e.contains("all zeros"), "{e}");
    }
}
