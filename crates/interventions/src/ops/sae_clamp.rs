//! `sae_clamp`: clamp latent `latent` of the SAE that reads the hook to
//! `value`, through the error term: x' = x + decode(f with f_latent = value)
//! − decode(f). The SAE is given beside the document (`SaeTable`).

use std::sync::Arc;

use candle_core::{DType, Device};
use scalpel_dictionaries::Sae;
use scalpel_engine::{HookCtx, Tensor};
use scalpel_types::document::{Intervention, Op};

use super::{no_check, Compiled, HookOp, OpDef};
use crate::context::{check_finite, Cx};
use crate::Res;

pub(crate) const DEF: OpDef = OpDef { name: "sae_clamp", fields: &["latent", "value"], check: no_check, compile };

struct SaeClamp {
    sae: Arc<Sae>,
    latent: usize,
    value: f32,
}

fn compile(cx: &mut Cx, i: usize, iv: &Intervention) -> Res<Compiled> {
    let Op::SaeClamp { latent, value } = &iv.op else { unreachable!("registered for sae_clamp") };
    let target = cx.target(i, iv)?;
    check_finite(i, "value", &[*value])?;
    let hook = &target.hook;
    let sae = target.points.first().and_then(|p| cx.saes.get(p)).ok_or(format!(
        "intervention {i}: op 'sae_clamp' needs the SAE for '{hook}' loaded (vectors::resolve; CLI: --sae DIR)"
    ))?;
    if let Some(out) = &sae.hook_name_out {
        return Err(format!(
            "intervention {i}: op 'sae_clamp' clamps an SAE through its error term; '{}' is a transcoder ({} → {out})",
            sae.name, sae.hook_name
        ));
    }
    let at = sae.point(cx.model).map_err(|e| format!("intervention {i}: {e}"))?;
    if target.points != [at] {
        return Err(format!("intervention {i}: field 'hook': the SAE reads '{}', not '{hook}'", at.name()));
    }
    if iv.heads.is_some() || iv.neurons.is_some() {
        return Err(format!("intervention {i}: op 'sae_clamp' selects positions only (no 'heads' or 'neurons')"));
    }
    if *latent >= sae.d_sae {
        return Err(format!("intervention {i}: field 'latent': {latent} is out of range (the SAE has {} latents)", sae.d_sae));
    }
    Ok(Compiled::Hook(target, Box::new(SaeClamp { sae: sae.clone(), latent: *latent, value: *value })))
}

impl HookOp for SaeClamp {
    fn apply(&mut self, x: &Tensor, m: &Tensor, _: &HookCtx) -> scalpel_engine::Result<Option<Tensor>> {
        let (rows, dims) = self.sae.rows_of(x)?;
        let delta = self.sae.clamp_delta(&rows, self.latent, self.value).map_err(scalpel_engine::Error::input)?;
        let delta = match self.sae.head_index {
            // The delta of one head, zeros for the others.
            Some(h) => {
                let (b, t, nh, dh) = (dims[0], dims[1], dims[2], dims[3]);
                let mut parts = Vec::new();
                if h > 0 {
                    parts.push(Tensor::zeros((b, t, h, dh), DType::F32, &Device::Cpu)?);
                }
                parts.push(delta.reshape((b, t, 1, dh))?);
                if h + 1 < nh {
                    parts.push(Tensor::zeros((b, t, nh - h - 1, dh), DType::F32, &Device::Cpu)?);
                }
                Tensor::cat(&parts, 2)?
            }
            None => delta.reshape(dims.as_slice())?,
        };
        Ok(Some(x.broadcast_add(&delta.broadcast_mul(m)?)?))
    }

    fn gpu_unsupported(&self) -> Option<&'static str> {
        Some("it encodes through an SAE")
    }
}
