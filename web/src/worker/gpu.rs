//! The WebGPU backend in the worker: the loaded GGUF's weights on the GPU
//! (crates/gpu), run for comparisons (generation with sampling and the
//! document's interventions applied on the GPU), next tokens and the
//! benchmark. The CPU engine compiles documents (building vectors and source
//! runs) and lowers them to GPU edits; documents with an op that has no GPU
//! form, patching and readouts run on the CPU engine.

use super::ops::{self, GpuPrep, Scored};
use super::post;
use crate::js::now_ms;
use crate::protocol::{ItemSummary, Lane, LaneResult, Precision, Prompt, Response, Sampling, TokenProb};
use scalpel_gpu::{upload_edits, ForwardRequest, GenerateRequest, Gpu, GpuEdit, GpuModel, GpuModelOptions, GpuOptions, LogitsOut};
use std::cell::RefCell;
use std::ops::Range;
use std::sync::Arc;

thread_local! {
    static GPU: RefCell<Option<GpuModel>> = const { RefCell::new(None) };
    /// The last baseline lane on the GPU, reused while prompt and sampling stay the same.
    static BASELINE: RefCell<Option<(Vec<u32>, Sampling, LaneResult)>> = const { RefCell::new(None) };
}

/// Decode steps chained per readback in comparisons (tokens stream in
/// groups of this size).
const AHEAD: usize = 4;

pub fn started() -> bool {
    GPU.with(|g| g.borrow().is_some())
}

/// Drops the GPU model (a new model was loaded).
pub fn stop() {
    GPU.with(|g| *g.borrow_mut() = None);
    BASELINE.with(|b| *b.borrow_mut() = None);
}

type R<T> = Result<T, String>;

fn e(err: impl std::fmt::Display) -> String {
    err.to_string()
}

/// Takes the model out for an async call (no RefCell borrow across awaits).
fn take() -> R<GpuModel> {
    GPU.with(|g| g.borrow_mut().take()).ok_or_else(|| "the WebGPU backend is not started".to_string())
}

fn put(m: GpuModel) {
    GPU.with(|g| *g.borrow_mut() = Some(m));
}

pub async fn init(name: &str, bytes: &[u8], allow_software: bool) -> R<()> {
    // Quantized precision keeps the GGUF's Q8_0/Q4_1 blocks on the GPU
    // (about 5x less GPU memory); f32 uploads dequantized weights.
    let quantized = super::ops::precision() == Some(Precision::Quantized);
    GPU.with(|g| *g.borrow_mut() = None);
    BASELINE.with(|b| *b.borrow_mut() = None);
    let t0 = now_ms();
    let opts = GpuOptions { allow_software, force_software: false };
    let gpu = Gpu::new(&opts).await.map_err(|err| format!("WebGPU: {err}"))?;
    let mut i = gpu.info.clone();
    if i.name.is_empty() {
        // Browsers do not expose adapter names.
        i.name = if i.software { "software adapter".into() } else { "browser adapter".into() };
    }
    let m = GpuModel::from_gguf(Arc::new(gpu), name, bytes, &GpuModelOptions { max_seq: 1024, quantized }).map_err(|err| format!("WebGPU: {err}"))?;
    let detail = format!(
        "{} ({}, {}), {} weights ({:.0} MB on the GPU), shader-f16 {}, subgroups {}, max buffer {} MB",
        i.name,
        i.backend,
        i.device_type,
        if quantized { "quantized" } else { "f32" },
        m.weight_bytes() as f64 / 1e6,
        if i.shader_f16 { "yes" } else { "no" },
        if i.subgroups { "yes" } else { "no" },
        i.max_buffer_size / 1_000_000
    );
    put(m);
    post(&Response::GpuReady { adapter: i.name, software: i.software, detail, load_ms: now_ms() - t0 });
    Ok(())
}

pub async fn run(prompt: &Prompt, max_new: u32, top_k: u32) -> R<()> {
    let (ids, tok) = super::ops::encode_with_tokenizer(prompt)?;
    let mut m = take()?;
    let out = run_inner(&mut m, &ids, &tok, max_new, top_k).await;
    put(m);
    let (next, gen, first_token_ms, decode_tok_s) = out?;
    post(&Response::GpuResult { next, text: tok.decode(&gen), ids: gen, first_token_ms, decode_tok_s });
    Ok(())
}

