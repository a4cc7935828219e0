//! The forward pass: embeddings, then each block (attention, then MLP, each
//! adding to the residual stream), the final norm and the unembedding, with
//! a hook at every TransformerLens hook point.

use candle_core::{DType, Device, Tensor};

use super::{KvCache, Logits, Model};
use crate::config::PosEmbedding;
use crate::error::{Error, Result};
use crate::hooks::{Hook, HookCtx, HookPoint, Site};

/// What one forward pass carries from block to block: the hooks, where the
/// new positions start, the rotary tables and causal mask for them, and the
/// keys and values to write to the cache once the pass succeeds.
pub(super) struct Pass<'a, 'h> {
    hooks: Option<&'a mut (dyn Hook + 'h)>,
    pub start: usize,
    pub t: usize,
    pub batch: usize,
    pub rope: Option<(Tensor, Tensor)>,
    /// Rotary tables of sliding-window layers, when their base differs (Gemma 3).
    pub rope_local: Option<(Tensor, Tensor)>,
    /// `[t, start + t]`, 1 where key j is in the future of query i (t > 1 only).
    pub mask: Option<Tensor>,
    /// As `mask`, also 1 where key j is `window` or more positions before
    /// query i, for sliding-window layers (`None`: no key is that far back).
    pub mask_sliding: Option<Tensor>,
    pub differentiable: bool,
    /// Head-dimension gathers from stored to Hugging Face order and back,
    /// for query and key values of a model whose rows are not stored in
    /// Hugging Face order.
    qk_perm: Option<(Tensor, Tensor)>,
    pub new_kv: Vec<(usize, Tensor, Tensor)>,
}

impl Pass<'_, '_> {
    /// Applies the hook at `point` (if any hook wants it) and checks what it returns.
    pub fn hook(&mut self, point: HookPoint, x: Tensor) -> Result<Tensor> {
        let Some(h) = self.hooks.as_deref_mut() else { return Ok(x) };
        if !h.wants(point) {
            return Ok(x);
        }
        let ctx = HookCtx { point, start_pos: self.start, seq_len: self.t };
        match h.call(&ctx, &x)? {
            None => Ok(x),
            Some(new) if new.shape() != x.shape() || new.dtype() != DType::F32 => Err(Error::input(format!(
                "hook at '{}' returned a {:?} {:?} tensor; it must keep shape {:?} and dtype f32",
                point.name(),
                new.dtype(),
                new.dims(),
                x.dims()
            ))),
            Some(new) => Ok(new),
        }
    }

    pub fn wants(&self, point: HookPoint) -> bool {
        self.hooks.as_deref().is_some_and(|h| h.wants(point))
    }

    /// Hooks a per-head value. Hooks always see `[b, t, head, d_head]` in
    /// Hugging Face head-dimension order; `x` may be head-major
    /// (`[b, head, t, d_head]`) and, for queries and keys (`qk`), in the
    /// model's stored order.
    pub fn hook_heads(&mut self, point: HookPoint, x: Tensor, head_major: bool, qk: bool) -> Result<Tensor> {
        if !self.wants(point) {
            return Ok(x);
        }
        let perm = if qk { self.qk_perm.clone() } else { None };
        let mut shown = if head_major { x.transpose(1, 2)?.contiguous()? } else { x.clone() };
        if let Some((to_hf, _)) = &perm {
            shown = shown.index_select(to_hf, 3)?;
        }
        let id = shown.id();
        let mut after = self.hook(point, shown)?;
        if after.id() == id {
            return Ok(x);
        }
        if let Some((_, to_stored)) = &perm {
            after = after.index_select(to_stored, 3)?;
        }
        Ok(if head_major { after.transpose(1, 2)?.contiguous()? } else { after })
    }
}

impl Model {
    /// Runs the model on `tokens` (`[batch, t]` u32), continuing from `cache`
    /// if given (and extending it). Returns logits `[batch, t | 1, vocab]`.
    pub fn forward(
        &self,
        tokens: &Tensor,
        cache: Option<&mut KvCache>,
        hooks: Option<&mut (dyn Hook + '_)>,
        logits: Logits,
    ) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let start = cache.as_ref().map(|c| c.len).unwrap_or(0);
        self.check_span(start, t)?;
        self.check_resume(0, start, cache.as_deref())?;
        self.check_logits(t, logits)?;
        self.check_pass(self.pass_size(b, start, t, logits, cache.is_some(), hooks.as_deref()))?;
        let mut pass = self.pass(hooks, b, start, t)?;
        let x = self.embedded(tokens, &mut pass)?;
        self.run_blocks(0, x, pass, cache, logits)
    }

