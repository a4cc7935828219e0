//! Tiny Hugging Face checkpoints (config.json + tokenizer.json +
//! model.safetensors): GPT-2 in its published layout and a SmolLM2-style
//! llama.

use scalpel_engine::{Model, ModelFiles, ModelSource, Precision};
use serde_json::json;

use crate::rng::{f32_bytes, Rng};
use crate::tiny::LlamaSpec;
use crate::vocab::{tokenizer_json, ENDOFTEXT, VOCAB};

pub const ST_NAME: &str = "model.safetensors";

#[derive(Clone, Debug)]
pub struct Gpt2Spec {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_inner: usize,
    pub n_positions: usize,
    /// Prefix tensor names with "transformer." (GPT2LMHeadModel checkpoints).
    pub prefix: bool,
    pub seed: u64,
}

impl Default for Gpt2Spec {
    fn default() -> Self {
        Gpt2Spec { n_layer: 2, n_embd: 32, n_head: 4, n_inner: 64, n_positions: 32, prefix: false, seed: 3 }
    }
}

/// A tensor for the safetensors writer: name, shape, dtype, little-endian bytes.
#[derive(Clone, Debug)]
pub struct StTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: safetensors::Dtype,
    pub data: Vec<u8>,
}

pub fn gpt2_config(spec: &Gpt2Spec) -> serde_json::Value {
    json!({
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "n_layer": spec.n_layer,
        "n_embd": spec.n_embd,
        "n_head": spec.n_head,
        "n_inner": spec.n_inner,
        "n_positions": spec.n_positions,
        "n_ctx": spec.n_positions,
        "vocab_size": VOCAB,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "bos_token_id": ENDOFTEXT,
        "eos_token_id": ENDOFTEXT,
    })
}

/// GPT-2 tensors in the published layout (Conv1D weights are `[in, out]`).
pub fn gpt2_tensors(spec: &Gpt2Spec) -> Vec<StTensor> {
    let mut rng = Rng::new(spec.seed);
    let (d, m, v, p) = (spec.n_embd, spec.n_inner, VOCAB, spec.n_positions);
    let pre = if spec.prefix { "transformer." } else { "" };
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, data: Vec<f32>| {
        assert_eq!(shape.iter().product::<usize>(), data.len());
        out.push(StTensor { name, shape, dtype: safetensors::Dtype::F32, data: f32_bytes(&data) });
    };
    push(format!("{pre}wte.weight"), vec![v, d], rng.vec(v * d, 0.5));
    push(format!("{pre}wpe.weight"), vec![p, d], rng.vec(p * d, 0.1));
    for l in 0..spec.n_layer {
        let h = format!("{pre}h.{l}");
        let ones = |rng: &mut Rng, n: usize| (0..n).map(|_| 1.0 + rng.sym(0.2)).collect::<Vec<_>>();
        push(format!("{h}.ln_1.weight"), vec![d], ones(&mut rng, d));
        push(format!("{h}.ln_1.bias"), vec![d], rng.vec(d, 0.1));
        push(format!("{h}.attn.c_attn.weight"), vec![d, 3 * d], rng.vec(d * 3 * d, 0.3));
        push(format!("{h}.attn.c_attn.bias"), vec![3 * d], rng.vec(3 * d, 0.1));
        push(format!("{h}.attn.c_proj.weight"), vec![d, d], rng.vec(d * d, 0.3));
        push(format!("{h}.attn.c_proj.bias"), vec![d], rng.vec(d, 0.1));
        push(format!("{h}.ln_2.weight"), vec![d], ones(&mut rng, d));
        push(format!("{h}.ln_2.bias"), vec![d], rng.vec(d, 0.1));
        push(format!("{h}.mlp.c_fc.weight"), vec![d, m], rng.vec(d * m, 0.3));
        push(format!("{h}.mlp.c_fc.bias"), vec![m], rng.vec(m, 0.1));
        push(format!("{h}.mlp.c_proj.weight"), vec![m, d], rng.vec(m * d, 0.2));
        push(format!("{h}.mlp.c_proj.bias"), vec![d], rng.vec(d, 0.1));
    }
    let ones: Vec<f32> = (0..d).map(|_| 1.0 + rng.sym(0.2)).collect();
    push(format!("{pre}ln_f.weight"), vec![d], ones);
    push(format!("{pre}ln_f.bias"), vec![d], rng.vec(d, 0.1));
    out
}

/// Serializes with the `safetensors` crate (header padded as upstream does).
pub fn safetensors_bytes(tensors: &[StTensor]) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|t| {
            (t.name.clone(), safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap())
        })
        .collect();
    safetensors::tensor::serialize(views, None).unwrap()
}

