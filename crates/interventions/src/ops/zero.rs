//! `zero`: zero-ablation of the selected units (heads, neurons, positions).

use scalpel_engine::{HookCtx, HookPoint, Tensor};
use scalpel_types::document::Intervention;
use scalpel_types::EditOp;

use super::{no_check, Columns, Compiled, HookOp, OpDef};
use crate::context::Cx;
use crate::Res;
use crate::select::scale_masked;

pub(crate) const DEF: OpDef = OpDef { name: "zero", fields: &[], check: no_check, compile };

struct Zero;

fn compile(cx: &mut Cx, i: usize, iv: &Intervention) -> Res<Compiled> {
    Ok(Compiled::Hook(cx.target(i, iv)?, Box::new(Zero)))
}

impl HookOp for Zero {
    fn apply(&mut self, x: &Tensor, m: &Tensor, _: &HookCtx) -> scalpel_engine::Result<Option<Tensor>> {
        Ok(Some(scale_masked(x, m, 0.0)?))
    }
    fn on_scores(&self) -> bool {
        true
    }
    fn lower(&self, _: HookPoint, cols: &[Columns], _: usize) -> Result<Vec<Vec<EditOp>>, String> {
        Ok(cols.iter().map(|_| vec![EditOp::Zero]).collect())
    }
}
