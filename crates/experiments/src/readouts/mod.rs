//! Reading the model: logit lens, direct logit attribution (DLA), attention
//! patterns, neuron → vocabulary projections, and per-token projection
//! monitoring while generating.
//!
//! Every function returns plain serde data (`scalpel_types::readouts`,
//! documented in docs/readouts.md) and takes an optional extra hook (e.g.
//! compiled interventions) that runs *before* the reading, so what is read
//! is the value the model used.
//!
//! Nothing here changes a weight or folds a norm: the final norm and
//! unembedding are the model's own (`Model::final_norm`, `Model::unembed`).

mod attention;
mod dla;
mod lens;
mod monitor;
mod neuron;

pub use attention::attention_patterns;
pub use dla::{direct_logit_attribution, DlaRequest};
pub use lens::{logit_lens, LensOptions};
pub use monitor::{hook_width, monitor, read_vector, ProjectionMonitor};
pub use neuron::{neuron_vocab, promoted_suppressed, token_direction, vocab_scores, NeuronRequest};
pub use scalpel_types::readouts::*;


use candle_core::Tensor;
use scalpel_engine::config::NormKind;
use scalpel_engine::{
    logsumexp, top_k, ActivationCache, Error, Hook, HookList, HookPoint, Logits, Model, Result, Tokenizer,
};

/// The `k` most likely tokens of a logits row, with probabilities.
pub fn top_probs(tok: &Tokenizer, row: &[f32], k: usize) -> Vec<TokenProb> {
    let lse = logsumexp(row);
    top_k(row, k).into_iter().map(|(id, l)| TokenProb { id, token: tok.decode(&[id]), prob: (l - lse).exp(), logit: l }).collect()
}

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
/// them. Returns the logits rows `which` selects (`[rows, vocab]`) and the
/// cached values (batch axis removed).
fn run_cached(
    model: &Model,
    ids: &[u32],
    points: &[HookPoint],
    extra: Option<&mut dyn Hook>,
    which: Logits,
) -> Result<(Tensor, ActivationCache)> {
    check_ids(model, ids)?;
    let mut cache = ActivationCache::new(points.iter().copied());
    let logits = {
        let mut list = HookList::new();
        if let Some(e) = extra {
            list.push(e);
        }
        list.push(&mut cache);
        model.forward(&model.ids_tensor(ids)?, None, Some(&mut list), which)?.squeeze(0)?
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

#[cfg(test)]
mod tests {
    use super::*;
    use scalpel_engine::{generate, logsumexp, GenerateOptions, ModelSource, Precision};

    fn smol() -> Option<Model> {
        let bytes = scalpel_testkit::default_model_bytes()?;
        Some(Model::load("smol", ModelSource::Gguf(&bytes), Precision::F32).expect("SmolLM2 loads"))
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
