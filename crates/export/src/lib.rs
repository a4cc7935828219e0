//! Scalpel's intervention document, exported to engines that run models too
//! big for a browser tab (docs/export.md):
//!
//! - [`nnsight::script`]: a Python script for nnsight (local, or NDIF with `--remote`);
//! - [`transformer_lens::script`]: a Python script for TransformerLens 4 (`TransformerBridge`);
//! - [`llama_cpp::export`]: a llama.cpp control-vector GGUF and its `llama-server` command line;
//! - [`vllm_lens::request`]: a vllm-lens `/v1/completions` body with `apply_steering_vectors`.
//!
//! Pure functions of the document and a [`ModelSpec`]: no engine, no I/O,
//! so the page (wasm) can call them. Vectors must be literal numbers: a
//! vector computed from prompts is resolved by the caller (the CLI runs the
//! engine) before export. An op with no counterpart in the target is an
//! error naming the intervention and the op; only a disabled intervention
//! is left out, and the script lists it.

pub mod llama_cpp;
pub mod nnsight;
mod plan;
mod py;
pub mod transformer_lens;
pub mod vllm_lens;

pub use plan::{plan, Plan, Pos, Step, StepOp};

/// What the exporters need to know about the model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    /// Scalpel's architecture name: llama, qwen2, qwen3, gpt_neox, gpt2, gemma2, gemma3.
    pub arch: String,
    /// The model as the target loads it: a Hugging Face id or a local directory.
    pub name: String,
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_head: usize,
    pub d_mlp: usize,
}

/// What a script runs by default (both can be changed on its command line).
#[derive(Clone, Debug, PartialEq)]
pub struct ScriptOptions {
    pub prompt: String,
    /// 0: print the next-token prediction only; N: greedy-generate N tokens.
    pub max_new_tokens: usize,
}

/// The export targets, by their command-line names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Nnsight,
    TransformerLens,
    LlamaCpp,
    VllmLens,
}

impl Target {
    pub const ALL: [Target; 4] = [Target::Nnsight, Target::TransformerLens, Target::LlamaCpp, Target::VllmLens];

    pub fn name(self) -> &'static str {
        match self {
            Target::Nnsight => "nnsight",
            Target::TransformerLens => "transformer-lens",
            Target::LlamaCpp => "llama-cpp",
            Target::VllmLens => "vllm-lens",
        }
    }
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Target, String> {
        Target::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
            format!("unknown export target '{s}' (expected one of: {})", names.join(", "))
        })
    }
}
