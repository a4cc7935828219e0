//! Running a model under an intervention document: a forward pass, or
//! generation with the generation-time ops (KV-cache edits, inserted text,
//! conditional steering with backtracking) and weight edits (LASER), which
//! are undone afterwards.

use candle_core::{Device, Tensor};
use scalpel_engine::{Error, GenerateOptions, KvCache, Logits, Model, Result, Sampler, SavedWeight};
pub use scalpel_types::run::{GenEvent, Generation};

use crate::compile::Interventions;

/// Rank-`k` approximation of a matrix through its SVD (f64 for accuracy).
pub fn low_rank_approx(w: &Tensor, k: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let data: Vec<f32> = w.flatten_all()?.to_vec1()?;
    let m = nalgebra::DMatrix::from_row_iterator(rows, cols, data.iter().map(|&x| x as f64));
    let svd = m.svd(true, true);
    let (u, vt) = (svd.u.expect("computed"), svd.v_t.expect("computed"));
    // nalgebra does not sort singular values: take the k largest.
    let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
    order.sort_by(|&a, &b| svd.singular_values[b].total_cmp(&svd.singular_values[a]));
    let mut out = nalgebra::DMatrix::<f64>::zeros(rows, cols);
    for &i in order.iter().take(k) {
        out += svd.singular_values[i] * u.column(i) * vt.row(i);
    }
    let v: Vec<f32> = (0..rows).flat_map(|r| (0..cols).map(move |c| (r, c))).map(|(r, c)| out[(r, c)] as f32).collect();
    Ok(Tensor::from_vec(v, (rows, cols), &Device::Cpu)?)
}

/// Applies the document's weight edits; returns what to restore.
pub fn apply_weights(model: &mut Model, iv: &Interventions) -> Result<Vec<SavedWeight>> {
    let mut saved = Vec::new();
    for lr in &iv.low_ranks {
        let w = model.weight(lr.layer, lr.matrix)?;
        let max_rank = w.dim(0)?.min(w.dim(1)?);
        if lr.rank > max_rank {
            for s in saved.into_iter().rev() {
                model.restore_weight(s);
            }
            return Err(Error::input(format!(
                "intervention {}: rank {} exceeds the matrix's full rank {max_rank}",
                lr.index, lr.rank
            )));
        }
        let approx = low_rank_approx(&w, lr.rank)?;
        saved.push(model.replace_weight(lr.layer, lr.matrix, approx)?);
    }
    Ok(saved)
}

pub fn restore_weights(model: &mut Model, saved: Vec<SavedWeight>) {
    for s in saved.into_iter().rev() {
        model.restore_weight(s);
    }
}

/// Logits `[t, vocab]` for `ids` under the interventions.
pub fn logits(model: &mut Model, ids: &[u32], iv: &mut Interventions) -> Result<Tensor> {
    logit_rows(model, ids, iv, Logits::All)
}

/// The logits rows `which` selects (`[rows, vocab]`) for `ids` under the
/// interventions: a long prompt's full-vocabulary rows are the largest
/// thing its pass makes, so callers ask only for the rows they show.
pub fn logit_rows(model: &mut Model, ids: &[u32], iv: &mut Interventions, which: Logits) -> Result<Tensor> {
    iv.check_single_pass()?;
    let saved = apply_weights(model, iv)?;
    let out = model.forward(&model.ids_tensor(ids)?, None, Some(iv), which).and_then(|t| Ok(t.squeeze(0)?));
    restore_weights(model, saved);
    out
}

/// Generates under the interventions. `on_event` sees each event as it
/// happens and returns false to stop.
pub fn generate(
    model: &mut Model,
    prompt: &[u32],
    opts: &GenerateOptions,
    iv: &mut Interventions,
    on_event: &mut dyn FnMut(&GenEvent) -> bool,
) -> Result<Generation> {
    opts.validate().map_err(Error::Input)?;
    if prompt.is_empty() {
        return Err(Error::input("empty prompt: there are no tokens to run"));
    }
    let saved = apply_weights(model, iv)?;
    let out = generate_inner(model, prompt, opts, iv, on_event);
    restore_weights(model, saved);
    out
}

