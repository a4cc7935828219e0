use web_time::Instant;

use candle_core::{Device, Tensor};
use scalpel_engine::config::NormKind;
use scalpel_engine::{
    top_k, Error, Hook, HookPoint,
    Matrix, Model, Result, Site,
};
use scalpel_types::readouts::*;

use super::*;

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
    let scores = vocab_scores(model, &col, req.through_final_norm)?;
    let (promoted, suppressed) = promoted_suppressed(model, &scores, req.top_k);
    let activations = match &req.prompt {
        None => None,
        Some(ids) => {
            let mut points = vec![HookPoint::block(req.layer, Site::MlpPost), HookPoint::block(req.layer, Site::MlpPre)];
            if cfg.gated_mlp {
                points.push(HookPoint::block(req.layer, Site::MlpPreLinear));
            }
            let (_, cache) = run_cached(model, ids, &points, extra, Logits::Last)?;
            let unit = |p: HookPoint| -> Result<Vec<f32>> {
                Ok(cached(&cache, p)?.narrow(1, req.neuron, 1)?.flatten_all()?.to_vec1()?)
            };
            Some(NeuronActivations {
                ids: ids.clone(),
                tokens: model.tokenizer().token_strings(ids),
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

/// A residual-stream direction `v` (`[d_model]`) through the final norm's
/// weight (centred first for a LayerNorm) when `through_final_norm`, then
/// the unembedding: every token's logit change per unit along `v`.
pub fn vocab_scores(model: &Model, v: &[f32], through_final_norm: bool) -> Result<Vec<f32>> {
    let cfg = &model.config;
    if v.len() != cfg.d_model {
        return Err(Error::input(format!("a direction of width {} cannot be read through the unembedding (d_model = {})", v.len(), cfg.d_model)));
    }
    let mut v = v.to_vec();
    if through_final_norm {
        let (w, _) = final_norm_params(model)?;
        if cfg.norm == NormKind::Layer {
            let m = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
            v.iter_mut().for_each(|x| *x = (*x as f64 - m) as f32);
        }
        v.iter_mut().zip(&w).for_each(|(x, &w)| *x *= w);
    }
    let vt = Tensor::from_vec(v, (cfg.d_model, 1), &Device::Cpu)?;
    Ok(model.unembedding_times(&vt)?.flatten_all()?.to_vec1()?)
}

/// The residual direction whose dot product with any `v` is
/// `vocab_scores(v)[id]`: token `id`'s unembedding row times the final
/// norm's weight (and centred, for a LayerNorm).
pub fn token_direction(model: &Model, id: u32, through_final_norm: bool) -> Result<Vec<f32>> {
    let mut u: Vec<f32> = model.unembedding_rows(&[id])?.flatten_all()?.to_vec1()?;
    if through_final_norm {
        let (w, _) = final_norm_params(model)?;
        u.iter_mut().zip(&w).for_each(|(x, &w)| *x *= w);
        if model.config.norm == NormKind::Layer {
            let m = u.iter().map(|&x| x as f64).sum::<f64>() / u.len() as f64;
            u.iter_mut().for_each(|x| *x = (*x as f64 - m) as f32);
        }
    }
    Ok(u)
}

/// The `k` highest scores (highest first) and the `k` lowest (lowest first), as tokens.
pub fn promoted_suppressed(model: &Model, scores: &[f32], k: usize) -> (Vec<TokenScore>, Vec<TokenScore>) {
    let tok = model.tokenizer();
    let neg: Vec<f32> = scores.iter().map(|x| -x).collect();
    let promoted = top_k(scores, k).into_iter().map(|(id, s)| TokenScore { id, token: tok.decode(&[id]), score: s }).collect();
    let suppressed = top_k(&neg, k).into_iter().map(|(id, s)| TokenScore { id, token: tok.decode(&[id]), score: -s }).collect();
    (promoted, suppressed)
}
