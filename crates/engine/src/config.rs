//! Model hyperparameters: what the forward pass needs to know about an
//! architecture. `arch/` reads them from GGUF metadata or a Hugging Face
//! `config.json`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Llama,
    Gpt2,
    Qwen2,
    Qwen3,
    GptNeox,
    Gemma2,
    Gemma3,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Gpt2 => "gpt2",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::GptNeox => "gpt_neox",
            Arch::Gemma2 => "gemma2",
            Arch::Gemma3 => "gemma3",
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
    /// The features below are what the architectures after llama and GPT-2
    /// add; `Config::plain` has none of them.
    pub extra: Features,
}

/// What some architectures add to the pre-norm block. Each is plain data
/// the forward pass reads; none is on for llama or GPT-2.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Features {
    /// Attention and MLP both read the block input and are added to it
    /// together: `resid_post = resid_pre + attn(ln1(x)) + mlp(ln2(x))`
    /// (GPT-NeoX's `use_parallel_residual`). There is no `hook_resid_mid`.
    pub parallel_residual: bool,
    /// RoPE turns only the first `rotary_dim` dimensions of each head
    /// (GPT-NeoX's `rotary_pct`); `None`: all of them.
    pub rotary_dim: Option<usize>,
    /// An RMSNorm over each query and key head before RoPE (Qwen3, Gemma 3):
    /// `attn.q_norm` / `attn.k_norm`, weights `[d_head]`.
    pub qk_norm: bool,
    /// Norms of the attention and MLP outputs before they are added to the
    /// residual stream (Gemma 2 and 3: `ln1_post`, `ln2_post`);
    /// `hook_attn_out` and `hook_mlp_out` are after them.
    pub post_norms: bool,
    /// The embeddings are multiplied by this before the first block (Gemma:
    /// √d_model); the unembedding uses the stored, unscaled matrix.
    pub embed_scale: Option<f32>,
    /// Attention scores are `q·k` times this (default `1/√d_head`; Gemma:
    /// `query_pre_attn_scalar^-1/2`).
    pub attn_scale: Option<f32>,
    /// Attention scores become `cap · tanh(scores / cap)` before the mask (Gemma 2).
    pub attn_softcap: Option<f32>,
    /// Logits become `cap · tanh(logits / cap)` (Gemma 2).
    pub final_softcap: Option<f32>,
    /// Sliding-window attention: on the layers marked here, query i sees
    /// key j only when `i - j < window` (Gemma 2 and 3).
    pub sliding_window: Option<usize>,
    /// Per layer: whether it uses the sliding window (empty: none does).
    pub sliding_layers: Vec<bool>,
    /// The RoPE base of sliding layers, if it differs (Gemma 3's
    /// `rope_local_base_freq`).
    pub rope_local_theta: Option<f32>,
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
        if self.d_head == 0 || self.d_head > MAX_DIM {
            return bad(format!("d_head = {} is outside 1..={MAX_DIM}", self.d_head));
        }
        // Only architectures that say so (Qwen3, Gemma: `head_dim`) have
        // heads that do not tile d_model.
        let tiles = self.d_head.checked_mul(self.n_heads) == Some(self.d_model);
        if !tiles && !self.independent_head_dim() {
            return bad(format!(
                "d_model {} is not n_heads {} x d_head {}",
                self.d_model, self.n_heads, self.d_head
            ));
        }
        if self.n_heads.checked_mul(self.d_head).is_none_or(|w| w > MAX_DIM * 4) {
            return bad(format!("n_heads {} x d_head {} is too large", self.n_heads, self.d_head));
        }
        let rotary = self.rotary_dim();
        if self.pos_embedding == PosEmbedding::Rope && (rotary == 0 || !rotary.is_multiple_of(2) || rotary > self.d_head) {
            return bad(format!("RoPE needs an even number of rotated dimensions within the head size {}, got {rotary}", self.d_head));
        }
        let f = &self.extra;
        if !f.sliding_layers.is_empty() && f.sliding_layers.len() != self.n_layers {
            return bad(format!("{} layer types for {} layers", f.sliding_layers.len(), self.n_layers));
        }
        if f.sliding_layers.iter().any(|&s| s) && f.sliding_window.is_none_or(|w| w == 0) {
            return bad("sliding-window layers need a positive 'sliding_window'".into());
        }
        let positive = |v: Option<f32>| v.is_none_or(|x| x.is_finite() && x > 0.0);
        for (name, v) in [
            ("embedding scale", f.embed_scale),
            ("attention scale", f.attn_scale),
            ("attention soft-cap", f.attn_softcap),
            ("final logit soft-cap", f.final_softcap),
            ("local rope theta", f.rope_local_theta),
        ] {
            if !positive(v) {
                return bad(format!("{name} {v:?} is not a positive number"));
            }
        }
        if !(self.norm_eps > 0.0 && self.norm_eps < 1.0) {
            return bad(format!("norm epsilon {} is not in (0, 1)", self.norm_eps));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad(format!("rope theta {} is not a positive number", self.rope_theta));
        }
        Ok(())
    }
}