    /// Runs only blocks `0..layers` on `tokens` (`[batch, t]`, no cache)
    /// and returns the residual stream after them (`[batch, t, d_model]`;
    /// the embeddings for `layers = 0`). Hooks on those blocks run as in
    /// `forward`, so their values are the same: a dictionary over an early
    /// hook reads a corpus without paying for the rest of the model.
    pub fn forward_blocks(&self, tokens: &Tensor, layers: usize, hooks: Option<&mut (dyn Hook + '_)>) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        if layers > self.config.n_layers {
            return Err(Error::input(format!("forward_blocks: {layers} blocks asked for; the model has {}", self.config.n_layers)));
        }
        self.check_span(0, t)?;
        self.check_pass(self.pass_size(b, 0, t, Logits::Last, false, hooks.as_deref()))?;
        let mut pass = self.pass(hooks, b, 0, t)?;
        let mut x = self.embedded(tokens, &mut pass)?;
        for (l, blk) in self.blocks.iter().enumerate().take(layers) {
            x = self.block(l, blk, x, &mut pass, None)?;
        }
        Ok(x)
    }

    /// The token (and learned position) embeddings of a pass, hooked.
    fn embedded(&self, tokens: &Tensor, pass: &mut Pass) -> Result<Tensor> {
        let d = self.config.d_model;
        let (b, t, start) = (pass.batch, pass.t, pass.start);
        let ids: Vec<u32> = tokens.flatten_all()?.to_vec1()?;
        let mut x = self.embedding_rows(&ids)?.reshape((b, t, d))?;
        if let Some(scale) = self.config.extra.embed_scale {
            x = (x * scale as f64)?;
        }
        x = pass.hook(HookPoint::global(Site::Embed), x)?;
        if let Some(wpe) = &self.pos_embed {
            let pos = wpe.narrow(0, start, t)?.unsqueeze(0)?.broadcast_as((b, t, d))?.contiguous()?;
            x = (x + pass.hook(HookPoint::global(Site::PosEmbed), pos)?)?;
        }
        Ok(x)
    }

