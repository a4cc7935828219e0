//! `project_out`: remove the component along a direction (directional
//! ablation, e.g. refusal-direction removal).

use scalpel_engine::{HookCtx, HookPoint, Tensor};
use scalpel_types::document::{Intervention, Op};
use scalpel_types::EditOp;

use super::{no_check, Columns, Compiled, HookOp, OpDef};
use crate::context::Cx;
use crate::Res;
use crate::vectors::sources::unit;

pub(crate) const DEF: OpDef = OpDef { name: "project_out", fields: &["direction"], check: no_check, compile };

/// The unit direction û.
struct ProjectOut(Tensor);

fn compile(cx: &mut Cx, i: usize, iv: &Intervention) -> Res<Compiled> {
    let Op::ProjectOut { direction } = &iv.op else { unreachable!("registered for project_out") };
    let target = cx.target(i, iv)?;
    let v = cx.vector(i, "direction", direction, &target.points)?;
    target.need_len("direction", &v)?;
    Ok(Compiled::Hook(target, Box::new(ProjectOut(unit(i, "direction", v)?))))
}

/// x·û per row, keeping the last axis.
pub(crate) fn projection(x: &Tensor, u: &Tensor) -> candle_core::Result<Tensor> {
    x.broadcast_mul(u)?.sum_keepdim(x.rank() - 1)
}

/// The direction's values for each column run.
pub(crate) fn runs_of(u: &Tensor, cols: &[Columns]) -> Result<Vec<Vec<f32>>, String> {
    let u: Vec<f32> = u.to_vec1().map_err(|e| e.to_string())?;
    Ok(cols.iter().map(|c| u[c.run.clone()].to_vec()).collect())
}

impl HookOp for ProjectOut {
    fn apply(&mut self, x: &Tensor, m: &Tensor, _: &HookCtx) -> scalpel_engine::Result<Option<Tensor>> {
        let proj = projection(x, &self.0)?;
        Ok(Some(x.broadcast_sub(&proj.broadcast_mul(&self.0)?.broadcast_mul(m)?)?))
    }
    fn directional(&self) -> bool {
        true
    }
    fn lower(&self, _: HookPoint, cols: &[Columns], _: usize) -> Result<Vec<Vec<EditOp>>, String> {
        Ok(runs_of(&self.0, cols)?.into_iter().map(|u| vec![EditOp::ProjectOut(u)]).collect())
    }
}
