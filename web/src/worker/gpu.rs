//! The WebGPU backend in the worker: the loaded GGUF's weights on the GPU
//! (crates/gpu), run for next tokens, greedy generation and the benchmark.
//! Interventions and readouts stay on the CPU engine.

use super::post;
use crate::js::now_ms;
use crate::protocol::{Precision, Prompt, Response, TokenProb};
use scalpel_gpu::{ForwardRequest, Gpu, GpuModel, GpuModelOptions, GpuOptions, LogitsOut};
use std::cell::RefCell;
use std::sync::Arc;

thread_local! {
    static GPU: RefCell<Option<GpuModel>> = const { RefCell::new(None) };
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

/// Like the CPU benchmark: prefill `prompt_tokens`, then `decode_tokens`
/// greedy steps (argmax on the GPU, 4-byte readback each); median of `rounds`.
pub async fn bench(prompt_tokens: u32, decode_tokens: u32, rounds: u32) -> R<()> {
    let prompt = super::ops::bench_prompt(prompt_tokens as usize)?;
    let mut m = take()?;
    let out = bench_inner(&mut m, &prompt, decode_tokens, rounds.max(1)).await;
    let quantized = super::ops::precision() == Some(Precision::Quantized);
    let adapter = if m.gpu.info.name.is_empty() { m.gpu.info.device_type.clone() } else { m.gpu.info.name.clone() };
    put(m);
    let (prefill_tok_s, decode_tok_s) = out?;
    post(&Response::Bench {
        precision: Precision::F32,
        backend: format!("WebGPU · {adapter} · {} weights", if quantized { "quantized" } else { "f32" }),
        prompt_tokens,
        decode_tokens,
        rounds,
        prefill_tok_s,
        decode_tok_s,
    });
    Ok(())
}

async fn bench_inner(m: &mut GpuModel, prompt: &[u32], decode: u32, rounds: u32) -> R<(f64, f64)> {
    let (mut pre, mut dec) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        m.reset();
        let t0 = now_ms();
        let mut next = m.next_token(prompt).await.map_err(e)?;
        pre.push(prompt.len() as f64 / ((now_ms() - t0) / 1e3));
        let t1 = now_ms();
        for _ in 0..decode {
            next = m.next_token(&[next]).await.map_err(e)?;
        }
        dec.push(decode as f64 / ((now_ms() - t1) / 1e3));
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    Ok((med(pre), med(dec)))
}
