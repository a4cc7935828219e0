//! The MLP: `down(act(gate(x)) * up(x))` when gated (llama), else
//! `down(act(up(x)))` (GPT-2); hooks at the pre-activations and the
//! activation.

use super::forward::Pass;
use super::linear::Linear;
use super::Model;
use crate::config::Activation;
use crate::error::Result;
use crate::hooks::{HookPoint, Site};
use candle_core::{DType, Tensor};

pub(crate) struct Mlp {
    pub gate: Option<Linear>,
    pub up: Linear,
    pub down: Linear,
}

impl Model {
    /// The MLP of layer `l` on the normalised residual `xn`: `[b, t,
    /// d_model]` (not yet hooked as `hook_mlp_out`).
    pub(super) fn mlp(&self, l: usize, mlp: &Mlp, xn: Tensor, pass: &mut Pass) -> Result<Tensor> {
        let p = |site| HookPoint::block(l, site);
        let post = match &mlp.gate {
            Some(gate) => {
                // Both products share xn: one job for the kernels' threads.
                let [pre, lin]: [Tensor; 2] =
                    Linear::forward_shared(&[gate, &mlp.up], &xn, pass.differentiable)?.try_into().expect("one result per projection");
                let pre = pass.hook(p(Site::MlpPre), pre)?;
                let lin = pass.hook(p(Site::MlpPreLinear), lin)?;
                match self.config.act {
                    Activation::Silu if !pass.differentiable => silu_mul(&pre, &lin)?,
                    _ => (self.activate(&pre)? * lin)?,
                }
            }
            None => {
                let pre = pass.hook(p(Site::MlpPre), mlp.up.forward(&xn)?)?;
                self.activate(&pre)?
            }
        };
        let post = pass.hook(p(Site::MlpPost), post)?;
        mlp.down.forward(&post)
    }

    fn activate(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self.config.act {
            Activation::Silu => candle_nn::ops::silu(x)?,
            Activation::GeluTanh => x.gelu()?,
            Activation::Gelu => x.gelu_erf()?,
        })
    }
}

/// Elements per piece of [`silu_mul`] at least: 512 take about 7 µs in
/// wasm on the 2-core VM (`exp` is a libm call), several times what handing
/// a piece out costs. A decode step's 1536 go out as one piece per thread
/// (how they are split never changes the bits).
const SILU_MIN_PIECE: usize = 512;

/// Elements from which [`silu_mul`] cuts about four pieces per thread
/// (below it, one per thread).
const SILU_FULL_PIECE: usize = 1 << 13;

/// `silu(pre) * lin` with candle's formulas, element by element
/// (`v / (1 + exp(-v))`, rounded, times `lin`; `scalpel_kernels::silu_mul`,
/// whose `exp` runs four lanes at a time in wasm), in pieces over the
/// kernels' threads (`map_pieces`). In wasm candle runs element-wise ops on
/// one thread, and this `exp` was the largest part of a patching sweep's
/// work outside the products (a helper thread waited through it). The same
/// operations per element, so the same bits as `silu(pre) * lin` on any
/// number of threads. Forward only: a differentiable pass keeps candle's ops.
fn silu_mul(pre: &Tensor, lin: &Tensor) -> Result<Tensor> {
    if pre.dtype() != DType::F32 || pre.shape() != lin.shape() {
        return Ok((candle_nn::ops::silu(pre)? * lin)?);
    }
    let (x, y) = (pre.flatten_all()?.to_vec1::<f32>()?, lin.flatten_all()?.to_vec1::<f32>()?);
    let threads = crate::kernel_threads();
    let per = x.len().div_ceil(4 * threads).max(x.len().div_ceil(threads).min(SILU_FULL_PIECE)).max(SILU_MIN_PIECE);
    let parts = crate::map_pieces(x.len().div_ceil(per), |p| {
        let r = p * per..((p + 1) * per).min(x.len());
        scalpel_kernels::silu_mul(&x[r.clone()], &y[r])
    });
    Ok(Tensor::from_vec(parts.concat(), pre.shape(), pre.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// `silu_mul` is candle's `silu(pre) * lin` bit for bit: many pieces
    /// (100,003 elements, an uneven last piece), values across exp's range
    /// (large negative, zero, large positive), and a non-contiguous input.
    #[test]
    fn silu_mul_is_candles_silu_times_lin_bit_for_bit() {
        let n = 100_003;
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919 % 20011) as f32 - 10005.0) / 97.0).collect();
        let y: Vec<f32> = (0..n).map(|i| ((i * 104729 % 3001) as f32 - 1500.0) / 1500.0).collect();
        let (pre, lin) = (Tensor::from_vec(x, n, &Device::Cpu).unwrap(), Tensor::from_vec(y, n, &Device::Cpu).unwrap());
        let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
        let want = (candle_nn::ops::silu(&pre).unwrap() * &lin).unwrap();
        assert_eq!(bits(&silu_mul(&pre, &lin).unwrap()), bits(&want));
        let (pre, lin) = (pre.narrow(0, 0, 100_000).unwrap().reshape((400, 250)).unwrap().t().unwrap(), lin.narrow(0, 3, 100_000).unwrap().reshape((400, 250)).unwrap().t().unwrap());
        let want = (candle_nn::ops::silu(&pre).unwrap() * &lin).unwrap();
        let got = silu_mul(&pre, &lin).unwrap();
        assert_eq!(got.dims(), &[250, 400]);
        assert_eq!(bits(&got), bits(&want));
    }
}
