//! Engine work behind each request. Everything here calls the same engine
//! and interventions code as the CLI (crates/engine, crates/interventions),
//! so a document or a sweep gives the same numbers in both.

use super::{post, stop_requested, ModelBytes, Throttle};
use crate::js::now_ms;
use crate::protocol::{
    DlaItem, ItemSummary, Kernels, Lane, LaneResult, LensCell, LensRow, ModelSource, ModelSummary, PatchOutcome, PatchSpec,
    Precision, Prompt, Response, Sampling, TokenLogit, TokenProb,
};
use scalpel_engine as se;
use scalpel_interventions as si;
use si::{patching, readout, run, vectors, Interventions};
use std::cell::RefCell;

struct Loaded {
    model: se::Model,
    precision: Precision,
    /// The last baseline generation, reused while prompt and sampling stay the same.
    baseline: Option<(Vec<u32>, Sampling, LaneResult)>,
}

thread_local! {
    static MODEL: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

type R<T> = Result<T, String>;

fn e(err: impl std::fmt::Display) -> String {
    err.to_string()
}

fn with_model<T>(f: impl FnOnce(&mut Loaded) -> R<T>) -> R<T> {
    MODEL.with(|m| {
        let mut m = m.borrow_mut();
        let loaded = m.as_mut().ok_or_else(|| "no model loaded yet".to_string())?;
        f(loaded)
    })
}

pub fn precision() -> Option<Precision> {
    MODEL.with(|m| m.borrow().as_ref().map(|l| l.precision))
}

pub fn is_loaded() -> bool {
    MODEL.with(|m| m.borrow().is_some())
}

pub fn unload() {
    MODEL.with(|m| *m.borrow_mut() = None);
}

fn engine_kernels(k: Kernels) -> se::Kernels {
    match k {
        Kernels::Auto => se::Kernels::Auto,
        Kernels::Candle => se::Kernels::Candle,
        Kernels::Scalpel => se::Kernels::Scalpel,
    }
}

/// What runs the matmuls, for the UI.
fn backend(l: &Loaded) -> String {
    match l.precision {
        Precision::F32 => "CPU wasm simd128 · f32 matmul (candle)".to_string(),
        Precision::Quantized => format!("CPU wasm simd128 · quantized kernels: {}", l.model.kernels()),
    }
}

pub fn set_kernels(k: Kernels) -> R<()> {
    with_model(|l| {
        l.model.set_kernels(engine_kernels(k)).map_err(e)?;
        // Baseline outputs were made by the other kernels.
        l.baseline = None;
        post(&Response::KernelsSet { backend: backend(l) });
        Ok(())
    })
}

pub fn load(source: &ModelSource, bytes: ModelBytes, precision: Precision, kernels: Kernels, fetch_ms: f64, from_cache: bool) -> R<()> {
    let name = source.label();
    unload();
    let t0 = now_ms();
    let p = match precision {
        Precision::F32 => se::Precision::F32,
        Precision::Quantized => se::Precision::Quantized,
    };
    let src = match &bytes {
        ModelBytes::Gguf(b) => se::ModelSource::Gguf(b.as_ref().clone()),
        ModelBytes::Hf { config, tokenizer, tokenizer_config, weights } => se::ModelSource::HuggingFace {
            config: config.as_ref().clone(),
            tokenizer: tokenizer.as_ref().map(|t| t.as_ref().clone()),
            tokenizer_config: tokenizer_config.as_ref().map(|t| t.as_ref().clone()),
            weights: weights.iter().map(|(n, w)| (n.clone(), w.as_ref().clone())).collect(),
        },
    };
    let model = se::Model::load_with(&name, src, p, engine_kernels(kernels)).map_err(|err| format!("{name}: {err}"))?;
    let load_ms = now_ms() - t0;
    let c = &model.config;
    let summary = ModelSummary {
        arch: c.arch.name().to_string(),
        n_layers: c.n_layers as u32,
        n_heads: c.n_heads as u32,
        n_kv_heads: c.n_kv_heads as u32,
        d_model: c.d_model as u32,
        d_mlp: c.d_mlp as u32,
        vocab: c.d_vocab as u32,
        n_ctx: c.n_ctx as u32,
        chat_template: model.tokenizer().chat_template.is_some(),
    };
    let loaded = Loaded { model, precision, baseline: None };
    let backend = backend(&loaded);
    MODEL.with(|m| *m.borrow_mut() = Some(loaded));
    post(&Response::Loaded { name, precision, bytes: bytes.len() as f64, fetch_ms, load_ms, from_cache, summary, backend });
    Ok(())
}

/// Most characters a prompt may have (a bound on work and memory; the
/// context length bounds tokens).
const MAX_PROMPT_CHARS: usize = 20_000;

/// The loaded model's tokenizer and the prompt's ids (for the GPU backend).
pub fn encode_with_tokenizer(prompt: &Prompt) -> R<(Vec<u32>, se::Tokenizer)> {
    with_model(|l| Ok((encode(&l.model, prompt)?, l.model.tokenizer().clone())))
}

pub fn bench_prompt(n: usize) -> R<Vec<u32>> {
    with_model(|l| {
        let base = l.model.tokenizer().encode(crate::protocol::BENCH_SEED_TEXT).map_err(e)?;
        Ok(base.iter().copied().cycle().take(n).collect())
    })
}

fn encode(m: &se::Model, prompt: &Prompt) -> R<Vec<u32>> {
    if prompt.text.is_empty() {
        return Err("the prompt is empty".into());
    }
    if prompt.text.len() > MAX_PROMPT_CHARS {
        return Err(format!("the prompt has {} characters; at most {MAX_PROMPT_CHARS} are accepted", prompt.text.len()));
    }
    let text = if prompt.chat {
        m.tokenizer().apply_chat_template(&[("user", prompt.text.as_str())], true).map_err(e)?
    } else {
        prompt.text.clone()
    };
    let ids = m.tokenizer().encode(&text).map_err(e)?;
    if ids.len() >= m.config.n_ctx {
        return Err(format!("the prompt has {} tokens; the context length is {}", ids.len(), m.config.n_ctx));
    }
    Ok(ids)
}

fn plain(text: &str) -> Prompt {
    Prompt { text: text.to_string(), chat: false }
}

/// The document compiled for this prompt length; None when it has no
/// enabled intervention.
fn compile(m: &se::Model, doc: &str, prompt_len: usize) -> R<Option<Interventions>> {
    if doc.trim().is_empty() {
        return Ok(None);
    }
    let d = si::parse(doc).map_err(|err| format!("interventions: {err}"))?;
    if !d.interventions.iter().any(|i| i.enabled) {
        return Ok(None);
    }
    let (d, saes) = vectors::resolve(m, &d, &vectors::Resources::default()).map_err(|err| format!("interventions: {err}"))?;
    Interventions::compile_with(m, &d, prompt_len, &saes).map(Some).map_err(|err| format!("interventions: {err}"))
}

fn empty_doc(m: &se::Model, prompt_len: usize) -> R<Interventions> {
    Interventions::compile(m, &si::Document { version: si::VERSION, interventions: vec![] }, prompt_len).map_err(e)
}

pub fn options(s: &Sampling) -> se::GenerateOptions {
    se::GenerateOptions {
        max_new_tokens: s.max_new_tokens as usize,
        temperature: s.temperature,
        top_k: s.top_k.map(|k| k as usize),
        top_p: s.top_p,
        seed: s.seed,
        stop_at_eos: true,
    }
}

fn token_text(m: &se::Model, id: u32) -> String {
    m.tokenizer().decode(&[id])
}

fn probs_top(tok: &se::Tokenizer, row: &[f32], k: usize) -> Vec<TokenProb> {
    let lse = se::logsumexp(row);
    se::top_k(row, k).into_iter().map(|(id, l)| TokenProb { id, text: tok.decode(&[id]), prob: (l - lse).exp() }).collect()
}

/// A generation scored: the text each token adds, its probability where it
/// was chosen and the top alternatives there, and the next-token
/// distribution after the prompt. `rows[k]` is the logits row that
/// predicted `gen[k]` (row 0: right after the prompt).
pub struct Scored {
    pub pieces: Vec<String>,
    pub probs: Vec<f32>,
    pub alternatives: Vec<Vec<TokenProb>>,
    pub next: Vec<TokenProb>,
}

pub fn score(tok: &se::Tokenizer, gen: &[u32], rows: &[Vec<f32>], top_k: u32) -> Scored {
    let mut out = Scored { pieces: Vec::new(), probs: Vec::new(), alternatives: Vec::new(), next: Vec::new() };
    let mut prev = String::new();
    for (k, &id) in gen.iter().enumerate().take(rows.len()) {
        let row = &rows[k];
        let lse = se::logsumexp(row);
        out.probs.push((row[id as usize] - lse).exp());
        out.alternatives.push(probs_top(tok, row, 5));
        let text = tok.decode(&gen[..=k]);
        let piece = text.strip_prefix(prev.as_str()).map(str::to_string).unwrap_or_else(|| tok.decode(&[id]));
        out.pieces.push(piece);
        prev = text;
    }
    if let Some(row) = rows.first() {
        out.next = probs_top(tok, row, top_k.clamp(1, 50) as usize);
    }
    out
}

pub fn top_k(prompt: &str, k: u32) -> R<()> {
    with_model(|l| {
        let m = &l.model;
        let ids = encode(m, &plain(prompt))?;
        let top = m.next_token_top_k(&ids, k as usize).map_err(e)?;
        let top = top.into_iter().map(|(id, logit)| TokenLogit { id, text: token_text(m, id), logit }).collect();
        post(&Response::TopK { prompt_ids: ids, top });
        Ok(())
    })
}

/// The timing of a streamed generation: time to the first token, and the
/// decode speed over the tokens after it.
pub struct TokenClock {
    t0: f64,
    first: Option<f64>,
}

impl TokenClock {
    pub fn start() -> Self {
        TokenClock { t0: now_ms(), first: None }
    }

    /// Records the `n`th sampled token; the decode speed so far.
    pub fn tick(&mut self, n: usize) -> f64 {
        let t = now_ms();
        let t1 = *self.first.get_or_insert(t);
        if n > 1 {
            (n - 1) as f64 / ((t - t1) / 1e3)
        } else {
            0.0
        }
    }

    /// (time to the first token in ms, decode tokens/s) after `n` sampled tokens.
    pub fn finish(&self, n: usize) -> (f64, f64) {
        let t_end = now_ms();
        let decode = match self.first {
            Some(t1) if n > 1 => (n - 1) as f64 / ((t_end - t1) / 1e3),
            _ => 0.0,
        };
        (self.first.map(|t| t - self.t0).unwrap_or(0.0), decode)
    }
}

pub fn generate(prompt: &str, s: &Sampling) -> R<()> {
    with_model(|l| {
        let m = &l.model;
        let prompt_ids = encode(m, &plain(prompt))?;
        let opts = options(s);
        let mut clock = TokenClock::start();
        let mut ids: Vec<u32> = Vec::new();
        let mut stopped = false;
        let mut on_token = |id: u32| -> bool {
            ids.push(id);
            let tok_s = clock.tick(ids.len());
            post(&Response::Token { id, text: m.tokenizer().decode(&ids), n: ids.len() as u32, tok_s });
            if stop_requested() {
                stopped = true;
                return false;
            }
            true
        };
        se::generate(m, &prompt_ids, &opts, None, &mut on_token).map_err(e)?;
        let (first_token_ms, decode_tok_s) = clock.finish(ids.len());
        let text = m.tokenizer().decode(&ids);
        post(&Response::Done { prompt_ids, ids, text, stopped, first_token_ms, decode_tok_s });
        Ok(())
    })
}

/// Baseline, then intervened, generation; then both scored. `note` (why a
/// comparison asked for on WebGPU runs here) is shown with the warnings.
pub fn compare(prompt: &Prompt, s: &Sampling, doc: &str, top_k: u32, note: Option<String>) -> R<()> {
    with_model(|l| {
        let ids = encode(&l.model, prompt)?;
        // Compile first: a bad document is reported before any generation.
        let iv = compile(&l.model, doc, ids.len())?;
        let prompt_tokens = l.model.tokenizer().token_strings(&ids);
        let baseline = match &l.baseline {
            Some((i, smp, res)) if *i == ids && smp == s => LaneResult { reused: true, ..res.clone() },
            _ => {
                let mut none = empty_doc(&l.model, ids.len())?;
                let Some(res) = lane(&mut l.model, &ids, s, &mut none, None, Lane::Baseline, top_k)? else {
                    post(&Response::Cancelled);
                    return Ok(());
                };
                l.baseline = Some((ids.clone(), s.clone(), res.clone()));
                res
            }
        };
        let (intervened, report, warnings) = match iv {
            None => (None, vec![], vec![]),
            Some(mut iv) => {
                let warnings = iv.warnings.clone();
                let Some(res) = lane(&mut l.model, &ids, s, &mut iv, Some(doc), Lane::Intervened, top_k)? else {
                    post(&Response::Cancelled);
                    return Ok(());
                };
                let report = iv
                    .report()
                    .into_iter()
                    .map(|r| ItemSummary { index: r.index as u32, op: r.op, hooks: r.hooks, applications: r.applications as u32 })
                    .collect();
                (Some(res), report, warnings)
            }
        };
        let warnings = note.into_iter().chain(warnings).collect();
        post(&Response::Compared { prompt_tokens, baseline, intervened, report, warnings, backend: backend(l) });
        Ok(())
    })
}

/// What a comparison on the GPU needs from the CPU engine: the prompt ids,
/// the tokenizer, and the document compiled (vectors and source runs
/// resolved by the engine) and lowered to in-place edits. `Err(why)` inside
/// when the document has an op with no GPU form: the caller runs the
/// comparison here instead and says why.
pub struct GpuPrep {
    pub ids: Vec<u32>,
    pub tok: se::Tokenizer,
    pub prompt_tokens: Vec<String>,
    pub doc: Option<(Interventions, Vec<scalpel_types::Edit>)>,
    pub warnings: Vec<String>,
}

pub fn gpu_prep(prompt: &Prompt, doc: &str) -> R<Result<GpuPrep, String>> {
    with_model(|l| {
        let m = &l.model;
        let ids = encode(m, prompt)?;
        let iv = compile(m, doc, ids.len())?;
        let warnings = iv.as_ref().map(|iv| iv.warnings.clone()).unwrap_or_default();
        let doc = match iv {
            None => None,
            Some(iv) => match iv.lower(m) {
                Ok(specs) => Some((iv, specs)),
                Err(why) => return Ok(Err(why)),
            },
        };
        Ok(Ok(GpuPrep { prompt_tokens: m.tokenizer().token_strings(&ids), tok: m.tokenizer().clone(), ids, doc, warnings }))
    })
}


/// One generation, streamed as `LaneText`, then scored by one forward pass
/// over prompt + output (under the document when there is one). None if stopped.
fn lane(
    m: &mut se::Model,
    ids: &[u32],
    s: &Sampling,
    iv: &mut Interventions,
    doc: Option<&str>,
    which: Lane,
    top_k: u32,
) -> R<Option<LaneResult>> {
    let opts = options(s);
    let mut clock = TokenClock::start();
    let mut seq: Vec<u32> = Vec::new();
    let mut inserted: Vec<bool> = Vec::new();
    let mut backtracked = 0u32;
    let mut stopped = false;
    let mut count = 0usize;
    let tok = m.tokenizer().clone();
    let mut on_event = |ev: &run::GenEvent| -> bool {
        match ev {
            run::GenEvent::Token { id } => {
                seq.push(*id);
                inserted.push(false);
                count += 1;
            }
            run::GenEvent::Inserted { ids, .. } => {
                seq.extend(ids);
                inserted.extend(ids.iter().map(|_| true));
            }
            run::GenEvent::Backtrack { removed, .. } => {
                let keep = seq.len().saturating_sub(*removed);
                seq.truncate(keep);
                inserted.truncate(keep);
                backtracked += *removed as u32;
            }
        }
        let tok_s = clock.tick(count);
        post(&Response::LaneText { lane: which, ids: seq.clone(), text: tok.decode(&seq), tok_s });
        if stop_requested() {
            stopped = true;
            return false;
        }
        true
    };
    let g = run::generate(m, ids, &opts, iv, &mut on_event).map_err(e)?;
    let (first_token_ms, decode_tok_s) = clock.finish(count);
    if stopped {
        return Ok(None);
    }
    // Score: the probability of each output token where it was chosen, and
    // the next-token distribution after the prompt.
    let n = ids.len();
    let mut full = ids.to_vec();
    full.extend(&g.ids);
    if full.len() > m.config.n_ctx {
        full.truncate(m.config.n_ctx);
    }
    let mut scoring = match doc {
        Some(d) => compile(m, d, n)?.unwrap_or(empty_doc(m, n)?),
        None => empty_doc(m, n)?,
    };
    let logits = run::logits(m, &full, &mut scoring).map_err(e)?;
    let rows: Vec<Vec<f32>> = logits.to_vec2().map_err(e)?;
    let Scored { pieces, probs, alternatives, next } = score(m.tokenizer(), &g.ids, &rows[n - 1..], top_k);
    Ok(Some(LaneResult {
        text: m.tokenizer().decode(&g.ids),
        ids: g.ids,
        pieces,
        probs,
        alternatives,
        inserted,
        next,
        backtracked,
        first_token_ms,
        decode_tok_s,
        reused: false,
    }))
}

/// Runs `f` with the document's hook (and weight edits) in place.
fn with_doc<T>(m: &mut se::Model, doc: &str, prompt_len: usize, f: impl FnOnce(&se::Model, Option<&mut dyn se::Hook>) -> R<T>) -> R<T> {
    match compile(m, doc, prompt_len)? {
        None => f(m, None),
        Some(mut iv) => {
            let saved = run::apply_weights(m, &iv).map_err(e)?;
            let out = f(m, Some(&mut iv));
            run::restore_weights(m, saved);
            out
        }
    }
}

pub fn patch(spec: &PatchSpec) -> R<()> {
    with_model(|l| {
        let m = &l.model;
        let clean = encode(m, &plain(&spec.clean))?;
        let corruption = if spec.corrupt.is_empty() {
            let positions = spec.noise.clone().unwrap_or_default();
            if positions.is_empty() {
                return Err("give a corrupted prompt, or positions to corrupt with noise".into());
            }
            patching::Corruption::Noise { positions, std: None, seed: spec.seed }
        } else {
            patching::Corruption::Prompt(encode(m, &plain(&spec.corrupt))?)
        };
        let req = patching::PatchRequest {
            clean: clean.clone(),
            corruption,
            answer: readout::first_token(m, "answer", &spec.answer).map_err(e)?,
            wrong: readout::first_token(m, "wrong", &spec.wrong).map_err(e)?,
            site: patching::PatchSite::parse(&spec.family).map_err(e)?,
            metric: patching::Metric::parse(&spec.metric).map_err(e)?,
            strategy: patching::Strategy::Fast,
            direction: if spec.noising { patching::Direction::Noise } else { patching::Direction::Denoise },
        };
        let mut throttle = Throttle::new();
        let mut progress = |done: usize, total: usize| -> bool {
            if throttle.due() || done == total {
                post(&Response::Work { done: done as u32, total: total as u32 });
            }
            !stop_requested()
        };
        let r = match patching::sweep(m, &req, &mut progress) {
            Ok(r) => r,
            Err(se::Error::Cancelled) => {
                post(&Response::Cancelled);
                return Ok(());
            }
            Err(err) => return Err(e(err)),
        };
        let row_labels = match r.heads_per_layer {
            Some(h) if h > 0 => (0..r.rows).map(|i| format!("L{}.H{}", i / h, i % h)).collect(),
            _ => (0..r.rows).map(|l| format!("L{l}")).collect(),
        };
        let col_labels = if req.site == patching::PatchSite::HeadZ {
            (0..r.cols).map(|h| format!("H{h}")).collect()
        } else {
            m.tokenizer().token_strings(&clean)
        };
        post(&Response::Patched {
            outcome: PatchOutcome {
                family: spec.family.clone(),
                metric: spec.metric.clone(),
                rows: r.rows as u32,
                cols: r.cols as u32,
                values: r.values,
                row_labels,
                col_labels,
                clean: r.clean,
                corrupt: r.corrupt,
                computed_cells: r.computed_cells as u32,
                seconds: r.seconds,
            },
        });
        Ok(())
    })
}

pub fn lens(prompt: &Prompt, doc: &str, target: &str) -> R<()> {
    with_model(|l| {
        let ids = encode(&l.model, prompt)?;
        let target_id = if target.is_empty() { None } else { Some(readout::first_token(&l.model, "target", target).map_err(e)?) };
        let opts = readout::LensOptions { top_k: 3, target: target_id, ..Default::default() };
        let r = with_doc(&mut l.model, doc, ids.len(), |m, hook| readout::logit_lens(m, &ids, &opts, hook).map_err(e))?;
        let rows = r
            .rows
            .into_iter()
            .map(|row| LensRow {
                label: row.label,
                cells: row
                    .cells
                    .into_iter()
                    .map(|c| LensCell {
                        top: c.top.into_iter().map(|t| TokenProb { id: t.id, text: t.token, prob: t.prob }).collect(),
                        target_prob: c.target.as_ref().map(|t| t.prob),
                        target_rank: c.target.as_ref().map(|t| t.rank as u32),
                    })
                    .collect(),
            })
            .collect();
        post(&Response::Lens { tokens: r.tokens, target: target_id.map(|t| token_text(&l.model, t)), rows });
        Ok(())
    })
}

/// Longest prompt (tokens) for the attention view: patterns are n² per head.
const MAX_ATTENTION_TOKENS: usize = 256;

pub fn attention(prompt: &Prompt, doc: &str) -> R<()> {
    with_model(|l| {
        let ids = encode(&l.model, prompt)?;
        if ids.len() > MAX_ATTENTION_TOKENS {
            return Err(format!("the attention view takes at most {MAX_ATTENTION_TOKENS} tokens; this prompt has {}", ids.len()));
        }
        let r = with_doc(&mut l.model, doc, ids.len(), |m, hook| readout::attention_patterns(m, &ids, None, None, hook).map_err(e))?;
        let patterns = r
            .layers
            .into_iter()
            .map(|layer| layer.heads.into_iter().map(|h| h.pattern.into_iter().flatten().collect()).collect())
            .collect();
        post(&Response::Attention { tokens: r.tokens, patterns });
        Ok(())
    })
}

pub fn dla(prompt: &Prompt, doc: &str, answer: &str, wrong: &str) -> R<()> {
    with_model(|l| {
        let ids = encode(&l.model, prompt)?;
        let answer_id = readout::first_token(&l.model, "answer", answer).map_err(e)?;
        let wrong_id = if wrong.is_empty() { None } else { Some(readout::first_token(&l.model, "wrong", wrong).map_err(e)?) };
        let req = readout::DlaRequest { ids: ids.clone(), answer: answer_id, wrong: wrong_id, position: -1 };
        let r = with_doc(&mut l.model, doc, ids.len(), |m, hook| readout::direct_logit_attribution(m, &req, hook).map_err(e))?;
        let mut top: Vec<DlaItem> = r.components.iter().map(|c| DlaItem { name: c.name.clone(), value: c.value }).collect();
        top.sort_by(|a, b| b.value.abs().total_cmp(&a.value.abs()));
        top.truncate(12);
        post(&Response::Dla {
            tokens: r.tokens,
            metric: r.metric,
            answer: r.answer.token.clone(),
            wrong: r.wrong.as_ref().map(|w| w.token.clone()),
            total: r.total,
            heads: r.layers.iter().map(|x| x.heads.clone()).collect(),
            mlps: r.layers.iter().map(|x| x.mlp).collect(),
            embed: r.embed,
            unexplained: r.unexplained,
            top,
        });
        Ok(())
    })
}

pub fn neuron(layer: u32, neuron: u32, top_k: u32, prompt: &Prompt) -> R<()> {
    with_model(|l| {
        let m = &l.model;
        let ids = if prompt.text.is_empty() { None } else { Some(encode(m, prompt)?) };
        let req = readout::NeuronRequest {
            layer: layer as usize,
            neuron: neuron as usize,
            top_k: top_k.clamp(1, 100) as usize,
            through_final_norm: true,
            prompt: ids,
        };
        let r = readout::neuron_vocab(m, &req, None).map_err(e)?;
        let (tokens, activations) = match r.activations {
            Some(a) => (a.tokens, a.post),
            None => (vec![], vec![]),
        };
        post(&Response::Neuron {
            layer,
            neuron,
            promoted: r.promoted.into_iter().map(|t| (t.token, t.score)).collect(),
            suppressed: r.suppressed.into_iter().map(|t| (t.token, t.score)).collect(),
            tokens,
            activations,
            output_norm: r.output_norm,
        });
        Ok(())
    })
}

/// Most prompts per set for the separation scan (bounds work).
const MAX_SET: usize = 64;

pub fn separation(positive: &[String], negative: &[String], site: &str, method: &str) -> R<()> {
    with_model(|l| {
        let m = &l.model;
        let clean = |v: &[String]| v.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect::<Vec<_>>();
        let (pos, neg) = (clean(positive), clean(negative));
        if pos.is_empty() || neg.is_empty() {
            return Err("both prompt sets need at least one prompt".into());
        }
        if pos.len() > MAX_SET || neg.len() > MAX_SET {
            return Err(format!("at most {MAX_SET} prompts per set"));
        }
        let method_v = vectors::Method::parse(method)?;
        let (points, _) = vectors::sweep_points(m, &format!("blocks.*.{site}"))?;
        let acts = vectors::collect(m, &pos, &neg, &points, vectors::Pool::At(-1))?;
        let x = vectors::extract(&acts, method_v, &vectors::MethodOptions::default())?;
        let best = x.best().map(|b| x.scores[b].layer.unwrap_or(b) as u32);
        post(&Response::Separation {
            site: site.to_string(),
            method: method.to_string(),
            layers: x.scores.iter().enumerate().map(|(k, s)| s.layer.unwrap_or(k) as u32).collect(),
            accuracy: x.scores.iter().map(|s| s.loo_accuracy.map(|v| v as f32)).collect(),
            cohens_d: x.scores.iter().map(|s| s.cohens_d.map(|v| v as f32)).collect(),
            best,
        });
        Ok(())
    })
}

pub fn import_control_vector(name: &str, bytes: &[u8]) -> R<()> {
    with_model(|l| {
        let (cv, mut warnings) = vectors::read_control_vector(name, bytes)?;
        // Check it against the model the same way the CLI does.
        let (_, w2) = vectors::control_vector_document(&l.model, &cv, 1.0)?;
        warnings.extend(w2);
        post(&Response::ControlVector {
            name: name.to_string(),
            directions: cv.directions.into_iter().map(|(k, v)| (k as u32, v)).collect(),
            warnings,
        });
        Ok(())
    })
}

pub fn sae_latent(name: &str, cfg_json: &str, weights: &[u8], latent: u32) -> R<()> {
    with_model(|l| {
        let sae = vectors::Sae::load(name, cfg_json.as_bytes(), weights)?;
        // Checks the hook and width against this model.
        sae.point(&l.model)?;
        if latent as usize >= sae.d_sae {
            return Err(format!("{name}: latent {latent} is out of range (the SAE has {} latents)", sae.d_sae));
        }
        let values = sae.decoder_row(latent as usize)?;
        post(&Response::SaeLatent { name: name.to_string(), hook: sae.hook_name.clone(), latent, d_sae: sae.d_sae as u32, values });
        Ok(())
    })
}

/// Mirrors `ours()` in crates/cli/src/bench.rs, so the numbers compare.
pub fn bench(prompt_tokens: u32, decode_tokens: u32, rounds: u32) -> R<()> {
    with_model(|l| {
        let m = &l.model;
        if rounds == 0 || prompt_tokens == 0 {
            return Err("bench: rounds and prompt tokens must be at least 1".into());
        }
        let base = m.tokenizer().encode(crate::protocol::BENCH_SEED_TEXT).map_err(e)?;
        let prompt: Vec<u32> = base.iter().copied().cycle().take(prompt_tokens as usize).collect();
        if prompt.len() + decode_tokens as usize + 1 > m.config.n_ctx {
            return Err(format!("bench: prompt + decode tokens exceed the context length {}", m.config.n_ctx));
        }
        let last = |logits: se::Tensor| -> R<u32> { Ok(se::argmax(&logits.flatten_all().map_err(e)?.to_vec1::<f32>().map_err(e)?)) };
        let (mut pre, mut dec) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t0 = now_ms();
            let mut cache = se::KvCache::new(&m.config);
            let x = m.ids_tensor(&prompt).map_err(e)?;
            let mut next = last(m.forward(&x, Some(&mut cache), None, se::Logits::Last).map_err(e)?)?;
            pre.push(prompt.len() as f64 / ((now_ms() - t0) / 1e3));
            let t1 = now_ms();
            for _ in 0..decode_tokens {
                let x = m.ids_tensor(&[next]).map_err(e)?;
                next = last(m.forward(&x, Some(&mut cache), None, se::Logits::Last).map_err(e)?)?;
            }
            dec.push(decode_tokens as f64 / ((now_ms() - t1) / 1e3));
        }
        post(&Response::Bench {
            precision: l.precision,
            backend: backend(l),
            prompt_tokens,
            decode_tokens,
            rounds,
            prefill_tok_s: median(pre),
            decode_tok_s: median(dec),
        });
        Ok(())
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
