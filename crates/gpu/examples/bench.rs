//! Prefill and decode tokens/s of the GPU path next to the CPU engine (f32),
//! same model, same prompt, same run.
//!
//! ```sh
//! RAYON_NUM_THREADS=1 cargo run --release -p scalpel-gpu --example bench [-- MODEL.gguf [PROMPT_TOKENS [NEW_TOKENS]]]
//! ```
//! Software adapters (lavapipe) are allowed here; the adapter is printed.
//! `SCALPEL_GPU_QUANTIZED=1` loads with `GpuModelOptions::quantized`.

use std::sync::Arc;
use std::time::Instant;

use scalpel_engine::{KvCache, Logits, Model, ModelSource, Precision};
use scalpel_gpu::{block_on, Gpu, GpuModel, GpuModelOptions, GpuOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().cloned().unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/SmolLM2-135M-Instruct.Q4_1.gguf").to_owned()
    });
    let n_prompt: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    let n_new: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let name = std::path::Path::new(&path).file_name().unwrap().to_string_lossy().into_owned();

    let cpu = Model::load(&name, ModelSource::Gguf(&bytes), Precision::F32).expect("CPU model");
    let text = "The quick brown fox jumps over the lazy dog. Scalpel runs small language models in the browser and lets you intervene inside them. ";
    let mut prompt = Vec::new();
    while prompt.len() < n_prompt {
        prompt.extend(cpu.tokenizer().encode(text).unwrap());
    }
    prompt.truncate(n_prompt);

    let gpu = Arc::new(block_on(Gpu::new(&GpuOptions::allow_software())).expect("a GPU adapter"));
    let i = &gpu.info;
    println!(
        "adapter: {} ({}, {}, software: {}, shader-f16: {}, subgroups: {}, max storage binding {} MB)",
        i.name, i.backend, i.device_type, i.software, i.shader_f16, i.subgroups, i.max_storage_buffer_binding_size >> 20
    );
    let quantized = std::env::var("SCALPEL_GPU_QUANTIZED").as_deref() == Ok("1");
    let t0 = Instant::now();
    let mut g = GpuModel::from_gguf(gpu.clone(), &name, &bytes, &GpuModelOptions { max_seq: n_prompt + n_new + 8, quantized }).expect("GPU model");
    println!("GPU weights: {:.1} MB (quantized: {quantized})", g.weight_bytes() as f64 / 1e6);
    println!("GPU load (dequantize + upload): {:.2} s; {} dispatches per decode step", t0.elapsed().as_secs_f64(), g.dispatches_per_token());
    println!("prompt {n_prompt} tokens, then {n_new} greedy tokens");

    // CPU engine, f32.
    let mut cache = KvCache::new(&cpu.config);
    let t = Instant::now();
    let l = cpu.forward(&cpu.ids_tensor(&prompt).unwrap(), Some(&mut cache), None, Logits::Last).unwrap();
    let cpu_prefill = t.elapsed().as_secs_f64();
    let mut tok = scalpel_engine::argmax(&l.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    let mut cpu_tokens = vec![tok];
    let t = Instant::now();
    for _ in 1..n_new {
        let l = cpu.forward(&cpu.ids_tensor(&[tok]).unwrap(), Some(&mut cache), None, Logits::Last).unwrap();
        tok = scalpel_engine::argmax(&l.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        cpu_tokens.push(tok);
    }
    let cpu_decode = t.elapsed().as_secs_f64();

    // GPU warm-up (pipelines, buffers), then measured runs.
    block_on(g.next_token(&prompt[..8])).unwrap();
    g.reset();
    let t = Instant::now();
    let first = block_on(g.next_token(&prompt)).unwrap();
    let gpu_prefill = t.elapsed().as_secs_f64();
    let mut sync_tokens = vec![first];
    let t = Instant::now();
    for _ in 1..n_new {
        let next = block_on(g.next_token(&[*sync_tokens.last().unwrap()])).unwrap();
        sync_tokens.push(next);
    }
    let gpu_decode_sync = t.elapsed().as_secs_f64();
    g.reset();
    block_on(g.next_token(&prompt)).unwrap();
    g.reset();
    let t = Instant::now();
    let chained = block_on(g.generate_greedy(&prompt, n_new, &[], 8, |_| true)).unwrap();
    let gpu_gen = t.elapsed().as_secs_f64();
    let gpu_decode_chain = gpu_gen - gpu_prefill;

    let rate = |n: usize, s: f64| n as f64 / s;
    println!("| | prefill tok/s | decode tok/s |");
    println!("| --- | ---: | ---: |");
    println!("| CPU engine f32 | {:.1} | {:.1} |", rate(n_prompt, cpu_prefill), rate(n_new - 1, cpu_decode));
    println!("| GPU, 1 submit + 4-byte readback per token | {:.1} | {:.1} |", rate(n_prompt, gpu_prefill), rate(n_new - 1, gpu_decode_sync));
    println!("| GPU, 8 tokens chained on the GPU per readback | | {:.1} (approx.: total minus measured prefill) |", rate(n_new - 1, gpu_decode_chain));
    println!("greedy tokens equal to CPU: sync {}, chained {}", sync_tokens == cpu_tokens, chained == cpu_tokens);
}
