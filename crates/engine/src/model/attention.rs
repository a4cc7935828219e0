//! Causal self-attention with grouped key/value heads, rotary embeddings
//! and a KV cache; hooks at q, k, v, the rotated q and k, the scores, the
//! pattern and z.

use candle_core::{Tensor, D};

use super::forward::Pass;
use super::linear::{Linear, Norm};
use super::{KvCache, Model};
use crate::error::{Error, Result};
use crate::hooks::{HookPoint, Site};

pub(crate) struct Attention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    /// Per-head RMSNorms of queries and keys before RoPE (Qwen3, Gemma 3).
    pub q_norm: Option<Norm>,
    pub k_norm: Option<Norm>,
}

fn repeat_kv(x: Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(x);
    }
    let (b, n_kv, t, d) = x.dims4()?;
    Ok(Tensor::cat(&vec![&x; n_rep], 2)?.reshape((b, n_kv * n_rep, t, d))?)
}

impl Model {
    /// Attention of layer `l` on the normalised residual `xn`: the output
    /// projection of z, `[b, t, d_model]` (not yet hooked as `hook_attn_out`).
    pub(super) fn attention(&self, l: usize, attn: &Attention, xn: Tensor, pass: &mut Pass, cache: Option<&KvCache>) -> Result<Tensor> {
        let cfg = &self.config;
        let (b, t) = (pass.batch, pass.t);
        let (nh, nkv, dh) = (cfg.n_heads, cfg.n_kv_heads, cfg.d_head);
        let p = |site| HookPoint::block(l, site);
        // q, k, v leave their projections as [b, t, head, d_head]; attention
        // runs on [b, head, t, d_head], the layout candle's kernels want.
        // The three products share xn: one job for the kernels' threads.
        let [q, k, v]: [Tensor; 3] = Linear::forward_shared(&[&attn.q, &attn.k, &attn.v], &xn, pass.differentiable)?
            .try_into()
            .expect("one result per projection");
        let heads = |x: Tensor, heads: usize| -> Result<Tensor> { x.reshape((b, t, heads, dh)).map_err(Error::from) };
        let mut q = pass.hook_heads(p(Site::Q), heads(q, nh)?, false, true)?;
        let mut k = pass.hook_heads(p(Site::K), heads(k, nkv)?, false, true)?;
        let v = pass.hook_heads(p(Site::V), heads(v, nkv)?, false, false)?;
        if let (Some(qn), Some(kn)) = (&attn.q_norm, &attn.k_norm) {
            q = pass.hook_heads(p(Site::QNorm), qn.forward(&q, pass.differentiable)?, false, true)?;
            k = pass.hook_heads(p(Site::KNorm), kn.forward(&k, pass.differentiable)?, false, true)?;
        }
        let mut q = q.transpose(1, 2)?.contiguous()?;
        let mut k = k.transpose(1, 2)?.contiguous()?;
        let v = v.transpose(1, 2)?.contiguous()?;
        let sliding = cfg.is_sliding(l);
        let tables = if sliding && pass.rope_local.is_some() { pass.rope_local.clone() } else { pass.rope.clone() };
        if let Some((cos, sin)) = tables {
            let rd = cfg.rotary_dim();
            let rope = |x: &Tensor| super::rotary::rope_partial(x, rd, &cos, &sin, self.qk_layout, pass.differentiable);
            let (rq, rk) = (rope(&q)?, rope(&k)?);
            q = pass.hook_heads(p(Site::RotQ), rq, true, true)?;
            k = pass.hook_heads(p(Site::RotK), rk, true, true)?;
        }
        let (k, v) = self.with_cached(l, k, v, pass, cache)?;
        let k = repeat_kv(k, nh / nkv)?;
        let v = repeat_kv(v, nh / nkv)?;
        let mut scores = match cfg.extra.attn_scale {
            Some(s) => (q.matmul(&k.t()?)? * s as f64)?,
            None => (q.matmul(&k.t()?)? / (dh as f64).sqrt())?,
        };
        if let Some(cap) = cfg.extra.attn_softcap {
            scores = ((scores / cap as f64)?.tanh()? * cap as f64)?;
        }
        let mask = if sliding && pass.mask_sliding.is_some() { &pass.mask_sliding } else { &pass.mask };
        if let Some(m) = mask {
            let m = m.broadcast_as(scores.shape())?;
            scores = m.where_cond(&Tensor::new(f32::NEG_INFINITY, scores.device())?.broadcast_as(scores.shape())?, &scores)?;
        }
        let scores = pass.hook(p(Site::AttnScores), scores)?;
        let pattern = if pass.differentiable {
            candle_nn::ops::softmax(&scores, D::Minus1)?
        } else {
            candle_nn::ops::softmax_last_dim(&scores)?
        };
        let pattern = pass.hook(p(Site::Pattern), pattern)?;
        let z = pattern.matmul(&v)?.transpose(1, 2)?.contiguous()?;
        let z = pass.hook(p(Site::Z), z)?;
        attn.o.forward(&z.reshape((b, t, nh * dh))?)
    }

    /// The keys and values of positions `0..start + t`: the cached prefix
    /// (shared by the batch, or one per item) and this pass's, which the
    /// pass records for the cache.
    fn with_cached(&self, l: usize, mut k: Tensor, mut v: Tensor, pass: &mut Pass, cache: Option<&KvCache>) -> Result<(Tensor, Tensor)> {
        let Some(c) = cache else { return Ok((k, v)) };
        let b = pass.batch;
        if pass.start > 0 && c.layers[l].is_none() {
            return Err(Error::input(format!("KV cache has no entry for layer {l} but the input starts at {}", pass.start)));
        }
        if let Some((pk, pv)) = &c.layers[l] {
            let widen = |x: &Tensor| -> Result<Tensor> {
                if x.dim(0)? == b {
                    return Ok(x.clone());
                }
                Ok(x.broadcast_as((b, x.dim(1)?, x.dim(2)?, x.dim(3)?))?.contiguous()?)
            };
            k = Tensor::cat(&[&widen(pk)?, &k], 2)?;
            v = Tensor::cat(&[&widen(pv)?, &v], 2)?;
        }
        pass.new_kv.push((l, k.clone(), v.clone()));
        Ok((k, v))
    }
}
