//! `set_projection`: set the component along a direction to a `value`, cap
//! it at `cap`, or set it to its value in a run on `source` at the same hook
//! and position (1-D subspace patching).

use std::collections::HashMap;

use serde_json::{Map, Value};

use scalpel_engine::{HookCtx, HookPoint, Tensor};
use scalpel_types::document::{Intervention, Op};
use scalpel_types::EditOp;

use super::project_out::{projection, runs_of};
use super::{Columns, Compiled, HookOp, OpDef};
use crate::context::{check_finite, Cx};
use crate::Res;
use crate::vectors::sources::unit;

pub(crate) const DEF: OpDef =
    OpDef { name: "set_projection", fields: &["direction", "value", "cap", "source"], check, compile };

fn check(o: &Map<String, Value>, name: &str) -> Res<()> {
    let given: Vec<&str> = ["value", "cap", "source"].into_iter().filter(|f| o.contains_key(*f)).collect();
    if given.len() != 1 {
        let what = if given.is_empty() { "none".to_owned() } else { format!("'{}'", given.join("' and '")) };
        return Err(format!(
            "intervention {name} (op 'set_projection'): give exactly one of 'value' (a constant), 'cap' (an upper bound) or 'source' (a prompt whose run gives the value), not {what}"
        ));
    }
    if o.get("source").is_some_and(|src| !src.is_string()) {
        return Err(format!("intervention {name} (op 'set_projection'): field 'source' must be a prompt (a string)"));
    }
    Ok(())
}

enum Target {
    Value(f32),
    Cap(f32),
    /// The source run's projection ⟨h_src, û⟩ per point, `[1, t_src, (heads,) 1]`.
    Source(HashMap<HookPoint, Tensor>),
}

struct SetProjection {
    u: Tensor,
    target: Target,
}

fn compile(cx: &mut Cx, i: usize, iv: &Intervention) -> Res<Compiled> {
    let Op::SetProjection { direction, value, cap, source } = &iv.op else { unreachable!("registered for set_projection") };
    let item = cx.target(i, iv)?;
    let v = cx.vector(i, "direction", direction, &item.points)?;
    item.need_len("direction", &v)?;
    let u = unit(i, "direction", v)?;
    let target = match (value, cap, source) {
        (Some(x), None, None) => {
            check_finite(i, "value", &[*x])?;
            Target::Value(*x)
        }
        (None, Some(c), None) => {
            check_finite(i, "cap", &[*c])?;
            Target::Cap(*c)
        }
        (None, None, Some(s)) => {
            let mut projs = cx.source_run(i, s, &item.points)?;
            for t in projs.values_mut() {
                *t = projection(t, &u).map_err(|e| e.to_string())?;
            }
            Target::Source(projs)
        }
        _ => return Err(format!("intervention {i}: give exactly one of 'value', 'cap' or 'source'")),
    };
    Ok(Compiled::Hook(item, Box::new(SetProjection { u, target })))
}

impl HookOp for SetProjection {
    fn apply(&mut self, x: &Tensor, m: &Tensor, ctx: &HookCtx) -> scalpel_engine::Result<Option<Tensor>> {
        let proj = projection(x, &self.u)?;
        let target = match &self.target {
            Target::Value(c) => proj.ones_like()?.affine(*c as f64, 0.0)?,
            Target::Cap(c) => proj.clamp(f32::NEG_INFINITY, *c)?,
            Target::Source(src) => {
                // Positions past the source's length (generated tokens)
                // have no source value: their projection is kept.
                let s = &src[&ctx.point];
                let pos_axis = ctx.point.site.pos_axis();
                let len = x.dim(pos_axis)?;
                let have = s.dim(pos_axis)?.saturating_sub(ctx.start_pos).min(len);
                if have == 0 {
                    return Ok(None);
                }
                let s = s.narrow(pos_axis, ctx.start_pos, have)?;
                if have < len {
                    Tensor::cat(&[&s, &proj.narrow(pos_axis, have, len - have)?], pos_axis)?
                } else {
                    s
                }
            }
        };
        Ok(Some(x.broadcast_add(&target.broadcast_sub(&proj)?.broadcast_mul(&self.u)?.broadcast_mul(m)?)?))
    }

    fn directional(&self) -> bool {
        true
    }

    fn gpu_unsupported(&self) -> Option<&'static str> {
        match self.target {
            Target::Value(_) => None,
            Target::Cap(_) => Some("a cap depends on the value"),
            Target::Source(_) => Some("with 'source' the target differs per position"),
        }
    }

    fn lower(&self, _: HookPoint, cols: &[Columns], _: usize) -> Result<Vec<Vec<EditOp>>, String> {
        let Target::Value(c) = self.target else { return Err(self.gpu_unsupported().unwrap_or_default().into()) };
        // x + (c − x·û) û = (x − (x·û) û) + c û.
        Ok(runs_of(&self.u, cols)?.into_iter().map(|u| vec![EditOp::ProjectOut(u.clone()), EditOp::Add { v: u, alpha: c }]).collect())
    }
}