pub struct HfFiles {
    pub config: Vec<u8>,
    pub tokenizer: Option<Vec<u8>>,
    pub tokenizer_config: Option<Vec<u8>>,
    pub weights: Vec<(String, Vec<u8>)>,
}

impl HfFiles {
    pub fn gpt2(spec: &Gpt2Spec) -> Self {
        HfFiles {
            config: serde_json::to_vec(&gpt2_config(spec)).unwrap(),
            tokenizer: Some(tokenizer_json()),
            tokenizer_config: Some(
                serde_json::to_vec(&json!({"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"})).unwrap(),
            ),
            weights: vec![(ST_NAME.to_owned(), safetensors_bytes(&gpt2_tensors(spec)))],
        }
    }
    /// The files, owned (e.g. to write them to a folder).
    pub fn files(self) -> ModelFiles<Vec<u8>> {
        ModelFiles::HuggingFace {
            config: self.config,
            tokenizer: self.tokenizer,
            tokenizer_config: self.tokenizer_config,
            weights: self.weights,
        }
    }
    pub fn source(&self) -> ModelSource<'_> {
        ModelSource::HuggingFace {
            config: &self.config,
            tokenizer: self.tokenizer.as_deref(),
            tokenizer_config: self.tokenizer_config.as_deref(),
            weights: self.weights.iter().map(|(n, w)| (n.clone(), w.as_slice())).collect(),
        }
    }
    pub fn load(&self) -> scalpel_engine::Result<Model> {
        Model::load("tiny-gpt2", self.source(), Precision::F32)
    }
}

/// Llama-family Hugging Face checkpoint (SmolLM2 layout), for config tests.
pub fn llama_hf_config(spec: &LlamaSpec) -> serde_json::Value {
    json!({
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": spec.d_model,
        "intermediate_size": spec.d_mlp,
        "num_hidden_layers": spec.n_layers,
        "num_attention_heads": spec.n_heads,
        "num_key_value_heads": spec.n_kv_heads,
        "max_position_embeddings": spec.n_ctx,
        "vocab_size": VOCAB,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": spec.tied,
    })
}

pub fn llama_hf_tensors(spec: &LlamaSpec) -> Vec<StTensor> {
    let mut rng = Rng::new(spec.seed);
    let (d, m, v) = (spec.d_model, spec.d_mlp, VOCAB);
    let kv = d / spec.n_heads * spec.n_kv_heads;
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, data: Vec<f32>| {
        out.push(StTensor { name, shape, dtype: safetensors::Dtype::F32, data: f32_bytes(&data) });
    };
    push("model.embed_tokens.weight".into(), vec![v, d], rng.vec(v * d, 1.0));
    for l in 0..spec.n_layers {
        let p = format!("model.layers.{l}");
        push(format!("{p}.input_layernorm.weight"), vec![d], rng.vec(d, 0.2).iter().map(|x| 1.0 + x).collect());
        push(format!("{p}.self_attn.q_proj.weight"), vec![d, d], rng.vec(d * d, 0.2));
        push(format!("{p}.self_attn.k_proj.weight"), vec![kv, d], rng.vec(kv * d, 0.2));
        push(format!("{p}.self_attn.v_proj.weight"), vec![kv, d], rng.vec(kv * d, 0.2));
        push(format!("{p}.self_attn.o_proj.weight"), vec![d, d], rng.vec(d * d, 0.2));
        push(format!("{p}.post_attention_layernorm.weight"), vec![d], rng.vec(d, 0.2).iter().map(|x| 1.0 + x).collect());
        push(format!("{p}.mlp.gate_proj.weight"), vec![m, d], rng.vec(m * d, 0.2));
        push(format!("{p}.mlp.up_proj.weight"), vec![m, d], rng.vec(m * d, 0.2));
        push(format!("{p}.mlp.down_proj.weight"), vec![d, m], rng.vec(d * m, 0.15));
    }
    push("model.norm.weight".into(), vec![d], rng.vec(d, 0.2).iter().map(|x| 1.0 + x).collect());
    if !spec.tied {
        push("lm_head.weight".into(), vec![v, d], rng.vec(v * d, 0.3));
    }
    out
}

impl HfFiles {
    pub fn llama(spec: &LlamaSpec) -> Self {
        HfFiles {
            config: serde_json::to_vec(&llama_hf_config(spec)).unwrap(),
            tokenizer: Some(tokenizer_json()),
            tokenizer_config: None,
            weights: vec![(ST_NAME.to_owned(), safetensors_bytes(&llama_hf_tensors(spec)))],
        }
    }
}

pub fn tiny_gpt2() -> Model {
    HfFiles::gpt2(&Gpt2Spec::default()).load().expect("the tiny gpt2 loads")
}

