//! The WebGPU backend in the worker: the loaded model's weights on the GPU
//! (crates/gpu), used for comparisons (`compare.rs` runs the lanes here
//! with the document lowered to GPU edits), next tokens and the benchmark.
//! Documents with an op that has no GPU form, patching and readouts run on
//! the CPU engine.

use super::compare::Stream;
use super::model::{encode_with_tokenizer, precision};
use super::{bench, post, stop_requested, ModelBytes};
use crate::js::now_ms;
use crate::protocol::{BenchResult, GenerateOptions, Precision, Prompt, Response};
use scalpel_experiments::readouts::top_probs;
use scalpel_gpu::{upload_edits, Edit, ForwardRequest, GenerateRequest, Gpu, GpuModel, GpuModelOptions, GpuOptions, LogitsOut};
use scalpel_interventions::run::GenEvent;
use std::cell::RefCell;
use std::ops::Range;
use std::sync::Arc;

thread_local! {
    static GPU: RefCell<Option<GpuModel>> = const { RefCell::new(None) };
}

/// Decode steps chained per readback in comparisons (tokens stream in
/// groups of this size).
const AHEAD: usize = 4;

/// Longest sequence the GPU KV cache holds.
const MAX_SEQ: usize = 1024;

pub fn started() -> bool {
    GPU.with(|g| g.borrow().is_some())
}

/// Drops the GPU model (a new model was loaded).
pub fn stop() {
    GPU.with(|g| *g.borrow_mut() = None);
}

/// Takes the model out of its slot for an async call (no `RefCell` borrow
/// is held across an await); `put` returns it.
fn take() -> Result<GpuModel, String> {
    GPU.with(|g| g.borrow_mut().take()).ok_or_else(|| "the WebGPU backend is not started".to_string())
}

fn put(m: GpuModel) {
    GPU.with(|g| *g.borrow_mut() = Some(m));
}

fn err(e: impl std::fmt::Display) -> String {
    format!("WebGPU: {e}")
}

/// Browsers do not expose adapter names.
fn adapter_name(gpu: &Gpu) -> String {
    let i = &gpu.info;
    match (i.name.is_empty(), i.software) {
        (false, _) => i.name.clone(),
        (true, true) => "software adapter".into(),
        (true, false) => "browser adapter".into(),
    }
}

/// What runs on the GPU, for the page.
pub fn label() -> Result<String, String> {
    GPU.with(|g| {
        let g = g.borrow();
        let m = g.as_ref().ok_or("the WebGPU backend is not started")?;
        Ok(format!("WebGPU · {} · {} weights", adapter_name(&m.gpu), if m.is_quantized() { "quantized" } else { "f32" }))
    })
}

/// Uploads the loaded model's weights. Quantized precision keeps the file's
/// Q8_0/Q4_1 blocks on the GPU (about 5× less memory); f32 uploads f32.
pub async fn init(name: &str, bytes: &ModelBytes, allow_software: bool) -> Result<(), String> {
    let quantized = precision() == Some(Precision::Quantized);
    stop();
    let t0 = now_ms();
    let gpu = Gpu::new(&GpuOptions { allow_software, force_software: false }).await.map_err(err)?;
    let (config, _, parts) = bytes.read(name).map_err(err)?;
    // The worker is single-threaded; `GpuModel` shares its device by `Arc`
    // for native callers.
    #[allow(clippy::arc_with_non_send_sync)]
    let gpu = Arc::new(gpu);
    let m = GpuModel::from_parts(gpu, name, &config, &parts, &GpuModelOptions { max_seq: MAX_SEQ, quantized }).map_err(err)?;
    let i = &m.gpu.info;
    let detail = format!(
        "{} ({}, {}), {} weights ({:.0} MB on the GPU), shader-f16 {}, subgroups {}, max buffer {} MB",
        adapter_name(&m.gpu),
        i.backend,
        i.device_type,
        if quantized { "quantized" } else { "f32" },
        m.weight_bytes() as f64 / 1e6,
        if i.shader_f16 { "yes" } else { "no" },
        if i.subgroups { "yes" } else { "no" },
        i.max_buffer_size / 1_000_000
    );
    let ready = Response::GpuReady { adapter: adapter_name(&m.gpu), software: i.software, detail, load_ms: now_ms() - t0 };
    put(m);
    post(&ready);
    Ok(())
}

/// Next-token distribution after `prompt`, then greedy generation (argmax on the GPU).
pub async fn run(prompt: &Prompt, max_new: u32, top_k: u32) -> Result<(), String> {
    let (ids, tok) = encode_with_tokenizer(prompt)?;
    let mut m = take()?;
    let out = greedy(&mut m, &ids, &tok.eos_ids, max_new).await;
    put(m);
    let (row, gen, first_token_ms, decode_tok_s) = out?;
    let next = top_probs(&tok, &row, top_k.clamp(1, 50) as usize);
    post(&Response::GpuResult { next, text: tok.decode(&gen), ids: gen, first_token_ms, decode_tok_s });
    Ok(())
}

