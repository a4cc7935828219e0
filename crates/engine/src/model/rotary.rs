//! Rotary position embeddings (RoPE) on dimension pairs `i, i + d/2`
//! (Hugging Face's `rotate_half` layout) or `2i, 2i + 1` (GGUF's stored
//! query/key order). The GPU model uploads the same tables, so both paths
//! rotate by the same f32 angles.

use candle_core::{Device, Tensor};

use crate::error::Result;
use crate::load::parts::QkLayout;

/// Inverse frequencies `1 / theta^(2i / d)` for `i < d / 2`.
pub fn inv_freq(d_head: usize, theta: f32) -> Vec<f32> {
    (0..d_head).step_by(2).map(|i| 1f32 / theta.powf(i as f32 / d_head as f32)).collect()
}

/// `cos` and `sin` of `p · f` for positions `start..start + t` and each
/// inverse frequency `f`, row-major `[t, d/2]`.
pub fn angles(inv_freq: &[f32], start: usize, t: usize) -> (Vec<f32>, Vec<f32>) {
    let mut cos = Vec::with_capacity(t * inv_freq.len());
    let mut sin = Vec::with_capacity(t * inv_freq.len());
    for p in start..start + t {
        for &f in inv_freq {
            let a = p as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    (cos, sin)
}

/// The tables as tensors, for `rope`.
pub(crate) fn tables(inv_freq: &[f32], start: usize, t: usize) -> Result<(Tensor, Tensor)> {
    let (cos, sin) = angles(inv_freq, start, t);
    let half = inv_freq.len();
    Ok((Tensor::from_vec(cos, (t, half), &Device::Cpu)?, Tensor::from_vec(sin, (t, half), &Device::Cpu)?))
}

/// Rotates `x` (`[b, head, t, d_head]`) on the pairs of `layout`;
/// `differentiable` picks the composed op that has a backward pass.
pub(crate) fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, layout: QkLayout, differentiable: bool) -> Result<Tensor> {
    use candle_nn::rotary_emb as r;
    Ok(match (layout, differentiable) {
        (QkLayout::Halves, false) => r::rope(x, cos, sin)?,
        (QkLayout::Halves, true) => r::rope_slow(x, cos, sin)?,
        (QkLayout::Interleaved, false) => r::rope_i(x, cos, sin)?,
        (QkLayout::Interleaved, true) => r::rope_i_slow(x, cos, sin)?,
    })
}

/// Rotates the first `rotary_dim` dimensions of each head of `x`
/// (`[b, head, t, d_head]`) and passes the rest through (GPT-NeoX's partial
/// rotary embedding; all of them when `rotary_dim == d_head`).
pub(crate) fn rope_partial(x: &Tensor, rotary_dim: usize, cos: &Tensor, sin: &Tensor, layout: QkLayout, differentiable: bool) -> Result<Tensor> {
    let d_head = x.dim(3)?;
    if rotary_dim == d_head {
        return rope(x, cos, sin, layout, differentiable);
    }
    let turned = rope(&x.narrow(3, 0, rotary_dim)?.contiguous()?, cos, sin, layout, differentiable)?;
    let rest = x.narrow(3, rotary_dim, d_head - rotary_dim)?;
    Ok(Tensor::cat(&[&turned, &rest], 3)?.contiguous()?)
}
