//! Features of a prompt and a latent's top contexts: a forward pass reads
//! the dictionary's input hook (and a transcoder's output hook), the
//! dictionary encodes it. The CLI prints these results; the web worker can
//! call the same functions.

use candle_core::Tensor;
use scalpel_engine::{ActivationCache, HookPoint, Logits, Model, Site};

use crate::sae::{ce, Res, Sae};

pub use scalpel_types::features::{Context, Features, Latent, PositionFeatures};

/// The dense values of one prompt: `[t, d_in]` input, `[t, d_out]` target
/// (the value at the output hook), `[t, d_sae]` latents, `[t, d_out]` output.
pub struct Encoded {
    pub input: Tensor,
    pub target: Tensor,
    pub latents: Tensor,
    pub output: Tensor,
}

/// Runs the model on `ids` and encodes the dictionary's hook value(s).
pub fn encode_prompt(model: &Model, sae: &Sae, ids: &[u32]) -> Res<Encoded> {
    let (input, target) = hook_rows(model, sae, ids, true)?;
    let (latents, output) = sae.reconstruct(&input)?;
    let target = target.ok_or_else(|| format!("{}: no value at the output hook", sae.name))?;
    Ok(Encoded { input, target, latents, output })
}

/// The latents `[t, d_sae]` of `ids` (no decoding): what a corpus pass reads.
pub fn encode_latents(model: &Model, sae: &Sae, ids: &[u32]) -> Res<Tensor> {
    let (input, _) = hook_rows(model, sae, ids, false)?;
    sae.encode(&input)
}

/// The dictionary's input rows on `ids` and (`with_target`) the rows of
/// the value at its output hook. Only the blocks up to the later hook run:
/// nothing after a hook changes its value.
fn hook_rows(model: &Model, sae: &Sae, ids: &[u32], with_target: bool) -> Res<(Tensor, Option<Tensor>)> {
    let p_in = sae.point(model)?;
    let p_out = sae.point_out(model)?;
    let points = if with_target { vec![p_in, p_out] } else { vec![p_in] };
    let mut cache = ActivationCache::new(points.iter().copied());
    let tokens = model.ids_tensor(ids).map_err(ce)?;
    match blocks_to_run(model, &points) {
        Some(layers) => model.forward_blocks(&tokens, layers, Some(&mut cache)).map(|_| ()),
        None => model.forward(&tokens, None, Some(&mut cache), Logits::Last).map(|_| ()),
    }
    .map_err(ce)?;
    let x = cache.get(&p_in).ok_or_else(|| format!("{}: hook '{}' was not reached", sae.name, sae.hook_name))?;
    let (input, _) = sae.rows_of(x).map_err(ce)?;
    let target = match with_target {
        false => None,
        true => {
            let y = cache.get(&p_out).ok_or_else(|| format!("{}: hook '{}' was not reached", sae.name, sae.hook_out()))?;
            Some(sae.out_rows_of(y).map_err(ce)?)
        }
    };
    Ok((input, target))
}

/// How many blocks must run for every hook in `points` to be reached
/// (None: one is after the last block, e.g. `ln_final.hook_normalized`).
fn blocks_to_run(model: &Model, points: &[HookPoint]) -> Option<usize> {
    let mut n = 0;
    for p in points {
        match p.layer {
            Some(l) => n = n.max(l + 1),
            None if matches!(p.site, Site::Embed | Site::PosEmbed) => {}
            None => return None,
        }
    }
    (n <= model.config.n_layers).then_some(n)
}

/// Each position's top `top_k` latents, L0 and reconstruction error.
pub fn features(model: &Model, sae: &Sae, ids: &[u32]) -> Res<(Encoded, Vec<f32>)> {
    let enc = encode_prompt(model, sae, ids)?;
    let err = relative_error(&enc.target, &enc.output)?;
    Ok((enc, err))
}

/// ‖y − ŷ‖² / ‖y‖² per row.
pub fn relative_error(y: &Tensor, y_hat: &Tensor) -> Res<Vec<f32>> {
    let e2: Vec<f32> = (y - y_hat).and_then(|d| d.sqr()).and_then(|d| d.sum(1)).and_then(|d| d.to_vec1()).map_err(ce)?;
    let y2: Vec<f32> = y.sqr().and_then(|d| d.sum(1)).and_then(|d| d.to_vec1()).map_err(ce)?;
    Ok(e2.iter().zip(&y2).map(|(e, y)| e / y.max(1e-30)).collect())
}

/// The features report of a prompt (`scalpel features --top-k N`).
pub fn prompt_features(model: &Model, sae: &Sae, ids: &[u32], top_k: usize) -> Res<(Features, Encoded)> {
    let (enc, err) = features(model, sae, ids)?;
    let rows: Vec<Vec<f32>> = enc.latents.to_vec2().map_err(ce)?;
    let tokens = model.tokenizer().token_strings(ids);
    let positions = rows
        .iter()
        .enumerate()
        .map(|(p, row)| PositionFeatures {
            position: p,
            id: ids[p],
            token: tokens.get(p).cloned().unwrap_or_default(),
            latents: top_latents(row, top_k),
            l0: row.iter().filter(|v| **v != 0.0).count(),
            reconstruction_error: err[p],
        })
        .collect();
    Ok((Features { hook: sae.hook_name.clone(), hook_out: sae.hook_name_out.clone(), d_sae: sae.d_sae, positions, splice: None }, enc))
}

/// The `k` largest positive entries of `row`, highest first, ties by lower id.
pub fn top_latents(row: &[f32], k: usize) -> Vec<Latent> {
    scalpel_engine::top_k(row, k).into_iter().filter(|x| x.1 > 0.0).map(|(id, activation)| Latent { id, activation }).collect()
}

/// Splits a document's ids into windows of at most `max_tokens`.
pub fn windows(ids: &[u32], max_tokens: usize) -> Vec<Vec<u32>> {
    ids.chunks(max_tokens.max(1)).map(<[u32]>::to_vec).collect()
}

/// The `n` windows where `latent` reaches its highest activations (only
/// windows where it is positive), highest first; ties keep corpus order.
/// `progress(done, total)` is called after each window; returning false stops.
pub fn top_contexts(
    model: &Model,
    sae: &Sae,
    windows: &[Vec<u32>],
    latent: usize,
    n: usize,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Res<Vec<Context>> {
    if latent >= sae.d_sae {
        return Err(format!("{}: latent {latent} is out of range (d_sae = {})", sae.name, sae.d_sae));
    }
    let mut best: Vec<Context> = Vec::new();
    for (w, ids) in windows.iter().enumerate() {
        if !ids.is_empty() {
            let acts = crate::corpus::column(&encode_latents(model, sae, ids)?, latent)?;
            let (position, activation) = acts.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
            if activation > 0.0 {
                let at = best.partition_point(|c| c.activation >= activation);
                if at < n {
                    best.insert(at, Context { window: w, ids: ids.clone(), tokens: model.tokenizer().text_pieces(ids), position, activation, activations: acts });
                    best.truncate(n);
                }
            }
        }
        if !progress(w + 1, windows.len()) {
            return Err("stopped".into());
        }
    }
    Ok(best)
}
