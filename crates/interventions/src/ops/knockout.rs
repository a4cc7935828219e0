//! `knockout`: block attention from query `positions` to `keys` (−∞ before
//! the softmax on `hook_attn_scores`, 0 after it on `hook_pattern`).

use candle_core::Device;
use scalpel_engine::{HookCtx, Site, Tensor};
use scalpel_types::document::{Intervention, Op};

use super::{no_check, Compiled, HookOp, OpDef};
use crate::context::Cx;
use crate::Res;
use crate::select::{resolve_sel, Sel};

pub(crate) const DEF: OpDef = OpDef { name: "knockout", fields: &["keys"], check: no_check, compile };

/// The key positions blocked.
struct Knockout(Sel);

fn compile(cx: &mut Cx, i: usize, iv: &Intervention) -> Res<Compiled> {
    let Op::Knockout { keys } = &iv.op else { unreachable!("registered for knockout") };
    let target = cx.target(i, iv)?;
    if !target.is_scores() {
        return Err(format!(
            "intervention {i}: op 'knockout' needs an attention hook ('blocks.L.attn.hook_attn_scores' or 'hook_pattern'), not '{}'",
            target.hook
        ));
    }
    let keys = resolve_sel(i, "keys", keys, cx.prompt_len, cx.model.config.n_ctx)?;
    Ok(Compiled::Hook(target, Box::new(Knockout(keys))))
}

impl HookOp for Knockout {
    fn apply(&mut self, x: &Tensor, m: &Tensor, ctx: &HookCtx) -> scalpel_engine::Result<Option<Tensor>> {
        let shape = x.dims();
        let kv_len = shape[3];
        let key_on: Vec<f32> = (0..kv_len).map(|k| self.0.contains(k) as u8 as f32).collect();
        let km = Tensor::from_vec(key_on, (1, 1, 1, kv_len), &Device::Cpu)?;
        let full = m.broadcast_mul(&km)?.broadcast_as(shape)?;
        let fill = if ctx.point.site == Site::AttnScores { f32::NEG_INFINITY } else { 0.0 };
        let fill = Tensor::full(fill, shape, &Device::Cpu)?;
        Ok(Some(full.ne(0f32)?.where_cond(&fill, x)?))
    }
    fn on_scores(&self) -> bool {
        true
    }
    fn gpu_unsupported(&self) -> Option<&'static str> {
        Some("attention scores are not materialised on the GPU")
    }
}
