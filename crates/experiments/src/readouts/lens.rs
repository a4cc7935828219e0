use web_time::Instant;

use candle_core::{Device, Tensor};
use scalpel_engine::{
    kl_logprobs, log_softmax, logsumexp, Hook, HookPoint, Model, Result, Site,
};
use scalpel_types::readouts::*;

use super::*;

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
    let top = super::top_probs(model.tokenizer(), row, opts.top_k);
    let target = opts.target.map(|t| {
        let l = row[t as usize];
        TargetStat { prob: (l - lse).exp(), logprob: l - lse, logit: l, rank: 1 + row.iter().filter(|&&x| x > l).count() }
    });
    let lp = log_softmax(row);
    let entropy: f64 = -lp.iter().map(|&l| (l as f64).exp() * l as f64).sum::<f64>();
    let kl = kl_logprobs(final_lp, &lp);
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
    // The final logits only from the first decoded position on.
    let first = positions.iter().copied().min().unwrap_or(0);
    let (logits, cache) = run_cached(model, ids, &points, extra, Logits::From(first))?;
    let pos_idx = Tensor::new(positions.iter().map(|&p| p as u32).collect::<Vec<_>>().as_slice(), &Device::Cpu)?;
    let row_idx = Tensor::new(positions.iter().map(|&p| (p - first) as u32).collect::<Vec<_>>().as_slice(), &Device::Cpu)?;
    let final_rows: Vec<Vec<f32>> = logits.index_select(&row_idx, 0)?.to_vec2()?;
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