async fn run_inner(m: &mut GpuModel, ids: &[u32], tok: &scalpel_engine::Tokenizer, max_new: u32, top_k: u32) -> R<(Vec<TokenProb>, Vec<u32>, f64, f64)> {
    m.reset();
    let t0 = now_ms();
    // Prefill with the last row's logits and the GPU argmax in one pass.
    let out = m.forward(ids, &ForwardRequest { logits: LogitsOut::Last, argmax: true, ..Default::default() }).await.map_err(e)?;
    let row = out.logits.ok_or("WebGPU: no logits came back")?;
    let first = out.next_token.ok_or("WebGPU: no token came back")?;
    let first_token_ms = now_ms() - t0;
    let lse = scalpel_engine::logsumexp(&row);
    let next = scalpel_engine::top_k(&row, top_k.clamp(1, 50) as usize)
        .into_iter()
        .map(|(id, l)| TokenProb { id, text: tok.decode(&[id]), prob: (l - lse).exp() })
        .collect();
    let mut gen = vec![first];
    let t1 = now_ms();
    let eos: Vec<u32> = tok.eos_ids.clone();
    while (gen.len() as u32) < max_new && !eos.contains(gen.last().unwrap()) && m.len() + 1 < m.max_seq {
        let next = m.next_token(&[*gen.last().unwrap()]).await.map_err(e)?;
        gen.push(next);
        if super::stop_requested() {
            break;
        }
    }
    let decode_tok_s = if gen.len() > 1 { (gen.len() - 1) as f64 / ((now_ms() - t1) / 1e3) } else { 0.0 };
    Ok((next, gen, first_token_ms, decode_tok_s))
}

fn label(m: &GpuModel) -> String {
    let i = &m.gpu.info;
    // Browsers do not expose adapter names.
    let adapter = match (i.name.is_empty(), i.software) {
        (false, _) => i.name.clone(),
        (true, true) => "software adapter".into(),
        (true, false) => "browser adapter".into(),
    };
    format!("WebGPU · {adapter} · {} weights", if m.is_quantized() { "quantized" } else { "f32" })
}

/// Baseline, then intervened, generation on the GPU (sampling and the
/// document's edits on the GPU), both scored by one GPU forward pass over
/// prompt + output, as `ops::compare` does on the CPU engine.
pub async fn compare(prompt: &Prompt, s: &Sampling, doc: &str, top_k: u32) -> R<()> {
    let prep = match ops::gpu_prep(prompt, doc)? {
        Ok(p) => p,
        Err(why) => return ops::compare(prompt, s, doc, top_k, Some(format!("ran on the CPU engine, not WebGPU: {why}"))),
    };
    let mut m = take()?;
    let out = compare_inner(&mut m, prep, s, top_k).await;
    put(m);
    out
}

async fn compare_inner(m: &mut GpuModel, prep: GpuPrep, s: &Sampling, top_k: u32) -> R<()> {
    let GpuPrep { ids, tok, prompt_tokens, doc, warnings } = prep;
    let cached = BASELINE.with(|b| match &*b.borrow() {
        Some((i, smp, res)) if *i == ids && smp == s => Some(LaneResult { reused: true, ..res.clone() }),
        _ => None,
    });
    let baseline = match cached {
        Some(b) => b,
        None => {
            let Some((res, _)) = lane(m, &tok, &ids, s, &[], Lane::Baseline, top_k).await? else {
                post(&Response::Cancelled);
                return Ok(());
            };
            BASELINE.with(|b| *b.borrow_mut() = Some((ids.clone(), s.clone(), res.clone())));
            res
        }
    };
    let (intervened, report) = match doc {
        None => (None, vec![]),
        Some((mut iv, specs)) => {
            let edits = upload_edits(m, &specs);
            let Some((res, calls)) = lane(m, &tok, &ids, s, &edits, Lane::Intervened, top_k).await? else {
                post(&Response::Cancelled);
                return Ok(());
            };
            for c in calls {
                iv.count_applications(&specs, c);
            }
            let report = iv
                .report()
                .into_iter()
                .map(|r| ItemSummary { index: r.index as u32, op: r.op, hooks: r.hooks, applications: r.applications as u32 })
                .collect();
            (Some(res), report)
        }
    };
    post(&Response::Compared { prompt_tokens, baseline, intervened, report, warnings, backend: label(m) });
    Ok(())
}

