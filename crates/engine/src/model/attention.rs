//! Causal self-attention with grouped key/value heads, rotary embeddings
//! and a KV cache; hooks at q, k, v, the rotated q and k, the scores, the
//! pattern and z.

use candle_core::{Device, Tensor, D};

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

/// `[b, nh, t, x]` as `[b, nkv, rep·t, x]` (`rep = nh / nkv`), the same
/// memory: query head `h` reads key/value head `h / rep`, so a group's
/// pattern rows share one product with their value head, which is never
/// copied `rep` times (the same bits: the test below, and in wasm the wasm
/// bench's `grouped_values_self_test`).
fn grouped(x: &Tensor, nkv: usize) -> Result<Tensor> {
    let (b, nh, t, d) = x.dims4()?;
    Ok(x.reshape((b, nkv, nh / nkv * t, d))?)
}

/// [`grouped`]'s inverse: `[b, nkv, rep·t, x]` as `[b, nh, t, x]`.
fn ungrouped(x: &Tensor, nh: usize) -> Result<Tensor> {
    let (b, nkv, rt, d) = x.dims4()?;
    Ok(x.reshape((b, nh, rt * nkv / nh, d))?)
}

/// Attention at one new position of one sequence (decode) when nothing
/// reads the scores or the pattern: `z`, `[1, 1, nh, dh]`, computed per group
/// of query heads sharing a key/value head, the groups in pieces over the
/// kernels' threads. `None` when the inputs are not f32 on the CPU (the
/// caller then takes candle's ops).
///
/// The operations are those of the candle path in [`Model::attention`], on
/// slices of the same tensors: each head's scores are the product candle's
/// matmul makes of it (the `gemm` crate with candle's arguments: the key
/// head as the transposed right-hand side, which candle reads from the
/// repeated copy), scaled as candle's `affine` does, softmaxed with
/// `softmax_last_dim`'s formula and reductions, and a group's pattern rows
/// times its value head as one product, as [`grouped`] gives it. So the
/// bits are the same (tests below; in wasm, the wasm bench's check), while
/// no key head is copied per query head (3.2% of a quantized decode step at
/// 64 + 64 tokens, more as the cache grows), candle's small ops and their
/// allocations are skipped, and the threads share attention.
fn attend_one_position(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Option<Tensor>> {
    use candle_core::cpu::kernels::VecOps;
    use candle_core::{CpuStorage, Storage};
    let ((_, nh, _, dh), (_, nkv, tt, _)) = (q.dims4()?, k.dims4()?);
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (Storage::Cpu(CpuStorage::F32(qd)), Storage::Cpu(CpuStorage::F32(kd)), Storage::Cpu(CpuStorage::F32(vd))) = (&*qs, &*ks, &*vs)
    else {
        return Ok(None);
    };
    let (qd, kd, vd) = (&qd[ql.start_offset()..], &kd[kl.start_offset()..], &vd[vl.start_offset()..]);
    let rep = nh / nkv;
    // candle's rule for its matmul: gemm on rayon's threads natively when
    // there are several, on the caller's in wasm.
    let parallelism = match candle_core::utils::get_num_threads() {
        n if n > 1 => gemm::Parallelism::Rayon(n),
        _ => gemm::Parallelism::None,
    };
    // `scores * mul + 0`, as candle's `affine` (what `/ sqrt(dh)` and `* s` are).
    let (mul, add) = (scale as f32, 0f32);
    let groups = crate::map_pieces(nkv, |g| {
        let (kg, vg) = (&kd[g * tt * dh..(g + 1) * tt * dh], &vd[g * tt * dh..(g + 1) * tt * dh]);
        let mut pattern = vec![0f32; rep * tt];
        for (r, row) in pattern.chunks_exact_mut(tt).enumerate() {
            let qh = &qd[(g * rep + r) * dh..(g * rep + r + 1) * dh];
            // SAFETY: row is 1 × tt (row stride tt, column stride 1); qh is
            // 1 × dh (stride dh, 1); the key head read as its transpose,
            // dh × tt (row stride 1, column stride dh), within kg's tt·dh.
            unsafe {
                gemm::gemm(1, tt, dh, row.as_mut_ptr(), 1, tt as isize, false, qh.as_ptr(), 1, dh as isize, kg.as_ptr(), dh as isize, 1, 0f32, 1f32, false, false, false, parallelism);
            }
            for x in row.iter_mut() {
                *x = *x * mul + add;
            }
            let mut max = f32::NEG_INFINITY;
            // SAFETY: row holds tt ≥ 1 numbers.
            unsafe { f32::vec_reduce_max(row.as_ptr(), &mut max, tt) };
            // `(x - max).exp()`, four lanes at a time in wasm (libm's bits).
            scalpel_kernels::exp_shifted(row, max);
            let mut sum = 0f32;
            // SAFETY: as above.
            unsafe { f32::vec_reduce_sum(row.as_ptr(), &mut sum, tt) };
            for x in row.iter_mut() {
                *x /= sum;
            }
        }
        let mut z = vec![0f32; rep * dh];
        // SAFETY: z is rep × dh (dh, 1); pattern rep × tt (tt, 1); vg tt × dh (dh, 1).
        unsafe {
            gemm::gemm(rep, dh, tt, z.as_mut_ptr(), 1, dh as isize, false, pattern.as_ptr(), 1, tt as isize, vg.as_ptr(), 1, dh as isize, 0f32, 1f32, false, false, false, parallelism);
        }
        z
    });
    Ok(Some(Tensor::from_vec(groups.concat(), (1, 1, nh, dh), &Device::Cpu)?))
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
        let mask = if sliding && pass.mask_sliding.is_some() { &pass.mask_sliding } else { &pass.mask };
        // Scores are scaled by `1 / sqrt(d_head)` unless the config says otherwise.
        let scale = cfg.extra.attn_scale.map_or(1.0 / (dh as f64).sqrt(), |s| s as f64);
        // Decoding one position with nothing reading the scores or the
        // pattern: slices of the cache instead of candle's ops, the same bits.
        if b == 1 && t == 1 && !pass.differentiable && mask.is_none() && cfg.extra.attn_softcap.is_none()
            && !pass.wants(p(Site::AttnScores)) && !pass.wants(p(Site::Pattern))
        {
            if let Some(z) = attend_one_position(&q, &k, &v, scale)? {
                let z = pass.hook(p(Site::Z), z)?;
                return attn.o.forward(&z.reshape((b, t, nh * dh))?);
            }
        }
        // Keys repeated per query head, as candle-transformers' llamas do:
        // grouped, candle's matmul would round the scores differently (see
        // the test below).
        let k = repeat_kv(k, nh / nkv)?;
        // `* scale` is candle's `affine(scale, 0)`, as `/ sqrt(d_head)` was.
        let mut scores = (q.matmul(&k.t()?)? * scale)?;
        if let Some(cap) = cfg.extra.attn_softcap {
            scores = ((scores / cap as f64)?.tanh()? * cap as f64)?;
        }
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
        let z = ungrouped(&grouped(&pattern, nkv)?.matmul(&v)?, nh)?.transpose(1, 2)?.contiguous()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Decode's attention over slices (`attend_one_position`) gives the
    /// bits of the candle path in `Model::attention` (keys repeated, scores
    /// scaled with `/ sqrt(dh)` or `* s`, `softmax_last_dim`, grouped
    /// values): SmolLM2's 9 query and 3 key/value heads, 4 and 4 (no
    /// grouping), 8 and 1; caches of 1 to 2049 positions. (One product per
    /// query head for the values instead of one per group differed here at
    /// 777 positions: the group's product is kept.)
    #[test]
    fn one_position_gives_the_bits_of_candles_ops() {
        let mut case = 0u32;
        for (nh, nkv, dh) in [(9usize, 3usize, 64usize), (4, 4, 32), (8, 1, 16)] {
            for tt in (1..300).step_by(13).chain([64, 86, 87, 128, 129, 511, 512, 777, 1024, 1500, 2049]) {
                for s in [None, Some(0.17f32)] {
                    case += 1;
                    let q = Tensor::randn(0f32, 1.5, (1, nh, 1, dh), &Device::Cpu).unwrap();
                    let k = Tensor::randn(0f32, 1.5, (1, nkv, tt, dh), &Device::Cpu).unwrap();
                    let v = Tensor::randn(0f32, 1., (1, nkv, tt, dh), &Device::Cpu).unwrap();
                    let scores = match s {
                        Some(s) => (q.matmul(&repeat_kv(k.clone(), nh / nkv).unwrap().t().unwrap()).unwrap() * s as f64).unwrap(),
                        None => (q.matmul(&repeat_kv(k.clone(), nh / nkv).unwrap().t().unwrap()).unwrap() / (dh as f64).sqrt()).unwrap(),
                    };
                    let pattern = candle_nn::ops::softmax_last_dim(&scores).unwrap();
                    let want = ungrouped(&grouped(&pattern, nkv).unwrap().matmul(&v).unwrap(), nh).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
                    let scale = s.map_or(1.0 / (dh as f64).sqrt(), |s| s as f64);
                    let got = attend_one_position(&q, &k, &v, scale).unwrap().expect("f32 on the CPU");
                    assert_eq!(got.dims(), want.dims());
                    let bits = |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{nh} heads over {nkv}, d_head {dh}, {tt} positions, scale {s:?} (case {case})");
                }
            }
        }
    }

    /// The pattern times grouped values equals the pattern times values
    /// repeated per query head, bit for bit (prefill and decode shapes,
    /// caches up to 300 positions). The scores are not grouped: there
    /// candle's matmul rounds differently from about 86 cached positions on
    /// in decode and at 15-16 tokens in prefill, and an int8 path turns such
    /// differences into quantization flips (candle-transformers' quantized
    /// llama, `crates/cli/tests/candle_quantized.rs`, moved by 0.79).
    #[test]
    fn grouped_values_give_the_bits_of_repeated_values() {
        let (nkv, rep, dh) = (3, 3, 64);
        for t in [1usize, 2, 3, 5, 15, 16, 17, 35] {
            for cached in (0..300).step_by(23) {
                let tt = t + cached;
                let pattern = Tensor::randn(0f32, 1., (1, nkv * rep, t, tt), &Device::Cpu).unwrap();
                let v = Tensor::randn(0f32, 1., (1, nkv, tt, dh), &Device::Cpu).unwrap();
                let repeated = Tensor::cat(&vec![&v; rep], 2).unwrap().reshape((1, nkv * rep, tt, dh)).unwrap();
                let want = pattern.matmul(&repeated).unwrap();
                let got = ungrouped(&grouped(&pattern, nkv).unwrap().matmul(&v).unwrap(), nkv * rep).unwrap();
                let bits = |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "t = {t}, {tt} positions");
            }
        }
    }
}
