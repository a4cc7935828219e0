//! The working memory of a forward pass, estimated from its shape before it
//! runs. In the browser a failed allocation aborts the worker instead of
//! returning an error, so a pass that would not fit the activation budget
//! is refused with the estimate, the limit and the longest prompt that fits.
//!
//! The estimate counts what the pass holds at its peak: per layer the
//! attention scores, masked scores and pattern (`[batch, heads, t, kv]`
//! each), the mask, the per-token activations of one block, the keys and
//! values a cache keeps (old and new while a pass extends it), the
//! attention values hooks may keep, and the logits rows with their copy out
//! of the tensor.

use super::{Logits, Model};
use crate::error::{Error, Result};
use crate::hooks::{Hook, HookPoint, Site};

/// The shape of one forward pass, as far as memory goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassSize {
    /// Sequences run at once.
    pub batch: usize,
    /// Positions already in the KV cache.
    pub start: usize,
    /// New positions.
    pub t: usize,
    /// Which logits rows it computes.
    pub logits: Logits,
    /// Whether the pass writes a KV cache.
    pub cache: bool,
    /// Layers whose attention scores or pattern a hook sees (and may keep).
    pub attention_hooked: usize,
}

impl PassSize {
    /// One sequence of `t` tokens from position 0.
    pub fn prompt(t: usize, logits: Logits, cache: bool) -> Self {
        PassSize { batch: 1, start: 0, t, logits, cache, attention_hooked: 0 }
    }
}

impl Logits {
    /// Logits rows per sequence of a pass over `t` new positions.
    pub fn rows(self, t: usize) -> usize {
        match self {
            Logits::All => t,
            Logits::Last => 1,
            Logits::From(p) => t.saturating_sub(p),
        }
    }
}

const F32: u64 = 4;

impl Model {
    /// Most bytes a single forward pass may need (None: no limit, the
    /// default; the browser's worker sets one).
    pub fn set_activation_budget(&mut self, bytes: Option<u64>) {
        self.activation_budget = bytes;
    }

    pub fn activation_budget(&self) -> Option<u64> {
        self.activation_budget
    }

    /// Estimated peak bytes of a pass of shape `s` (see the module comment).
    pub fn pass_bytes(&self, s: PassSize) -> u64 {
        let c = &self.config;
        let (b, t, kv) = (s.batch as u64, s.t as u64, (s.start + s.t) as u64);
        let (h, nkv, dh, d, dm) = (c.n_heads as u64, c.n_kv_heads as u64, c.d_head as u64, c.d_model as u64, c.d_mlp as u64);
        let square = b * h * t * kv * F32;
        // Scores, masked scores and the pattern; the u8 mask when t > 1.
        let attention = 3 * square + if t > 1 { t * kv } else { 0 };
        // One block's per-token values: residual, norm output, attention
        // and MLP outputs, q/k/v and their rotated and repeated copies, z,
        // and the MLP's gate, up and product.
        let per_token = 4 * d + 3 * (h + 2 * nkv) * dh + h * dh + 3 * dm;
        let block = b * t * per_token * F32;
        // Keys and values of every layer (repeated to all heads while a
        // layer runs), twice while a pass extends the cache.
        let kv_cache = if s.cache { 2 * c.n_layers as u64 * 2 * b * nkv * kv * dh * F32 } else { 0 };
        let repeated = 2 * b * h * kv * dh * F32;
        let kept = s.attention_hooked as u64 * 2 * square;
        let logits = 2 * b * s.logits.rows(s.t) as u64 * c.d_vocab as u64 * F32;
        attention + block + kv_cache + repeated + kept + logits
    }

    /// Err when a pass of shape `s` would exceed the activation budget: the
    /// message gives the estimate, the limit and the longest prompt that fits.
    pub fn check_pass(&self, s: PassSize) -> Result<()> {
        let Some(limit) = self.activation_budget else { return Ok(()) };
        let need = self.pass_bytes(s);
        if need <= limit {
            return Ok(());
        }
        let mb = |b: u64| format!("{:.0} MB", b as f64 / 1e6);
        let seqs = if s.batch > 1 { format!(" × {} sequences", s.batch) } else { String::new() };
        let fit = self.max_tokens(s.logits, s.cache);
        Err(Error::input(format!(
            "a forward pass over {} tokens{seqs} needs about {} of working memory, more than the {} this build allows; at most {fit} tokens fit (prompt and generated tokens together): shorten the prompt",
            s.start + s.t,
            mb(need),
            mb(limit)
        )))
    }

    /// The longest single sequence (from position 0, computing `logits`,
    /// with a cache if `cache`) whose pass fits the budget, at most the
    /// context length.
    pub fn max_tokens(&self, logits: Logits, cache: bool) -> usize {
        let n_ctx = self.config.n_ctx;
        let Some(limit) = self.activation_budget else { return n_ctx };
        let fits = |t: usize| self.pass_bytes(PassSize::prompt(t, logits, cache)) <= limit;
        if fits(n_ctx) {
            return n_ctx;
        }
        // pass_bytes grows with t: the last t that fits.
        let (mut lo, mut hi) = (0, n_ctx);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The shape of a pass `forward` is about to run.
    pub(super) fn pass_size(&self, batch: usize, start: usize, t: usize, logits: Logits, cache: bool, hooks: Option<&(dyn Hook + '_)>) -> PassSize {
        let attention_hooked = match hooks {
            None => 0,
            Some(h) => (0..self.config.n_layers)
                .filter(|&l| h.wants(HookPoint::block(l, Site::AttnScores)) || h.wants(HookPoint::block(l, Site::Pattern)))
                .count(),
        };
        PassSize { batch, start, t, logits, cache, attention_hooked }
    }
}
