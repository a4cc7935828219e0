//! A tiny llama-family GGUF, written as llama.cpp writes one (F32 weights,
//! the byte-level vocabulary in its metadata).

use scalpel_engine::{Model, ModelSource, Precision};

use crate::gguf::{Gguf, Meta, TensorSpec};
use crate::rng::Rng;
use crate::vocab::{vocab, CHAT_TEMPLATE, ENDOFTEXT, IM_END, MERGES, VOCAB};

pub const GGUF_NAME: &str = "tiny.gguf";

/// Hyperparameters of the tiny llama.
#[derive(Clone, Debug)]
pub struct LlamaSpec {
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_mlp: usize,
    pub n_ctx: u32,
    /// No `output.weight`: the unembedding is `token_embd.weight`.
    pub tied: bool,
    pub seed: u64,
}

impl Default for LlamaSpec {
    fn default() -> Self {
        LlamaSpec { n_layers: 2, d_model: 64, n_heads: 4, n_kv_heads: 2, d_mlp: 128, n_ctx: 64, tied: false, seed: 1 }
    }
}

impl LlamaSpec {
    /// An even smaller one (fast to load thousands of times).
    pub fn micro() -> Self {
        LlamaSpec { n_layers: 1, d_model: 16, n_heads: 2, n_kv_heads: 1, d_mlp: 32, n_ctx: 32, tied: true, seed: 7 }
    }
}

/// A llama-family GGUF as llama.cpp writes it, with random F32 weights.
pub fn tiny_llama(spec: &LlamaSpec) -> Gguf {
    let mut g = Gguf::new();
    let (toks, types) = vocab();
    let (d, m, v) = (spec.d_model as u64, spec.d_mlp as u64, VOCAB as u64);
    let dh = d / spec.n_heads as u64;
    let kv = dh * spec.n_kv_heads as u64;
    g.set("general.architecture", Meta::str("llama"))
        .set("general.name", Meta::str("tiny-llama"))
        .set("general.alignment", Meta::U32(32))
        .set("llama.block_count", Meta::U32(spec.n_layers as u32))
        .set("llama.context_length", Meta::U32(spec.n_ctx))
        .set("llama.embedding_length", Meta::U32(d as u32))
        .set("llama.feed_forward_length", Meta::U32(m as u32))
        .set("llama.attention.head_count", Meta::U32(spec.n_heads as u32))
        .set("llama.attention.head_count_kv", Meta::U32(spec.n_kv_heads as u32))
        .set("llama.rope.freq_base", Meta::F32(10000.0))
        .set("llama.rope.dimension_count", Meta::U32(dh as u32))
        .set("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5))
        .set("llama.vocab_size", Meta::U32(VOCAB as u32))
        .set("tokenizer.ggml.model", Meta::str("gpt2"))
        .set("tokenizer.ggml.pre", Meta::str("gpt2"))
        .set("tokenizer.ggml.tokens", Meta::strs(&toks))
        .set("tokenizer.ggml.token_type", Meta::i32s(&types))
        .set("tokenizer.ggml.merges", Meta::strs(&MERGES))
        .set("tokenizer.ggml.bos_token_id", Meta::U32(ENDOFTEXT))
        .set("tokenizer.ggml.eos_token_id", Meta::U32(IM_END))
        .set("tokenizer.ggml.add_bos_token", Meta::Bool(false))
        .set("tokenizer.chat_template", Meta::str(CHAT_TEMPLATE));
    let mut rng = Rng::new(spec.seed);
    let mat = |name: &str, cols: u64, rows: u64, rng: &mut Rng| {
        let scale = 1.0 / (cols as f32).sqrt() * 1.7;
        TensorSpec::f32(name, &[cols, rows], &rng.vec((cols * rows) as usize, scale))
    };
    let norm = |name: &str, n: u64, rng: &mut Rng| {
        let w: Vec<f32> = (0..n).map(|_| 1.0 + rng.sym(0.2)).collect();
        TensorSpec::f32(name, &[n], &w)
    };
    let mut ts = vec![TensorSpec::f32("token_embd.weight", &[d, v], &rng.vec((d * v) as usize, 1.0))];
    for l in 0..spec.n_layers {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        ts.push(norm(&n("attn_norm"), d, &mut rng));
        ts.push(mat(&n("attn_q"), d, d, &mut rng));
        ts.push(mat(&n("attn_k"), d, kv, &mut rng));
        ts.push(mat(&n("attn_v"), d, kv, &mut rng));
        ts.push(mat(&n("attn_output"), d, d, &mut rng));
        ts.push(norm(&n("ffn_norm"), d, &mut rng));
        ts.push(mat(&n("ffn_gate"), d, m, &mut rng));
        ts.push(mat(&n("ffn_up"), d, m, &mut rng));
        ts.push(mat(&n("ffn_down"), m, d, &mut rng));
    }
    ts.push(norm("output_norm.weight", d, &mut rng));
    if !spec.tied {
        ts.push(mat("output.weight", d, v, &mut rng));
    }
    g.tensors = ts;
    g
}

pub fn load_gguf(bytes: &[u8]) -> scalpel_engine::Result<Model> {
    Model::load(GGUF_NAME, ModelSource::Gguf(bytes), Precision::F32)
}

pub fn tiny_model() -> Model {
    load_gguf(&tiny_llama(&LlamaSpec::default()).bytes()).expect("the tiny llama loads")
}

