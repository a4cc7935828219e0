//! Scalpel's engine: a small-transformer runtime whose every activation is
//! reachable under its TransformerLens hook name.
//!
//! - `arch/`: one module per architecture (hyperparameters and tensor names);
//!   `load/`: bytes → the shared parts layout → model (GGUF, safetensors);
//!   `model/`: the forward pass; `hooks`: hook points and callbacks;
//!   `tokenizer`, `generate`, `kernels` (Scalpel's quantized matmuls).
//! - Loads from bytes the caller provides (file, memory, or HTTP in the
//!   browser); runs natively and in wasm32 with the same code and numbers.
//! - Hooks read or rewrite activations during the forward pass and during
//!   KV-cached generation. No weight processing is hidden from the user.

mod arch;
pub mod config;
pub mod error;
pub mod generate;
pub mod hooks;
pub mod kernels;
pub mod load;
pub mod model;
pub mod tokenizer;

pub use arch::{hf_config, read, read_gguf_source};
pub use load::estimate::WeightEstimate;
pub use candle_core::{Device, Tensor};
pub use config::{Arch, Config, SiteShape};
pub use error::{Error, Result};
pub use generate::{argmax, generate, GenerateOptions, Sampler};
pub use hooks::{ActivationCache, FnHook, Hook, HookCtx, HookLayout, HookList, HookPoint, Site};
pub use kernels::Kernels;
/// Threads the quantized and exact kernels split a product over (feature `threads`: rayon's pool).
pub use scalpel_kernels::threads as kernel_threads;
/// Runs `f(0) .. f(n - 1)` over those threads (each once; nested calls run
/// on the calling thread), and how many independent passes share them.
pub use scalpel_kernels::{map_pieces, pass_threads, run_pieces};
/// Runs a closure with those threads' work on the calling thread alone (the same bits).
pub use scalpel_kernels::on_one_thread;
/// A kernel helper thread's loop (the threaded wasm build; see `scalpel_kernels::gang`).
#[cfg(all(feature = "threads", target_arch = "wasm32", target_feature = "atomics"))]
pub use scalpel_kernels::gang::helper_loop as kernel_helper_loop;
/// Records that a kernel helper thread trapped (see `scalpel_kernels::gang::helper_died`).
#[cfg(all(feature = "threads", target_arch = "wasm32", target_feature = "atomics"))]
pub use scalpel_kernels::gang::helper_died as kernel_helper_died;
pub use load::gguf;
pub use load::safetensors::shard_files;
pub use model::{rotary, KvCache, Logits, Matrix, Model, ModelFiles, ModelSource, PassSize, Precision, SavedWeight};
pub use tokenizer::Tokenizer;

/// The `k` largest values of `xs` with their indices, largest first.
pub fn top_k(xs: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<(u32, f32)> = xs.iter().enumerate().map(|(i, &x)| (i as u32, x)).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    idx.truncate(k);
    idx.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    idx
}

/// A logit row's log-probabilities (log softmax).
pub fn log_softmax(xs: &[f32]) -> Vec<f32> {
    let lse = logsumexp(xs);
    xs.iter().map(|x| x - lse).collect()
}

/// KL(p ‖ q) in nats of two log-probability rows, summed in f64. The one
/// place Scalpel computes a KL: patching's metric, the lens's KL to the
/// final layer, and a dictionary splice's KL all call it.
pub fn kl_logprobs(p: &[f32], q: &[f32]) -> f64 {
    p.iter().zip(q).map(|(&a, &b)| (a as f64).exp() * (a as f64 - b as f64)).sum()
}

/// log Σ exp(xs), computed stably.
pub fn logsumexp(xs: &[f32]) -> f32 {
    let m = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !m.is_finite() {
        return m;
    }
    m + xs.iter().map(|&x| ((x - m) as f64).exp()).sum::<f64>().ln() as f32
}
