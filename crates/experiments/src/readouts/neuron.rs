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
    let scores: Vec<f32> = model.unembedding_times(&vt)?.flatten_all()?.to_vec1()?;
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
            let (_, cache) = run_cached(model, ids, &points, extra, Logits::Last)?;
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
