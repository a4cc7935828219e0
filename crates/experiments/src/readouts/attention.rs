use web_time::Instant;

use scalpel_engine::{
    Hook, HookPoint, Model, Result, Site,
};
use scalpel_types::readouts::*;

use super::*;

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
    let (_, cache) = run_cached(model, ids, &points, extra, Logits::Last)?;
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
