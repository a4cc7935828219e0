//! The page's benchmark on the CPU engine, measured exactly like `scalpel
//! bench` (`scalpel_experiments::bench`).

use super::model::{backend, with_model};
use super::post;
use crate::protocol::{BenchResult, Response};
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
