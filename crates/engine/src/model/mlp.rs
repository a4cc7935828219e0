//! The MLP: `down(act(gate(x)) * up(x))` when gated (llama), else
//! `down(act(up(x)))` (GPT-2); hooks at the pre-activations and the
//! activation.

use super::forward::Pass;
use super::linear::Linear;
use super::Model;
use crate::config::Activation;
use crate::error::Result;
use crate::hooks::{HookPoint, Site};
use candle_core::Tensor;

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
                (self.activate(&pre)? * lin)?
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
