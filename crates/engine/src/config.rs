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
