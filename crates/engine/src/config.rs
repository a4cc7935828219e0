//! Model hyperparameters, read from GGUF metadata or a Hugging Face config.json.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gguf::Gguf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Llama,
    Gpt2,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Gpt2 => "gpt2",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PosEmbedding {
    Rope,
    Learned,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    Rms,
    Layer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Silu,
    /// GPT-2's `gelu_new` (tanh approximation).
    GeluTanh,
    /// Exact erf GELU.
    Gelu,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub arch: Arch,
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_head: usize,
    pub d_mlp: usize,
    pub d_vocab: usize,
    pub n_ctx: usize,
    pub norm: NormKind,
    pub norm_eps: f64,
    pub pos_embedding: PosEmbedding,
    pub rope_theta: f32,
    pub gated_mlp: bool,
    pub act: Activation,
    pub tied_embeddings: bool,
}

/// Limits that keep a hostile header from sizing a huge allocation.
const MAX_DIM: usize = 1 << 16;
const MAX_LAYERS: usize = 512;
const MAX_VOCAB: usize = 1 << 22;
const MAX_CTX: usize = 1 << 22;

impl Config {
    /// Checks internal consistency; `file` names the source in messages.
    pub fn validate(&self, file: &str) -> Result<()> {
        let bad = |m: String| Err(Error::load(file, m));
        let checks: [(&str, usize, usize); 6] = [
            ("n_layers", self.n_layers, MAX_LAYERS),
            ("d_model", self.d_model, MAX_DIM),
            ("n_heads", self.n_heads, MAX_DIM),
            ("d_mlp", self.d_mlp, MAX_DIM * 4),
            ("vocab size", self.d_vocab, MAX_VOCAB),
            ("context length", self.n_ctx, MAX_CTX),
        ];
        for (name, v, max) in checks {
            if v == 0 || v > max {
                return bad(format!("{name} = {v} is outside 1..={max}"));
            }
        }
        if self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "{} query heads cannot be grouped over {} key/value heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        if self.d_head == 0 || self.d_head > MAX_DIM || self.d_head.checked_mul(self.n_heads) != Some(self.d_model) {
            return bad(format!(
                "d_model {} is not n_heads {} x d_head {}",
                self.d_model, self.n_heads, self.d_head
            ));
        }
        if self.pos_embedding == PosEmbedding::Rope && !self.d_head.is_multiple_of(2) {
            return bad(format!("RoPE needs an even head size, got {}", self.d_head));
        }
        if !(self.norm_eps > 0.0 && self.norm_eps < 1.0) {
            return bad(format!("norm epsilon {} is not in (0, 1)", self.norm_eps));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad(format!("rope theta {} is not a positive number", self.rope_theta));
        }
        Ok(())
    }

    pub fn from_gguf(g: &Gguf) -> Result<Config> {
        let arch = g
            .require("general.architecture")?
            .as_str()
            .ok_or_else(|| Error::load(&g.file, "general.architecture is not a string"))?
            .to_owned();
        // The llama family layout; Mistral-style GGUFs use the same tensors.
        if !matches!(arch.as_str(), "llama" | "mistral") {
            return Err(Error::load(
                &g.file,
                format!("architecture '{arch}' is not supported (GGUF: llama family; safetensors: llama, gpt2)"),
            ));
        }
        let key = |k: &str| format!("{arch}.{k}");
        let u = |k: &str| -> Result<usize> { Ok(g.require_u64(&key(k))? as usize) };
        let f = |k: &str| -> Option<f64> { g.get(&key(k)).and_then(|v| v.as_f64()) };
        let n_heads = u("attention.head_count")?;
        let d_model = u("embedding_length")?;
        let n_kv_heads = match g.get(&key("attention.head_count_kv")) {
            Some(v) => v.as_u64().ok_or_else(|| {
                Error::load(&g.file, format!("{} is not an integer", key("attention.head_count_kv")))
            })? as usize,
            None => n_heads,
        };
        let d_head = d_model.checked_div(n_heads).unwrap_or(0);
        let d_vocab = match g.get(&key("vocab_size")).and_then(|v| v.as_u64()) {
            Some(v) => v as usize,
            None => g
                .info("token_embd.weight")
                .map(|t| t.shape[0])
                .ok_or_else(|| Error::load(&g.file, "missing tensor 'token_embd.weight'"))?,
        };
        let cfg = Config {
            arch: Arch::Llama,
            n_layers: u("block_count")?,
            d_model,
            n_heads,
            n_kv_heads,
            d_head,
            d_mlp: u("feed_forward_length")?,
            d_vocab,
            n_ctx: u("context_length")?,
            norm: NormKind::Rms,
            norm_eps: f("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            pos_embedding: PosEmbedding::Rope,
            rope_theta: f("rope.freq_base").unwrap_or(10000.0) as f32,
            gated_mlp: true,
            act: Activation::Silu,
            tied_embeddings: g.info("output.weight").is_none(),
        };
        cfg.validate(&g.file)?;
        if let Some(rope_dim) = g.get(&key("rope.dimension_count")).and_then(|v| v.as_u64()) {
            if rope_dim != cfg.d_head as u64 {
                return Err(Error::load(
                    &g.file,
                    format!("rope dimension {rope_dim} differs from the head dimension {}; partial rotary embeddings are not supported", cfg.d_head),
                ));
            }
        }
        Ok(cfg)
    }

    /// From a Hugging Face `config.json` (gpt2 or llama families).
    pub fn from_hf_json(file: &str, json: &[u8]) -> Result<Config> {
        let v: serde_json::Value = serde_json::from_slice(json)
            .map_err(|e| Error::load(file, format!("not valid JSON: {e}")))?;
        let model_type = v.get("model_type").and_then(|m| m.as_str()).unwrap_or("");
        let get = |k: &str| -> Result<usize> {
            v.get(k)
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .ok_or_else(|| Error::load(file, format!("missing or non-integer field '{k}'")))
        };
        let getf = |k: &str| v.get(k).and_then(|x| x.as_f64());
        let cfg = match model_type {
            "gpt2" => {
                let d_model = get("n_embd")?;
                let n_heads = get("n_head")?;
                let act = match v.get("activation_function").and_then(|a| a.as_str()).unwrap_or("gelu_new") {
                    "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
                    "gelu" => Activation::Gelu,
                    other => {
                        return Err(Error::load(file, format!("activation_function '{other}' is not supported")))
                    }
                };
                Config {
                    arch: Arch::Gpt2,
                    n_layers: get("n_layer")?,
                    d_model,
                    n_heads,
                    n_kv_heads: n_heads,
                    d_head: d_model.checked_div(n_heads).unwrap_or(0),
                    d_mlp: v.get("n_inner").and_then(|x| x.as_u64()).map(|x| x as usize).unwrap_or(d_model.saturating_mul(4)),
                    d_vocab: get("vocab_size")?,
                    n_ctx: get("n_positions").or_else(|_| get("n_ctx"))?,
                    norm: NormKind::Layer,
                    norm_eps: getf("layer_norm_epsilon").unwrap_or(1e-5),
                    pos_embedding: PosEmbedding::Learned,
                    rope_theta: 10000.0,
                    gated_mlp: false,
                    act,
                    tied_embeddings: true,
                }
            }
            "llama" | "mistral" => {
                let d_model = get("hidden_size")?;
                let n_heads = get("num_attention_heads")?;
                let d_head = v
                    .get("head_dim")
                    .and_then(|x| x.as_u64())
                    .map(|x| x as usize)
                    .unwrap_or(d_model.checked_div(n_heads).unwrap_or(0));
                if v.get("rope_scaling").is_some_and(|r| !r.is_null()) {
                    return Err(Error::load(file, "rope_scaling is not supported yet"));
                }
                let act = v.get("hidden_act").and_then(|a| a.as_str()).unwrap_or("silu");
                if act != "silu" {
                    return Err(Error::load(file, format!("hidden_act '{act}' is not supported (llama: silu)")));
                }
                Config {
                    arch: Arch::Llama,
                    n_layers: get("num_hidden_layers")?,
                    d_model,
                    n_heads,
                    n_kv_heads: v
                        .get("num_key_value_heads")
                        .and_then(|x| x.as_u64())
                        .map(|x| x as usize)
                        .unwrap_or(n_heads),
                    d_head,
                    d_mlp: get("intermediate_size")?,
                    d_vocab: get("vocab_size")?,
                    n_ctx: get("max_position_embeddings")?,
                    norm: NormKind::Rms,
                    norm_eps: getf("rms_norm_eps").unwrap_or(1e-6),
                    pos_embedding: PosEmbedding::Rope,
                    rope_theta: getf("rope_theta").unwrap_or(10000.0) as f32,
                    gated_mlp: true,
                    act: Activation::Silu,
                    tied_embeddings: v.get("tie_word_embeddings").and_then(|x| x.as_bool()).unwrap_or(false),
                }
            }
            "" => return Err(Error::load(file, "missing field 'model_type'")),
            other => {
                return Err(Error::load(
                    file,
                    format!("model_type '{other}' is not supported (supported: gpt2, llama, mistral)"),
                ))
            }
        };
        cfg.validate(file)?;
        Ok(cfg)
    }
}
