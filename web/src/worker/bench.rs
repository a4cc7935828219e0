//! The page's benchmark on the CPU engine, measured exactly like `scalpel
//! bench` (`scalpel_experiments::bench`).

use super::model::{backend, with_model};
use super::post;
use crate::protocol::{BenchResult, Response, ThreadGain};
pub use scalpel_experiments::bench::median;
use scalpel_experiments::bench;

/// The benchmark prompt of `n` tokens for the loaded model.
pub fn prompt(n: usize) -> Result<Vec<u32>, String> {
    with_model(|m| bench::prompt(m, n, 0).map_err(|e| e.to_string()))
}

pub fn run(prompt_tokens: u32, decode_tokens: u32, rounds: u32) -> Result<(), String> {
    with_model(|m| {
        let prompt = bench::prompt(m, prompt_tokens as usize, decode_tokens as usize).map_err(|e| format!("bench: {e}"))?;
        let s = bench::measure_rounds(m, &prompt, decode_tokens as usize, rounds as usize).map_err(|e| format!("bench: {e}"))?;
        let result = BenchResult {
            precision: m.precision,
            backend: backend(m),
            prompt_tokens,
            decode_tokens,
            rounds,
            prefill_tok_s: s.prefill,
            decode_tok_s: s.decode,
            cpu_threads: Some(scalpel_engine::kernel_threads() as u32),
            prompt_text: bench::prompt_text(m, prompt_tokens as usize).map_err(|e| format!("bench: {e}"))?,
            wasm_memory_bytes: super::wasm_memory_bytes(),
            weight_bytes: m.weight_bytes(),
        };
        post(&Response::Bench(Box::new(result)));
        Ok(())
    })
}

/// The kernels' threads against this thread alone, in one run
/// (`bench::thread_gain`); `Cancelled` when the page stops it.
pub fn run_threads(prompt_tokens: u32, decode_tokens: u32, runs: u32) -> Result<(), String> {
    with_model(|m| {
        let prompt = bench::prompt(m, prompt_tokens as usize, decode_tokens as usize).map_err(|e| format!("bench: {e}"))?;
        match bench::thread_gain(m, &prompt, decode_tokens as usize, runs as usize, &|| !super::stop_requested()) {
            Ok(g) => post(&Response::ThreadGain(Box::new(ThreadGain {
                precision: m.precision,
                threads: g.threads as u32,
                prefill_gain: g.prefill,
                decode_gain: g.decode,
                prefill_tok_s_one: g.prefill_tok_s.0,
                prefill_tok_s_all: g.prefill_tok_s.1,
                decode_tok_s_one: g.decode_tok_s.0,
                decode_tok_s_all: g.decode_tok_s.1,
                prefill_pairs: g.prefill_pairs as u32,
                decode_pairs: g.decode_pairs as u32,
                window: bench::GAIN_WINDOW as u32,
            }))),
            Err(scalpel_engine::Error::Cancelled) => post(&Response::Cancelled),
            Err(e) => return Err(format!("bench: {e}")),
        }
        Ok(())
    })
}
