//! `patch`: replace the selected units by their value in a run on another
//! prompt of the same token length (interchange / resample ablation).
//! Generated positions have no source value and are left alone.

use std::collections::HashMap;
use std::sync::Arc;

use scalpel_engine::{HookCtx, HookPoint, Site, Tensor};
use scalpel_types::document::{Intervention, Op};
use scalpel_types::{EditOp, Rows};

use super::{no_check, Columns, Compiled, HookOp, OpDef};
use crate::context::Cx;
use crate::Res;
use crate::select::blend;

pub(crate) const DEF: OpDef = OpDef { name: "patch", fields: &["source"], check: no_check, compile };

/// The source run's value per point, `[1, t, ...]`.
struct Patch(HashMap<HookPoint, Tensor>);

fn compile(cx: &mut Cx, i: usize, iv: &Intervention) -> Res<Compiled> {
    let Op::Patch { source } = &iv.op else { unreachable!("registered for patch") };
    let target = cx.target(i, iv)?;
    let src = cx.source_run(i, source, &target.points)?;
    Ok(Compiled::Hook(target, Box::new(Patch(src))))
}

impl HookOp for Patch {
    fn apply(&mut self, x: &Tensor, m: &Tensor, ctx: &HookCtx) -> scalpel_engine::Result<Option<Tensor>> {
        let s = &self.0[&ctx.point];
        let pos_axis = ctx.point.site.pos_axis();
        let len = x.dim(pos_axis)?;
        if ctx.start_pos + len > s.dim(pos_axis)? {
            return Ok(None);
        }
        let s = s.narrow(pos_axis, ctx.start_pos, len)?;
        let s = if matches!(ctx.point.site, Site::AttnScores | Site::Pattern) { s.narrow(3, 0, x.dim(3)?)? } else { s };
        Ok(Some(blend(x, m, &s)?))
    }

    fn on_scores(&self) -> bool {
        true
    }

    fn lower(&self, point: HookPoint, cols: &[Columns], row_width: usize) -> Result<Vec<Vec<EditOp>>, String> {
        let t = &self.0[&point];
        let rows = t.dim(1).map_err(|e| e.to_string())?;
        let data = Arc::new(t.flatten_all().and_then(|t| t.to_vec1()).map_err(|e| e.to_string())?);
        Ok(cols.iter().map(|_| vec![EditOp::Patch(Rows { rows, width: row_width, data: data.clone() })]).collect())
    }
}