fn generate_inner(
    model: &Model,
    prompt: &[u32],
    opts: &GenerateOptions,
    iv: &mut Interventions,
    on_event: &mut dyn FnMut(&GenEvent) -> bool,
) -> Result<Generation> {
    let n = prompt.len();
    let n_ctx = model.config.n_ctx;
    if n >= n_ctx {
        return Err(Error::input(format!("the prompt has {n} tokens; the context length is {n_ctx}")));
    }
    let mut cache = KvCache::new(&model.config);
    let mut sampler = Sampler::new(opts);
    let mut seq: Vec<u32> = prompt.to_vec();
    let mut events = Vec::new();
    let mut inserts_left: Vec<usize> = iv.inserts.iter().map(|i| i.times).collect();
    let mut emit = |e: GenEvent, events: &mut Vec<GenEvent>| -> bool {
        let go = on_event(&e);
        events.push(e);
        go
    };
    // KV-cache edits: the prefix's entries are edited before the last prompt
    // token is run, so every token after the prompt reads the edited cache;
    // the last prompt token's own entry is edited right after its pass.
    let mut pending: Vec<u32> = if !iv.kv_adds.is_empty() && n > 1 {
        model.forward(&model.ids_tensor(&prompt[..n - 1])?, Some(&mut cache), Some(&mut *iv), Logits::Last)?;
        apply_kv(model, &mut cache, iv, |p| p < n - 1)?;
        vec![prompt[n - 1]]
    } else {
        prompt.to_vec()
    };
    let mut first_pass = true;
    while seq.len() - n < opts.max_new_tokens && seq.len() < n_ctx {
        let logits = model.forward(&model.ids_tensor(&pending)?, Some(&mut cache), Some(&mut *iv), Logits::Last)?;
        if first_pass {
            apply_kv(model, &mut cache, iv, |p| p == n - 1 || n == 1)?;
            first_pass = false;
        }
        // A conditional fired and wants to redo the last tokens steered.
        if let Some((back, fired_at)) = iv.take_backtracks().into_iter().next() {
            let new_len = (fired_at + 1).saturating_sub(back).max(n);
            let removed = seq.len() - new_len;
            if removed > 0 {
                seq.truncate(new_len);
                if !emit(GenEvent::Backtrack { removed, index_fired_at: fired_at }, &mut events) {
                    break;
                }
            }
            cache.truncate(new_len - 1)?;
            iv.rollback_to(new_len - 1);
            pending = vec![seq[new_len - 1]];
            // Re-running the last prompt token recreates its cache entry:
            // its KV edits must be applied again after that pass.
            if new_len == n {
                first_pass = true;
            }
            continue;
        }
        let step = seq.len() - n;
        if let Some(k) = (0..iv.inserts.len()).find(|&k| inserts_left[k] > 0 && iv.inserts[k].at_step == Some(step)) {
            inserts_left[k] -= 1;
            let ids = iv.inserts[k].ids.clone();
            seq.extend(&ids);
            pending = ids.clone();
            if !emit(GenEvent::Inserted { ids, index: iv.inserts[k].index }, &mut events) {
                break;
            }
            continue;
        }
        let row: Vec<f32> = logits.flatten_all()?.to_vec1()?;
        let next = sampler.sample(&row);
        seq.push(next);
        if !emit(GenEvent::Token { id: next }, &mut events) {
            break;
        }
        if opts.stop_at_eos && model.tokenizer().is_eos(next) {
            break;
        }
        pending = vec![next];
        let generated = &seq[n..];
        if let Some(k) = (0..iv.inserts.len()).find(|&k| {
            inserts_left[k] > 0 && iv.inserts[k].after.as_ref().is_some_and(|a| generated.ends_with(a))
        }) {
            inserts_left[k] -= 1;
            let ids = iv.inserts[k].ids.clone();
            seq.extend(&ids);
            pending.extend(&ids);
            if !emit(GenEvent::Inserted { ids, index: iv.inserts[k].index }, &mut events) {
                break;
            }
        }
    }
    Ok(Generation { ids: seq.split_off(n), events })
}

fn apply_kv(model: &Model, cache: &mut KvCache, iv: &Interventions, which: impl Fn(usize) -> bool) -> Result<()> {
    for kv in &iv.kv_adds {
        let positions: Vec<usize> = kv.positions.iter().copied().filter(|&p| which(p)).collect();
        if positions.is_empty() {
            continue;
        }
        model.add_to_kv_cache(cache, kv.layer, kv.values, kv.heads.as_deref(), &positions, &kv.vector)?;
    }
    Ok(())
}
