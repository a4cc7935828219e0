//! Features of a prompt and a latent's top contexts: a forward pass reads
//! the dictionary's input hook (and a transcoder's output hook), the
//! dictionary encodes it. The CLI prints these results; the web worker can
//! call the same functions.

use candle_core::Tensor;
use scalpel_engine::{ActivationCache, Logits, Model};
use serde::{Deserialize, Serialize};

use crate::sae::{ce, Res, Sae};

/// One active latent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latent {
    pub id: u32,
    pub activation: f32,
}

/// One position's features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PositionFeatures {
    pub position: usize,
    /// The token id and its string.
    pub id: u32,
    pub token: String,
    /// The `top_k` largest positive activations, highest first (ties: lower id first).
    pub latents: Vec<Latent>,
    /// How many latents are non-zero.
    pub l0: usize,
    /// ‖y − ŷ‖² / ‖y‖²: y is the hook value (an SAE's input, a transcoder's
    /// output hook), ŷ the dictionary's output.
    pub reconstruction_error: f32,
}

/// `features`' result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Features {
    pub hook: String,
    /// A transcoder's output hook.
    pub hook_out: Option<String>,
    pub d_sae: usize,
    pub positions: Vec<PositionFeatures>,
}

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
    let p_in = sae.point(model)?;
    let p_out = sae.point_out(model)?;
    let mut cache = ActivationCache::new([p_in, p_out]);
    let tokens = model.ids_tensor(ids).map_err(ce)?;
    model.forward(&tokens, None, Some(&mut cache), Logits::Last).map_err(ce)?;
    let x = cache.get(&p_in).ok_or_else(|| format!("{}: hook '{}' was not reached", sae.name, sae.hook_name))?;
    let (input, _) = sae.rows_of(x).map_err(ce)?;
    let y = cache.get(&p_out).ok_or_else(|| format!("{}: hook '{}' was not reached", sae.name, sae.hook_out()))?;
    let target = sae.out_rows_of(y).map_err(ce)?;
    let (latents, output) = sae.reconstruct(&input)?;
    Ok(Encoded { input, target, latents, output })
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
    Ok((Features { hook: sae.hook_name.clone(), hook_out: sae.hook_name_out.clone(), d_sae: sae.d_sae, positions }, enc))
}

/// The `k` largest positive entries of `row`, highest first, ties by lower id.
pub fn top_latents(row: &[f32], k: usize) -> Vec<Latent> {
    scalpel_engine::top_k(row, k).into_iter().filter(|x| x.1 > 0.0).map(|(id, activation)| Latent { id, activation }).collect()
}

/// One context of a corpus where a latent fires.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// Which window of the corpus (the caller's numbering).
    pub window: usize,
    pub ids: Vec<u32>,
    /// The position of the highest activation (the first, on ties).
    pub position: usize,
    pub activation: f32,
    /// The latent's activation at every position of the window.
    pub activations: Vec<f32>,
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
            let enc = encode_prompt(model, sae, ids)?;
            let acts: Vec<f32> = enc.latents.narrow(1, latent, 1).and_then(|c| c.flatten_all()).and_then(|c| c.to_vec1()).map_err(ce)?;
            let (position, activation) = acts.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
            if activation > 0.0 {
                let at = best.partition_point(|c| c.activation >= activation);
                if at < n {
                    best.insert(at, Context { window: w, ids: ids.clone(), position, activation, activations: acts });
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
