//! `scale`: multiply the selected units by `factor` (neuron dampening,
//! head scaling). Masked attention scores (−∞) stay −∞.

use scalpel_engine::{HookCtx, HookPoint, Tensor};
use scalpel_types::document::{Intervention, Op};
use scalpel_types::EditOp;

use super::{no_check, Columns, Compiled, HookOp, OpDef};
use crate::context::{check_finite, Cx};
use crate::Res;
use crate::select::scale_masked;

pub(crate) const DEF: OpDef = OpDef { name: "scale", fields: &["factor"], check: no_check, compile };

struct Scale(f32);

fn compile(cx: &mut Cx, i: usize, iv: &Intervention) -> Res<Compiled> {
    let Op::Scale { factor } = &iv.op else { unreachable!("registered for scale") };
    let target = cx.target(i, iv)?;
    check_finite(i, "factor", &[*factor])?;
    Ok(Compiled::Hook(target, Box::new(Scale(*factor))))
}

impl HookOp for Scale {
    fn apply(&mut self, x: &Tensor, m: &Tensor, _: &HookCtx) -> scalpel_engine::Result<Option<Tensor>> {
        Ok(Some(scale_masked(x, m, self.0 as f64)?))
    }
    fn on_scores(&self) -> bool {
        true
    }
    fn lower(&self, _: HookPoint, cols: &[Columns], _: usize) -> Result<Vec<Vec<EditOp>>, String> {
        Ok(cols.iter().map(|_| vec![EditOp::Scale(self.0)]).collect())
    }
}
