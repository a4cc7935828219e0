//! `add`: h += scale · v (steering; ActAdd, CAA, RepE, control vectors). On
//! per-head hooks the vector is one `d_head` block for the selected heads, or
//! one block per head.

use candle_core::Device;
use scalpel_engine::{HookCtx, HookPoint, Tensor};
use scalpel_types::document::{Intervention, Op};
use scalpel_types::EditOp;

use super::{no_check, Columns, Compiled, HookOp, OpDef};
use crate::context::{check_finite, Cx};
use crate::Res;

pub(crate) const DEF: OpDef = OpDef { name: "add", fields: &["vector", "scale"], check: no_check, compile };

struct Add {
    /// `[width]`, or `[heads, width]` for one block per head.
    v: Tensor,
}

fn compile(cx: &mut Cx, i: usize, iv: &Intervention) -> Res<Compiled> {
    let Op::Add { vector, scale } = &iv.op else { unreachable!("registered for add") };
    let target = cx.target(i, iv)?;
    check_finite(i, "scale", &[*scale])?;
    let v = cx.vector(i, "vector", vector, &target.points)?;
    let v: Vec<f32> = v.iter().map(|x| x * scale).collect();
    let t = match (target.shape.width, target.shape.heads) {
        (Some(d), Some(h)) if v.len() == d * h => Tensor::from_vec(v, (h, d), &Device::Cpu),
        _ => {
            target.need_len("vector", &v)?;
            Tensor::new(v, &Device::Cpu)
        }
    };
    Ok(Compiled::Hook(target, Box::new(Add { v: t.map_err(|e| e.to_string())? })))
}

impl HookOp for Add {
    fn apply(&mut self, x: &Tensor, m: &Tensor, _: &HookCtx) -> scalpel_engine::Result<Option<Tensor>> {
        Ok(Some(x.broadcast_add(&m.broadcast_mul(&self.v)?)?))
    }

    fn lower(&self, _: HookPoint, cols: &[Columns], _: usize) -> Result<Vec<Vec<EditOp>>, String> {
        let per_head = self.v.rank() == 2;
        let v: Vec<f32> = self.v.flatten_all().and_then(|t| t.to_vec1()).map_err(|e| e.to_string())?;
        let unit = if per_head { self.v.dims()[1] } else { 0 };
        Ok(cols
            .iter()
            .map(|c| {
                let base = c.head * unit;
                vec![EditOp::Add { v: v[base + c.run.start..base + c.run.end].to_vec(), alpha: 1.0 }]
            })
            .collect())
    }
}