/// One generation on the GPU, streamed as `LaneText`, then scored by one
/// GPU forward pass over prompt + output under the same edits. None if stopped.
async fn lane(
    m: &mut GpuModel,
    tok: &scalpel_engine::Tokenizer,
    ids: &[u32],
    s: &Sampling,
    edits: &[GpuEdit],
    which: Lane,
    top_k: u32,
) -> R<Option<(LaneResult, Vec<Range<usize>>)>> {
    let opts = ops::options(s);
    let stop = if opts.stop_at_eos { tok.eos_ids.clone() } else { Vec::new() };
    let mut clock = ops::TokenClock::start();
    let mut seq: Vec<u32> = Vec::new();
    let mut stopped = false;
    let on_token = |id: u32| -> bool {
        seq.push(id);
        let tok_s = clock.tick(seq.len());
        post(&Response::LaneText { lane: which, ids: seq.clone(), text: tok.decode(&seq), tok_s });
        if super::stop_requested() {
            stopped = true;
            return false;
        }
        true
    };
    let req = GenerateRequest { opts: &opts, stop: &stop, edits, ahead: AHEAD };
    let g = m.generate(ids, &req, on_token).await.map_err(e)?;
    let (first_token_ms, decode_tok_s) = clock.finish(g.ids.len());
    if stopped {
        return Ok(None);
    }
    // Score: every row's logits over prompt + output, under the same edits.
    let n = ids.len();
    let mut full = ids.to_vec();
    full.extend(&g.ids);
    full.truncate(m.max_seq);
    m.reset();
    let out = m.forward(&full, &ForwardRequest { logits: LogitsOut::All, edits: edits.to_vec(), ..Default::default() }).await.map_err(e)?;
    let logits = out.logits.ok_or("WebGPU: no logits came back")?;
    let v = m.config.d_vocab;
    let rows: Vec<Vec<f32>> = logits.chunks(v).skip(n - 1).map(<[f32]>::to_vec).collect();
    let Scored { pieces, probs, alternatives, next } = ops::score(tok, &g.ids, &rows, top_k);
    let res = LaneResult {
        text: tok.decode(&g.ids),
        inserted: vec![false; g.ids.len()],
        ids: g.ids,
        pieces,
        probs,
        alternatives,
        next,
        backtracked: 0,
        first_token_ms,
        decode_tok_s,
        reused: false,
    };
    Ok(Some((res, g.calls)))
}

/// Like the CPU benchmark: prefill `prompt_tokens`, then up to
/// `decode_tokens` greedy steps (argmax on the GPU, 4-byte readback each),
/// stopping after `DECODE_BUDGET_MS` (at least 2 steps) so a software
/// adapter answers in seconds; median of `rounds`. Reports the steps run.
pub async fn bench(prompt_tokens: u32, decode_tokens: u32, rounds: u32) -> R<()> {
    let prompt = super::ops::bench_prompt(prompt_tokens as usize)?;
    let mut m = take()?;
    let out = bench_inner(&mut m, &prompt, decode_tokens, rounds.max(1)).await;
    let quantized = super::ops::precision() == Some(Precision::Quantized);
    let backend = label(&m);
    put(m);
    let (prefill_tok_s, decode_tok_s, decode_tokens) = out?;
    post(&Response::Bench {
        precision: if quantized { Precision::Quantized } else { Precision::F32 },
        backend,
        prompt_tokens,
        decode_tokens,
        rounds,
        prefill_tok_s,
        decode_tok_s,
    });
    Ok(())
}

const DECODE_BUDGET_MS: f64 = 3000.0;

async fn bench_inner(m: &mut GpuModel, prompt: &[u32], decode: u32, rounds: u32) -> R<(f64, f64, u32)> {
    let (mut pre, mut dec) = (Vec::new(), Vec::new());
    let mut steps = 0u32;
    for _ in 0..rounds {
        m.reset();
        let t0 = now_ms();
        let mut next = m.next_token(prompt).await.map_err(e)?;
        pre.push(prompt.len() as f64 / ((now_ms() - t0) / 1e3));
        let t1 = now_ms();
        steps = 0;
        while steps < decode.max(2) && (steps < 2 || now_ms() - t1 < DECODE_BUDGET_MS) {
            next = m.next_token(&[next]).await.map_err(e)?;
            steps += 1;
        }
        dec.push(steps as f64 / ((now_ms() - t1) / 1e3));
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    Ok((med(pre), med(dec), steps))
}