    /// Runs blocks `layer..` on `resid` (the `blocks.{layer}.hook_resid_pre`
    /// value, `[batch, t, d_model]`, for absolute positions `start..start+t`),
    /// then the final norm and unembedding. If `start > 0`, `cache` must hold
    /// keys and values for positions `0..start` of layers `layer..` (a
    /// prefix shared by the batch, or one per batch item). Patching sweeps use
    /// this to reuse everything a patch cannot change.
    pub fn forward_from(
        &self,
        layer: usize,
        resid: Tensor,
        start: usize,
        cache: Option<&mut KvCache>,
        hooks: Option<&mut (dyn Hook + '_)>,
        logits: Logits,
    ) -> Result<Tensor> {
        let (b, t, _) = resid.dims3()?;
        self.check_span(start, t)?;
        self.check_resume(layer, start, cache.as_deref())?;
        self.check_logits(t, logits)?;
        self.check_pass(self.pass_size(b, start, t, logits, cache.is_some(), hooks.as_deref()))?;
        let pass = self.pass(hooks, b, start, t)?;
        self.run_blocks(layer, resid, pass, cache, logits)
    }

    /// Blocks `layer..`, the final norm and the unembedding; the cache takes
    /// the pass's keys and values only once it all succeeded, so a failed or
    /// cancelled pass leaves it as it was.
    fn run_blocks(&self, layer: usize, mut x: Tensor, mut pass: Pass, cache: Option<&mut KvCache>, logits: Logits) -> Result<Tensor> {
        let t = pass.t;
        for (l, blk) in self.blocks.iter().enumerate().skip(layer) {
            x = self.block(l, blk, x, &mut pass, cache.as_deref())?;
        }
        let x = self.ln_final.forward(&x, pass.differentiable)?;
        let x = pass.hook(HookPoint::global(Site::LnFinalNormalized), x)?;
        let x = match logits {
            Logits::All => x,
            Logits::Last => x.narrow(1, t - 1, 1)?,
            Logits::From(p) => x.narrow(1, p, t - p)?,
        };
        let out = self.unembed(&x)?;
        if let Some(c) = cache {
            for (l, k, v) in pass.new_kv {
                c.layers[l] = Some((k, v));
            }
            c.len = pass.start + t;
        }
        Ok(out)
    }

    /// One block: `resid_mid = resid_pre + attn(ln1(resid_pre))`,
    /// `resid_post = resid_mid + mlp(ln2(resid_mid))`; with post-norms
    /// (Gemma) each output is normalised before it is added; with a parallel
    /// residual (GPT-NeoX) both read `resid_pre`:
    /// `resid_post = resid_pre + attn(ln1(resid_pre)) + mlp(ln2(resid_pre))`.
    fn block(&self, l: usize, blk: &super::Block, x: Tensor, pass: &mut Pass, cache: Option<&KvCache>) -> Result<Tensor> {
        let p = |site| HookPoint::block(l, site);
        let diff = pass.differentiable;
        let resid = pass.hook(p(Site::ResidPre), x)?;
        let xn = pass.hook(p(Site::Ln1Normalized), blk.ln1.forward(&resid, diff)?)?;
        let mut attn_out = self.attention(l, &blk.attn, xn, pass, cache)?;
        if let Some(n) = &blk.ln1_post {
            attn_out = pass.hook(p(Site::Ln1Post), n.forward(&attn_out, diff)?)?;
        }
        let attn_out = pass.hook(p(Site::AttnOut), attn_out)?;
        let (mlp_in, resid) = if self.config.extra.parallel_residual {
            (resid.clone(), (resid, Some(attn_out)))
        } else {
            let mid = pass.hook(p(Site::ResidMid), (resid + attn_out)?)?;
            (mid.clone(), (mid, None))
        };
        let xn = pass.hook(p(Site::Ln2Normalized), blk.ln2.forward(&mlp_in, diff)?)?;
        let mut mlp_out = self.mlp(l, &blk.mlp, xn, pass)?;
        if let Some(n) = &blk.ln2_post {
            mlp_out = pass.hook(p(Site::Ln2Post), n.forward(&mlp_out, diff)?)?;
        }
        let mlp_out = pass.hook(p(Site::MlpOut), mlp_out)?;
        let post = match resid {
            (resid, Some(attn_out)) => ((resid + attn_out)? + mlp_out)?,
            (resid, None) => (resid + mlp_out)?,
        };
        pass.hook(p(Site::ResidPost), post)
    }

    fn pass<'a, 'h>(&self, hooks: Option<&'a mut (dyn Hook + 'h)>, batch: usize, start: usize, t: usize) -> Result<Pass<'a, 'h>> {
        let rope = match self.config.pos_embedding {
            PosEmbedding::Rope => Some(super::rotary::tables(&self.inv_freq, start, t)?),
            PosEmbedding::Learned => None,
        };
        let rope_local = match &self.inv_freq_local {
            Some(f) => Some(super::rotary::tables(f, start, t)?),
            None => None,
        };
        // Masked keys: key j > query i in absolute positions (the future)
        // and, on sliding-window layers, j <= i - window (too far back).
        let kv_len = start + t;
        let mask_where = |hidden: &dyn Fn(usize, usize) -> bool| -> Result<Tensor> {
            let m: Vec<u8> = (0..t).flat_map(|i| (0..kv_len).map(move |j| (i, j))).map(|(i, j)| u8::from(hidden(start + i, j))).collect();
            Ok(Tensor::from_vec(m, (t, kv_len), &Device::Cpu)?)
        };
        let mask = if t > 1 { Some(mask_where(&|i, j| j > i)?) } else { None };
        let window = self.config.extra.sliding_window.filter(|_| self.config.extra.sliding_layers.iter().any(|&s| s));
        let mask_sliding = match window {
            Some(w) if kv_len > w => Some(mask_where(&|i, j| j > i || i - j >= w)?),
            _ => None,
        };
        let qk_perm = self.qk_perm.clone();
        Ok(Pass {
            hooks,
            start,
            t,
            batch,
            rope,
            rope_local,
            mask,
            mask_sliding,
            differentiable: self.differentiable,
            qk_perm,
            new_kv: Vec::new(),
        })
    }

    pub(super) fn check_span(&self, start: usize, t: usize) -> Result<()> {
        if t == 0 {
            return Err(Error::input("empty prompt: there are no tokens to run"));
        }
        // `start` may come from a caller's bad arguments: no overflow.
        if start.checked_add(t).is_none_or(|end| end > self.config.n_ctx) {
            return Err(Error::input(format!(
                "{} tokens ({t} new + {start} cached) exceed the model's context length of {}",
                start as u128 + t as u128,
                self.config.n_ctx
            )));
        }
        Ok(())
    }

    fn check_logits(&self, t: usize, logits: Logits) -> Result<()> {
        match logits {
            Logits::From(p) if p >= t => Err(Error::input(format!("logits from position {p} asked of a pass over {t} positions"))),
            _ => Ok(()),
        }
    }

    /// Whether blocks `layer..` can run from absolute position `start` with `cache`.
    fn check_resume(&self, layer: usize, start: usize, cache: Option<&KvCache>) -> Result<()> {
        let n = self.config.n_layers;
        if layer > n {
            return Err(Error::input(format!("layer {layer} is out of range (the model has {n} layers)")));
        }
        match cache {
            Some(c) if c.layers.len() != n => Err(Error::input(format!(
                "KV cache was made for a {}-layer model; this one has {n} layers",
                c.layers.len()
            ))),
            Some(c) if c.len != start => {
                Err(Error::input(format!("KV cache holds {} positions but the input starts at {start}", c.len)))
            }
            None if start > 0 => Err(Error::input("positions after 0 need a KV cache holding the prefix")),
            _ => Ok(()),
        }
    }
}