/// The last row's logits, the greedy continuation, time to the first token
/// and decode speed.
async fn greedy(m: &mut GpuModel, ids: &[u32], eos: &[u32], max_new: u32) -> Result<(Vec<f32>, Vec<u32>, f64, f64), String> {
    m.reset();
    let t0 = now_ms();
    // Prefill with the last row's logits and the GPU argmax in one pass.
    let out = m.forward(ids, &ForwardRequest { logits: LogitsOut::Last, argmax: true, ..Default::default() }).await.map_err(err)?;
    let row = out.logits.ok_or("WebGPU: no logits came back")?;
    let mut last = out.next_token.ok_or("WebGPU: no token came back")?;
    let first_token_ms = now_ms() - t0;
    let mut gen = vec![last];
    let t1 = now_ms();
    while (gen.len() as u32) < max_new && !eos.contains(&last) && m.len() + 1 < m.max_seq && !stop_requested() {
        last = m.next_token(&[last]).await.map_err(err)?;
        gen.push(last);
    }
    let decode_tok_s = if gen.len() > 1 { (gen.len() - 1) as f64 / ((now_ms() - t1) / 1e3) } else { 0.0 };
    Ok((row, gen, first_token_ms, decode_tok_s))
}

/// One comparison lane on the GPU under `edits` (sampling on the GPU),
/// streamed into `stream`, then scored by one GPU forward pass over the
/// prompt and the output under the same edits: the logits rows from the
/// last prompt position, and the positions each generation call covered.
/// None if stopped.
pub async fn lane(
    ids: &[u32],
    sampling: &GenerateOptions,
    edits: &[Edit],
    stream: &mut Stream<'_>,
) -> Result<Option<(Vec<Vec<f32>>, Vec<Range<usize>>)>, String> {
    let mut m = take()?;
    let out = lane_on(&mut m, ids, sampling, edits, stream).await;
    put(m);
    out
}

async fn lane_on(
    m: &mut GpuModel,
    ids: &[u32],
    sampling: &GenerateOptions,
    edits: &[Edit],
    stream: &mut Stream<'_>,
) -> Result<Option<(Vec<Vec<f32>>, Vec<Range<usize>>)>, String> {
    let edits = upload_edits(m, edits);
    let stop = if sampling.stop_at_eos { stream.eos_ids() } else { Vec::new() };
    let req = GenerateRequest { opts: sampling, stop: &stop, edits: &edits, ahead: AHEAD };
    let g = m.generate(ids, &req, |id| stream.event(&GenEvent::Token { id })).await.map_err(err)?;
    if stream.stopped {
        return Ok(None);
    }
    let full = stream.full(ids, m.max_seq);
    m.reset();
    let out = m.forward(&full, &ForwardRequest { logits: LogitsOut::All, edits, ..Default::default() }).await.map_err(err)?;
    let logits = out.logits.ok_or("WebGPU: no logits came back")?;
    let rows = logits.chunks(m.config.d_vocab).skip(ids.len() - 1).map(<[f32]>::to_vec).collect();
    Ok(Some((rows, g.calls)))
}

/// Like the CPU benchmark: prefill `prompt_tokens`, then up to
/// `decode_tokens` greedy steps (argmax on the GPU, 4-byte readback each),
/// stopping after `DECODE_BUDGET_MS` (at least 2 steps) so a software
/// adapter answers in seconds; median of `rounds`. Reports the steps run.
pub async fn bench(prompt_tokens: u32, decode_tokens: u32, rounds: u32) -> Result<(), String> {
    let prompt = bench::prompt(prompt_tokens as usize)?;
    let backend = label()?;
    let mut m = take()?;
    let out = bench_on(&mut m, &prompt, decode_tokens, rounds.max(1)).await;
    put(m);
    let (prefill_tok_s, decode_tok_s, decode_tokens) = out?;
    let precision = precision().unwrap_or(Precision::F32);
    post(&Response::Bench(Box::new(BenchResult {
        precision,
        backend,
        prompt_tokens,
        decode_tokens,
        rounds,
        prefill_tok_s,
        decode_tok_s,
        cpu_threads: None,
        prompt_text: String::new(),
        wasm_memory_bytes: super::wasm_memory_bytes(),
        weight_bytes: 0,
    })));
    Ok(())
}

const DECODE_BUDGET_MS: f64 = 3000.0;

async fn bench_on(m: &mut GpuModel, prompt: &[u32], decode: u32, rounds: u32) -> Result<(f64, f64, u32), String> {
    let (mut pre, mut dec) = (Vec::new(), Vec::new());
    let mut steps = 0u32;
    for _ in 0..rounds {
        m.reset();
        let t0 = now_ms();
        let mut next = m.next_token(prompt).await.map_err(err)?;
        pre.push(prompt.len() as f64 / ((now_ms() - t0) / 1e3));
        let t1 = now_ms();
        steps = 0;
        while steps < decode.max(2) && (steps < 2 || now_ms() - t1 < DECODE_BUDGET_MS) {
            next = m.next_token(&[next]).await.map_err(err)?;
            steps += 1;
        }
        dec.push(steps as f64 / ((now_ms() - t1) / 1e3));
    }
    Ok((bench::median(pre), bench::median(dec), steps))
}