impl Config {
    /// Whether this architecture lets `head_dim` differ from `d_model / n_heads`.
    fn independent_head_dim(&self) -> bool {
        matches!(self.arch, Arch::Llama | Arch::Qwen3 | Arch::Gemma2 | Arch::Gemma3)
    }

    /// How many dimensions of each head RoPE turns.
    pub fn rotary_dim(&self) -> usize {
        self.extra.rotary_dim.unwrap_or(self.d_head)
    }

    /// Width of the concatenated heads (`n_heads · d_head`): the input of `W_O`.
    pub fn d_attn(&self) -> usize {
        self.n_heads * self.d_head
    }

    /// How many numbers the weights hold (embeddings, the unembedding when
    /// untied, every block's matrices, biases and norms, learned
    /// positions): what the memory estimate before a download is made
    /// from (`load::estimate`). Biases are counted whether or not the file
    /// has them.
    pub fn weight_count(&self) -> u64 {
        let (d, m, v) = (self.d_model as u64, self.d_mlp as u64, self.d_vocab as u64);
        let (q, kv) = (self.d_attn() as u64, (self.n_kv_heads * self.d_head) as u64);
        let attn = d * q + 2 * d * kv + q * d + q + 2 * kv + d;
        let mlp = if self.gated_mlp { 3 * d * m } else { 2 * d * m } + m + d;
        let norms = if self.extra.post_norms { 4 } else { 2 } * 2 * d + if self.extra.qk_norm { 2 * self.d_head as u64 } else { 0 };
        let embed = v * d * if self.tied_embeddings { 1 } else { 2 };
        let positions = self.position_count();
        embed + positions + self.n_layers as u64 * (attn + mlp + norms) + 2 * d
    }

    /// How many numbers learned position embeddings hold (0 with RoPE).
    pub fn position_count(&self) -> u64 {
        match self.pos_embedding {
            PosEmbedding::Learned => (self.n_ctx * self.d_model) as u64,
            PosEmbedding::Rope => 0,
        }
    }

    /// Whether layer `l` attends through the sliding window.
    pub fn is_sliding(&self, l: usize) -> bool {
        self.extra.sliding_layers.get(l).copied().unwrap_or(false)
    }
}

/// The size of a hook's value at one position: per-head hooks hold `heads`
/// blocks of `width` units; attention scores and patterns hold `heads` rows
/// over the keys (no fixed width); every other hook is `width` wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SiteShape {
    pub heads: Option<usize>,
    pub width: Option<usize>,
}

impl SiteShape {
    /// Units per position with the heads flattened (`None` for scores and patterns).
    pub fn flat(&self) -> Option<usize> {
        Some(self.heads.unwrap_or(1) * self.width?)
    }
}

impl Config {
    pub fn site_shape(&self, site: scalpel_types::Site) -> SiteShape {
        use scalpel_types::Site;
        let (heads, width) = match site {
            Site::Q | Site::RotQ | Site::Z => (Some(self.n_heads), Some(self.d_head)),
            Site::K | Site::V | Site::RotK => (Some(self.n_kv_heads), Some(self.d_head)),
            Site::QNorm => (Some(self.n_heads), Some(self.d_head)),
            Site::KNorm => (Some(self.n_kv_heads), Some(self.d_head)),
            Site::AttnScores | Site::Pattern => (Some(self.n_heads), None),
            Site::MlpPre | Site::MlpPreLinear | Site::MlpPost => (None, Some(self.d_mlp)),
            _ => (None, Some(self.d_model)),
        };
        SiteShape { heads, width }
    }
}

impl Config {
    /// Units per position of `site`'s value, heads flattened; an error for
    /// attention scores and patterns, which are per key.
    pub fn flat_width(&self, site: scalpel_types::Site) -> Result<usize> {
        self.site_shape(site).flat().ok_or_else(|| {
            Error::input(format!(
                "'{}' is an attention pattern (query × key): vectors and probes read per-position values (residual stream, MLP, attention output, q/k/v/z)",
                site.suffix()
            ))
        })
    }
}
